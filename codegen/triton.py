"""Kernel IR -> Triton: one ``@triton.jit`` function and its launcher per point-wise or
reduction kernel, per [Note: Triton kernel ABI].

    kernel k0 pointwise(a0: f32[s0, 64], a1: f32[64]) -> (out0: f32[s0, 64])
      domain i0 < s0, i1 < 64
      %t0 = load a0[64*i0 + i1] : f32
      %t1 = load a1[i1] : f32
      %t2 = add(%t0, %t1) : f32
      store out0[64*i0 + i1] = %t2
becomes
    @triton.jit
    def effc_k_k0(in0, in1, out0, sz0, XNUMEL, IDX64: tl.constexpr):
        pid = tl.program_id(0)
        if IDX64:
            pid = pid.to(tl.int64)
        x = pid * 1024 + tl.arange(0, 1024)
        xmask = x < XNUMEL
        zx = tl.zeros([1024], tl.int32)
        v0 = tl.load(in0 + (x), mask=xmask, other=0)
        v1 = tl.load(in1 + (x % 64), mask=xmask, other=0)
        v2 = (v0 + v1)
        tl.store(out0 + (x), v2, mask=xmask)

    def entry(inputs, outputs, sizes):
        sz0 = sizes[0]
        xnumel = 64*sz0
        ...
        effc_k_k0[grid](inputs[0], inputs[1], outputs[0], sz0, xnumel, IDX64=..., num_warps=4, num_stages=1)

A program covers ``xblock`` points of the flattened domain ([Note: Triton flat indices] in
triton_index.py); masks come from the symbolic extents and vanish where a static extent is a
multiple of the block. Reductions are triton_reduce.py. Scalar math is triton_scalar.py.
Matmul and convolution templates are triton_gemm.py and triton_conv.py, attention
(``Template(op="node")`` over an SDPA node) triton_attention.py, all loaded lazily; the
embedding lookup is triton_gather.py and 2-d max/avg/adaptive avg pooling triton_pool.py,
both loaded lazily too; other ``Template(op="node")`` kernels and anything else no generator
covers raise LoweringError, and the host runs them through the reference backend.
"""

from __future__ import annotations

import importlib
from typing import Any, Sequence

import sympy

from effc.ir import DType, Op
from effc.ir.kernel import (Compute, Const, IndexValue, Kernel, Load, Loop, LoweringError, Reduce, Stmt,
                            Store)

from .triton_abi import (INT32_LIMIT, IndexPrinter, TritonConfig, TritonSource, kernel_name, literal,
                         py_ident, size_symbols, temp_dtype, tl_dtype)
from .triton_index import Group, PythonPrinter, flatten, numel
from .triton_math import CONSTANTS, helper_source
from .triton_scalar import SCALAR, cast_expr, known_integer, power_product, scalar_expr, small_integer

KINDS = ("pointwise", "reduction")
REDUCTIONS = ("sum", "prod", "max", "min", "any", "all", "argmax", "argmin")
X, R = sympy.Symbol("x", integer=True, nonnegative=True), sympy.Symbol("r", integer=True, nonnegative=True)
HEADER = "import torch\nimport triton\nimport triton.language as tl\n\n"

__all__ = ["generate", "unsupported", "KINDS"]


def unsupported(kernel: Kernel) -> str | None:
    """Why this module cannot produce ``kernel``'s point-wise or reduction function (None
    when it can)."""
    t = kernel.template
    if kernel.kind == "view":
        return "a view kernel has no function: the host aliases its output"
    if t is not None and t.op == "node":
        op = t.node.op if t.node is not None else "?"
        return f"{kernel.kind} kernel {kernel.name} calls {op}, which has no Triton implementation"
    if t is not None or kernel.kind not in KINDS:
        return f"kernels of kind {kernel.kind!r} have no Triton point-wise/reduction form"
    for b in kernel.buffers:
        if b.dtype is DType.I4:
            return f"buffer {b.name} is {b.dtype}, which has no Triton type"
    for s in kernel.statements():
        if isinstance(s, Compute) and s.op not in SCALAR:
            return f"op {s.op} is missing from the Triton scalar table"
        if isinstance(s, Reduce) and s.op not in REDUCTIONS:
            return f"reduction {s.op} has no Triton form"
        if not isinstance(s, Store) and s.dtype is DType.I4:
            return f"a temporary is {s.dtype}, which has no Triton type"
    return None


