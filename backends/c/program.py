"""The C backend's program: every kernel compiled into one shared library with its host
program (codegen/c_host.py), called once per run over one arena.

``CProgram(graph, plan)`` lowers each kernel node (ir/kernel_lower.py), generates a C function
for those the generators cover (point-wise and reduction kernels: codegen/c.py; matmul and
convolution templates: codegen/c_templates.py), and leaves the rest (op and extern kernels,
patched stages, anything a generator refuses, with its reason in ``fallbacks``) to a Python
callback that runs the node on the reference backend inside the same arena. Its ``run(inputs,
env)`` matches ``ReferenceProgram.run``. ``generate_program`` does the generating; what it
returns is what the whole-program cache keeps (program_cache.py), and ``CProgram`` takes it
back from there without generating anything.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import sympy
import torch

from effc.backends.reference.arena import ArenaProgram
from effc.backends.reference.program import _describe
from effc.backends.symeval import SymbolicAttrs
from effc.codegen.c_abi import PRELUDE, symbol_order
from effc.codegen.c_host import HostProgram, direct_outputs, host_source
from effc.errors import CompileError
from effc.ir import Graph, Op
from effc.ir.kernel import Kernel, LoweringError

from .build import build

CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)


def inplace_buffers(node: Any, kernel: Kernel, plan: Any) -> list[str]:
    """Names of ``kernel``'s buffers that the memory plan puts on the same bytes as another of
    its buffers (an in-place update): they must not be ``restrict``."""
    where = [plan.buffer_of(v) for v in list(node.inputs) + list(node.outputs)]
    names = [b.name for b in list(kernel.inputs) + list(kernel.outputs)]
    shared = [n for n, w in zip(names, where)
              if w is not None and sum(1 for x in where if x is not None and x.index == w.index) > 1]
    return shared


@dataclass(frozen=True)
class Generated:
    """What generating the C of a graph produces, besides the weights it packed: all that
    ``CProgram`` needs to load the program again (the whole-program cache stores it,
    [Note: C program cache] in program_cache.py)."""
    symbols: tuple[sympy.Symbol, ...]     # the ``sizes`` array's order
    kernel_sources: tuple[str, ...]       # one C function (with its helpers) per generated kernel
    host: HostProgram
    fallbacks: dict[str, str] = field(default_factory=dict)   # kernels run by the Python callback: why

    @property
    def source(self) -> str:
        """The whole translation unit the C compiler builds."""
        return PRELUDE + "\n" + "\n\n".join(self.kernel_sources) + "\n\n" + self.host.source


def generate_program(graph: Graph, plan: Any) -> tuple[Generated, dict[int, Kernel], dict[str, torch.Tensor]]:
    """Lower every kernel node of ``graph``, generate C for those the generators cover, pack
    their constant operands and write the host program: the generated program, its kernels
    (by node index) and the repacked weights (by host weight name)."""
    # imported here: a program loaded from the cache generates nothing, and a hit's time counts
    from effc.codegen.c import generate
    from effc.codegen.c_templates import prepack, program_scratch
    from effc.ir.kernel_lower import lower
    symbols = symbol_order(set(graph.symbols()) | set(plan.symbols))
    kernels: dict[int, Kernel] = {}
    sources: list[str] = []
    fallbacks: dict[str, str] = {}
    packed: dict[str, torch.Tensor] = {}
    packed_at: dict[tuple[int, int], str] = {}
    constants_of: dict[str, frozenset[int]] = {}
    for i, node in enumerate(graph.nodes):
        if node.op is not Op.KERNEL or node.attrs["kind"] == "view":
            if node.op not in (Op.CONSTANT, Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE, Op.KERNEL):
                fallbacks[f"%{i} {node.op}"] = "not in a kernel (fusion disabled?)"
            continue
        consts = frozenset(j for j, v in enumerate(node.inputs)
                           if v.node is not None and v.node.op is Op.CONSTANT)
        try:
            k = lower(node)
            src = generate(k, symbols, inplace_buffers(node, k, plan), constant_inputs=consts)
            assert src is not None, "view kernels are aliased, not generated"
            sources.append(src)
        except LoweringError as e:
            ops = ", ".join(n.op.value for n in node.attrs["body"].nodes)
            fallbacks[f"{node.attrs['name']} {node.attrs['kind']}[{ops}]"] = str(e)
            continue
        kernels[i] = k
        constants_of[k.name] = consts
        # constant operands the kernel reads in a layout of its own, made once here
        for j, pack in prepack(k, consts).items():
            name = f"{node.inputs[j].node.attrs['name']}@{k.name}"
            packed[name] = pack(graph.constant(node.inputs[j].node))
            packed_at[(i, j)] = name
    host = host_source(graph, plan, kernels, symbols, program_scratch(kernels.values(), constants_of), packed_at)
    return Generated(tuple(symbols), tuple(sources), host, fallbacks), kernels, packed


class CProgram(ArenaProgram):
    """``ArenaProgram``'s slots and arena, with the steps run by generated C.

    ``CProgram(graph, plan)`` generates the program; ``CProgram(graph, plan, name, generated,
    packed)`` loads one generated before (from the whole-program cache: then ``kernels`` is
    empty, the kernel IR having been dropped with the rest of the compile)."""

    def __init__(self, graph: Graph, plan: Any, name: str = "model", generated: Generated | None = None,
                 packed: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(graph, plan)
        kernels: dict[int, Kernel] = {}
        if generated is None:
            generated, kernels, packed = generate_program(graph, plan)
        self.generated = generated
        self.symbols = list(generated.symbols)
        self.fallbacks: dict[str, str] = dict(generated.fallbacks)
        self.packed: dict[str, torch.Tensor] = dict(packed or {})   # repacked weights, by host weight name
        self.kernels, self.kernel_sources = kernels, list(generated.kernel_sources)
        self.host = generated.host
        self.weight_names = self.host.weight_names
        # the kernels' scratch after the plan's buffers [Note: C template scratch]
        self.scratch_bytes = self.host.scratch_bytes
        self._scratch_at: dict[tuple[int, ...], int] = {}
        self.source = generated.source
        self.library = build(self.source, name)
        self._run = self.library.effc_run
        self._run.restype = ctypes.c_int
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_void_p, CALLBACK, ctypes.c_void_p]
        self._step_of = {id(s.node): k for k, s in enumerate(self.steps)}
        self._index = {i: self._step_of[id(n)] for i, n in enumerate(graph.nodes) if id(n) in self._step_of}
        self._weights = [(graph.constants[n] if n in graph.constants else self.packed[n]).contiguous()
                         for n in self.weight_names]
        self._weight_ptrs = (ctypes.c_void_p * max(1, len(self._weights)))(
            *[w.data_ptr() for w in self._weights])
        self._direct = direct_outputs(graph, plan)      # arena buffer -> graph output it is
        self._out_shapes = [SymbolicAttrs(v.type.shape) for v in graph.outputs]
        self._arena: torch.Tensor | None = None         # reused across calls: no page faults
        self._lock = threading.Lock()

    def run(self, inputs: Sequence[torch.Tensor], env: dict[sympy.Symbol, int]) -> list[torch.Tensor]:
        inputs = [t.contiguous() for t in inputs]
        for t, v in zip(inputs, self.graph.inputs):
            if t.dtype != v.type.dtype.to_torch():
                raise CompileError(f"input {v.name} is {t.dtype}; the program was compiled for {v.type.dtype}")
        with self._lock:   # one arena per program: calls from several threads take turns
            return self._run_locked(inputs, env)

    def _arena_of(self, total: int) -> torch.Tensor:
        if self._arena is None or self._arena.numel() < total:
            raw = torch.empty(total + 64, dtype=torch.uint8)
            shift = (-raw.data_ptr()) % 64          # 64-byte alignment for vector loads
            self._arena = raw[shift:shift + total]
        return self._arena

    def _run_locked(self, inputs: Sequence[torch.Tensor], env: dict[sympy.Symbol, int]) -> list[torch.Tensor]:
        layout = self.plan.evaluate(env)
        offsets = layout["offsets"]
        arena = self._arena_of(max(64, -(-layout["arena"] // 64) * 64 + self._scratch(env)))
        outs = [torch.empty(shape(env), dtype=v.type.dtype.to_torch())
                for shape, v in zip(self._out_shapes, self.graph.outputs)]
        # the callback's tensors: only a program that hands steps back to Python needs them
        vals = self._bind(inputs, arena, offsets, env, outs) if self.host.callback_steps else []
        failure: list[BaseException] = []

        def callback(_ctx: Any, node_index: int) -> int:
            try:
                self._fallback(self.steps[self._index[node_index]], vals, arena, offsets, env)
                return 0
            except BaseException as e:  # noqa: BLE001 - carried across C and re-raised below
                failure.append(e)
                return 1

        in_ptrs = (ctypes.c_void_p * max(1, len(inputs)))(*[t.data_ptr() for t in inputs])
        sizes = (ctypes.c_int64 * max(1, len(self.symbols)))(*[int(env[s]) for s in self.symbols])
        out_ptrs = (ctypes.c_void_p * max(1, len(outs)))(*[t.data_ptr() for t in outs])
        rc = self._run(in_ptrs, self._weight_ptrs, arena.data_ptr(), out_ptrs, sizes, CALLBACK(callback), None)
        if failure:
            raise failure[0]
        if rc:
            raise CompileError(f"the compiled program stopped with status {rc}")
        return outs

    def _scratch(self, env: dict[sympy.Symbol, int]) -> int:
        """The kernels' scratch bytes at ``env``: the host's formula, evaluated exactly once
        per distinct set of sizes."""
        key = tuple(int(env[s]) for s in self.symbols)
        if key not in self._scratch_at:
            if len(self._scratch_at) > 256:
                self._scratch_at.clear()
            at = self.scratch_bytes.xreplace({s: sympy.Integer(v) for s, v in zip(self.symbols, key)})
            self._scratch_at[key] = int(at)
        return self._scratch_at[key]

    def _bind(self, inputs: Sequence[torch.Tensor], arena: torch.Tensor, offsets: list[int],
              env: dict[sympy.Symbol, int], outs: Sequence[torch.Tensor]) -> list[Any]:
        """Every value as a tensor where the host program keeps it: inputs, weights, arena
        slots (in the caller's output tensor for a buffer placed there), and views of inputs
        or weights (run here: they are views, nothing is copied)."""
        vals: list[Any] = [None] * self.nslots
        vals[:len(inputs)] = list(inputs)
        for s, name in self.constant_slots.items():
            vals[s] = self.graph.constants[name]
        for s, slot in self.arena_slots.items():
            k = self._direct.get(slot.buffer)
            if k is None:
                vals[s] = slot.view(arena, offsets, env)
            else:
                vals[s] = slot.view(outs[k].view(-1).view(torch.uint8), {slot.buffer: 0}, env)
        for step in self.steps:
            if any(vals[s] is None for s in step.outs) and all(vals[a] is not None for a in step.args):
                out = step.execute([vals[a] for a in step.args], env)
                for s, t in zip(step.outs, (out,) if isinstance(out, torch.Tensor) else out):
                    vals[s] = t
        return vals

    def _fallback(self, step: Any, vals: list[Any], arena: torch.Tensor, offsets: list[int],
                  env: dict[sympy.Symbol, int]) -> None:
        try:
            out = step.execute([vals[a] for a in step.args], env)
        except Exception as e:
            raise CompileError(f"C backend fallback failed at {_describe(step, env)}: {e}") from e
        for s, t in zip(step.outs, (out,) if isinstance(out, torch.Tensor) else out):
            vals[s].copy_(t)