def generate(kernel: Kernel, name: str, config: Any = None) -> TritonSource:
    """The Triton module of ``kernel`` ([Note: Triton kernel ABI]); ``name`` names the module
    and its jit function. ``config`` is a ``TritonConfig`` for point-wise and reduction
    kernels (None: the cost model's pick at default sizes) and whatever the template
    generators take for matmul and conv. Raises LoweringError for what no generator covers."""
    t = kernel.template
    if t is not None and t.op in ("matmul", "conv"):
        return _template(kernel, name, config)
    if t is not None and t.op == "node" and t.node is not None and t.node.op is Op.EMBEDDING:
        from .triton_gather import generate_embedding
        return generate_embedding(kernel, name)
    if t is not None and t.op == "node" and t.node is not None \
            and t.node.op in (Op.MAX_POOL, Op.AVG_POOL, Op.ADAPTIVE_AVG_POOL):
        from .triton_pool import generate_pool
        return generate_pool(kernel, name, config)
    if t is not None and t.op == "node" and t.node is not None and t.node.op is Op.SDPA:
        return _template(kernel, name, config, "effc.codegen.triton_attention", "generate_attention", "attention")
    why = unsupported(kernel)
    if why is not None:
        raise LoweringError(why)
    if config is None:
        from effc.costmodel.triton_configs import choose_config
        config = choose_config(kernel, {})
    if not isinstance(config, TritonConfig):
        raise TypeError(f"a {kernel.kind} kernel takes a TritonConfig, not {type(config).__name__}")
    return _Generator(kernel, name, config).source()


def _template(kernel: Kernel, name: str, config: Any, module: str | None = None,
              function: str = "generate_template", what: str | None = None) -> TritonSource:
    """A matmul, conv or attention kernel through its template module (imported lazily),
    when that module exists."""
    assert kernel.template is not None
    what = what or kernel.template.op
    module = module or {"matmul": "effc.codegen.triton_gemm", "conv": "effc.codegen.triton_conv"}[what]
    try:
        gen = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as e:
        raise LoweringError(f"no Triton template for {what} ({e})") from e
    src = gen(kernel, name, config)
    # duck-typed: a template module may carry its own copy of the dataclass
    if not all(isinstance(getattr(src, f, None), str) for f in ("name", "source", "entry")):
        raise LoweringError(f"the {what} template gave no TritonSource")
    return src if isinstance(src, TritonSource) else TritonSource(src.name, src.source, src.entry)


class _Generator:
    """Source text of one point-wise or reduction kernel under one config."""

    def __init__(self, kernel: Kernel, name: str, config: TritonConfig) -> None:
        self.kernel, self.config = kernel, config
        self.module = py_ident(name, "effc_")
        self.fn = kernel_name(name)
        self.symbols = size_symbols(kernel)
        self.sizes = {s: f"sz{k}" for k, s in enumerate(self.symbols)}
        self.dom = [a for a in kernel.domain if not (isinstance(a.size, int) and a.size == 1)]
        self.red = [a for a in kernel.reduce if not (isinstance(a.size, int) and a.size == 1)]
        self.groups: list[Group] = [(self.dom, X)] + ([(self.red, R)] if kernel.kind == "reduction" else [])
        self.xnumel = sympy.sympify(numel(kernel.domain))
        self.rnumel = sympy.sympify(numel(kernel.reduce))
        self.idx64_static = self._static_idx64()
        self.helpers: set[str] = set()

    # -- launch parameters ------------------------------------------------------------------------

    def _buffer_numels(self) -> list[sympy.Expr]:
        return [sympy.Mul(*(sympy.sympify(d) for d in b.shape)) for b in self.kernel.buffers]

    def _static_idx64(self) -> bool | None:
        """True/False when static sizes decide the index width, None when it is decided at launch."""
        sizes = self._buffer_numels()
        if any(s.is_number and int(s) >= INT32_LIMIT for s in sizes):
            return True
        return None if any(not s.is_number for s in sizes) else False

    def source(self) -> str:
        from .triton_reduce import reduction_kernel
        c = self.config
        if self.kernel.kind == "pointwise":
            fns = [self.pointwise()]
        else:
            fns = [reduction_kernel(self, looped=c.looped)]
            if not c.looped and not self.rnumel.is_number:   # R may outgrow the block at run time
                fns.append(reduction_kernel(self, looped=True, suffix="_looped"))
        helpers = helper_source(self.helpers)
        text = HEADER + CONSTANTS + "\n\n" + (helpers + "\n\n\n" if helpers else "") + "\n\n".join(fns) \
            + "\n\n" + self.entry()
        return TritonSource(self.module, text, "entry")

    def params(self) -> str:
        k = self.kernel
        ps = [f"in{i}" for i in range(len(k.inputs))] + [f"out{i}" for i in range(len(k.outputs))]
        ps += list(self.sizes.values())
        if not self.xnumel.is_number:
            ps.append("XNUMEL")
        if k.kind == "reduction" and not self.rnumel.is_number:
            ps.append("RNUMEL")
        if self.idx64_static is None:
            ps.append("IDX64: tl.constexpr")
        return ", ".join(ps)

    def numel_text(self, which: str) -> str:
        e = self.xnumel if which == "x" else self.rnumel
        return str(int(e)) if e.is_number else which.upper() + "NUMEL"

    def prologue(self, shape_x: str) -> list[str]:
        """pid, with the int64 switch; the caller adds ``x``."""
        lines = ["pid = tl.program_id(0)"]
        if self.idx64_static:
            lines.append("pid = pid.to(tl.int64)")
        elif self.idx64_static is None:
            lines += ["if IDX64:", "    pid = pid.to(tl.int64)"]
        return lines

    def pointwise(self) -> str:
        b = self.config.xblock
        lines = self.prologue(f"[{b}]") + [f"x = pid * {b} + tl.arange(0, {b})"]
        xmask = self.mask_line(lines, "x", b)
        lines.append(f"zx = tl.zeros([{b}], tl.int32)")
        body = Body(self, f"[{b}]", xmask, {X: None})
        for s in self.kernel.body:
            assert not isinstance(s, Loop), "a point-wise kernel has no loops"
            lines += body.statement(s)
        return self.function(self.fn, lines)

    def mask_line(self, lines: list[str], var: str, block: int) -> str | None:
        """Append ``xmask = x < XNUMEL`` (or r's), unless a static extent is a multiple of the block."""
        n = self.xnumel if var == "x" else self.rnumel
        if n.is_number and int(n) > 0 and int(n) % block == 0:
            return None
        lines.append(f"{var}mask = {var} < {self.numel_text(var)}")
        return f"{var}mask"

    def function(self, name: str, lines: list[str]) -> str:
        return f"@triton.jit\ndef {name}({self.params()}):\n" + "".join(f"    {ln}\n" for ln in lines)

    def entry(self) -> str:
        c, k = self.config, self.kernel
        pr = PythonPrinter(dict(self.sizes))
        lines = [f"{v} = sizes[{i}]" for i, v in enumerate(self.sizes.values())]
        lines.append(f"xnumel = {pr(self.xnumel)}")
        if k.kind == "reduction":
            lines.append(f"rnumel = {pr(self.rnumel)}")
        if self.xnumel.is_number:
            if int(self.xnumel) <= 0:
                lines.append("return")
                return self.entry_text(lines)
        else:
            lines.append("if xnumel <= 0:\n        return")
        args = [f"inputs[{i}]" for i in range(len(k.inputs))] + [f"outputs[{i}]" for i in range(len(k.outputs))]
        args += list(self.sizes.values())
        if not self.xnumel.is_number:
            args.append("xnumel")
        if k.kind == "reduction" and not self.rnumel.is_number:
            args.append("rnumel")
        if self.idx64_static is None:
            sizes = [pr(s) for s in self._buffer_numels() if not s.is_number]
            big = sizes[0] if len(sizes) == 1 else f"max({', '.join(sizes)})"
            args.append(f"IDX64={big} >= {INT32_LIMIT}")
        args += [f"num_warps={c.num_warps}", f"num_stages={c.num_stages}"]
        lines.append(f"grid = ((xnumel + {c.xblock - 1}) // {c.xblock},)")
        call = f"[grid]({', '.join(args)})"
        if k.kind == "reduction" and not c.looped and not self.rnumel.is_number:
            lines += [f"if rnumel <= {c.rblock}:", f"    {self.fn}{call}", "else:", f"    {self.fn}_looped{call}"]
        else:
            lines.append(f"{self.fn}{call}")
        return self.entry_text(lines)

    @staticmethod
    def entry_text(lines: list[str]) -> str:
        return ("def entry(inputs, outputs, sizes):\n" + "".join(f"    {ln}\n" for ln in lines))


class Body:
    """Triton lines for the statements of one scope: the top level (``shape``: one value per
    outer point) or a reduce loop (one per outer and reduce point). ``mask`` guards loads
    and stores; ``flat`` maps the flat indices present in this scope to nothing (x) or the
    zero tensor that gives an index missing them its full shape."""

    def __init__(self, gen: _Generator, shape: str, mask: str | None, flat: dict[sympy.Symbol, str | None],
                 parent: "Body | None" = None, cse: dict[object, str] | None = None) -> None:
        self.gen, self.shape, self.mask, self.flat = gen, shape, mask, flat
        # temporaries are named and typed once per kernel, whatever scope defines them
        self.names: dict[str, str] = parent.names if parent is not None else {}
        self.types: dict[str, DType] = parent.types if parent is not None else {}
        # temporaries holding a small integer known while generating (pow's exponent)
        self.integers: dict[str, int] = parent.integers if parent is not None else {}
        self.cse = cse
        self.printer = IndexPrinter({**gen.sizes, X: "x", R: "r"})

    def var(self, dst: str) -> str:
        if dst not in self.names:
            self.names[dst] = f"v{len(self.names)}"
        return self.names[dst]

    def ref(self, temp: str) -> str:
        return self.names[temp]

    def offset(self, index: sympy.Basic) -> str:
        """The flat element offset of ``index`` over this scope's full block shape."""
        e = flatten(index, self.gen.groups)
        text = self.printer(e)
        self.gen.helpers |= self.printer.helpers
        for sym, zero in self.flat.items():
            if sym not in e.free_symbols:
                text = f"({text}) + {zero or 'zx'}"
        if not any(sym in e.free_symbols for sym in self.flat):
            return text
        return f"({text})"

    def _reuse(self, key: object, dst: str) -> bool:
        """Persistent reductions compute a value once for all loops: alias a repeat."""
        if self.cse is None:
            return False
        if key in self.cse:
            self.names[dst] = self.cse[key]
            return True
        self.cse[key] = self.var(dst)
        return False

    def statement(self, s: Stmt) -> list[str]:
        mask = f", mask={self.mask}, other=0" if self.mask else ""
        if isinstance(s, Store):
            buf = self.gen.kernel.buffer(s.buffer)
            pos = self.gen.kernel.outputs.index(buf)
            v = self.ref(s.value)
            held = temp_dtype(self.types[s.value])
            if held is not temp_dtype(buf.dtype) or buf.dtype in (DType.F16, DType.BF16):
                v = f"{v}.to({tl_dtype(buf.dtype)})"
            smask = f", mask={self.mask}" if self.mask else ""
            return [f"tl.store(out{pos} + {self.offset(s.index)}, {v}{smask})"]
        self.types[s.dst] = s.dtype
        if isinstance(s, Load):
            buf = self.gen.kernel.buffer(s.buffer)
            if self._reuse(("load", s.buffer, s.index), s.dst):
                return []
            pos = self.gen.kernel.inputs.index(buf)
            x = f"tl.load(in{pos} + {self.offset(s.index)}{mask})"
            if buf.dtype in (DType.F16, DType.BF16):
                x += ".to(tl.float32)"
            return [f"{self.var(s.dst)} = {x}"]
        if isinstance(s, Const):
            if (n := small_integer(s.value)) is not None:
                self.integers[s.dst] = n
            return [f"{self.var(s.dst)} = tl.full({self.shape}, {literal(s.value, s.dtype)}, "
                    f"{tl_dtype(temp_dtype(s.dtype))})"]
        if isinstance(s, IndexValue):
            e = flatten(s.expr, self.gen.groups)
            text = self.printer(e)
            fractional = any(a.is_Float or (a.is_Rational and not a.is_Integer) for a in sympy.preorder_traversal(e))
            src = DType.F64 if fractional else DType.I64
            zeros = " + ".join(z or "zx" for z in self.flat.values())
            val = f"(({text}) + {zeros}).to({tl_dtype(src)})"
            return [f"{self.var(s.dst)} = {cast_expr(val, src, s.dtype)}"]
        if isinstance(s, Compute):
            if (n := known_integer(s.op, s.args, s.dtype, self.integers)) is not None:
                self.integers[s.dst] = n
            args = [self.ref(a) for a in s.args]
            product = power_product(s.op, s.args, args, s.dtype, self.integers)
            if product is not None:
                return [f"{self.var(s.dst)} = {product}"]
            if self._reuse(("compute", s.op, tuple(args), s.attrs, s.dtype), s.dst):
                return []
            expr = scalar_expr(s.op, args, [self.types[a] for a in s.args], s.dtype, dict(s.attrs), self.gen.helpers)
            return [f"{self.var(s.dst)} = {expr}"]
        raise TypeError(f"not a plain statement: {s}")


# Note: small integer powers
# ``pow(x, 2)`` and ``pow(x, 3)`` with the exponent a constant of the kernel (GPT-2's GELU cubes
# its input) are products in the compute type: the general pow is exp(y log|x|) in float64
# ([Note: Triton math without libdevice]), dozens of float64 instructions per element, which
# made GPT-2's GELU kernel about four times slower than TorchInductor's on an H200. A product
# of two or three float32 factors is within an ulp or two of the correctly rounded power, well
# inside what the one rounding to the half or float32 result allows, with NaN, infinities and
# signs as pow gives them.


def statements(body: Body, stmts: Sequence[Stmt]) -> list[str]:
    out: list[str] = []
    for s in stmts:
        out += body.statement(s)
    return out
