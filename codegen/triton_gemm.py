"""The Triton matmul template: matmul, addmm, linear, batched matmul (broadcast batches
included), with the kernel's epilogue fused on the accumulator before the store.

    generate_template(kernel, "k0") -> TritonSource(name="effc_k0", source="import os ...",
                                                    entry="entry")

[Note: Triton GEMM template]
One program per ``BLOCK_M x BLOCK_N`` output tile of one batch point ([Note: Triton GEMM
form] says which axes are which), all in one flat grid, batch-major. Within a batch point
the tiles run in grouped order: ``GROUP_M`` consecutive programs share a column of B tiles
and walk down ``GROUP_M`` row tiles before moving right, so a group's A rows and B columns
stay in L2 (the swizzle of Triton's matmul tutorial). The program walks K in ``BLOCK_K``
steps with ``tl.dot`` into a float32 accumulator (float64 for float64 operands): f16/bf16
operands run on the tensor cores; float32 operands use ``input_precision="ieee"`` unless
``allow_tf32``. Rows and columns past M and N are wrapped back into range (``rm % M``) for
loads, which then need no mask, and only the stores are masked; K's tail is masked unless K
is a static multiple of ``BLOCK_K``; an operand's own mask (convolution padding) is applied
to its loads. Where the extent is a static multiple of 16, the wrapped indices carry the
hint TorchInductor's mm template gives them (``tl.max_contiguous(tl.multiple_of(rm % M,
BLOCK_M), BLOCK_M)``) so the loads along the contiguous axis stay vectorised: the wrap then
restarts at a multiple of 16 elements and every vector (at most 16 bytes) stays aligned and
inside one run. With any other extent the hint is a lie the GPU punishes: a vector that
straddles the wrap starts at an unaligned address (a "misaligned address" fault on an H200
for a 5-column linear), so there is none. The epilogue ([Note: Triton template
epilogue]) then runs on the tile in registers: bias, activation, residual, scale and cast
cost no extra pass over memory.

[Note: Triton convolution K loop]
A convolution's K is (input channel, kernel row, kernel column). Walked flat, each K step
recovers the three from ``k`` by division for every element of the tile and evaluates the
padding mask on the whole ``[BLOCK_K, BLOCK_N]`` tile. Instead, where the channel axis is
long enough to fill blocks, the loop runs ``it`` over (tap, channel block), tap outer: the
kernel row and column are scalars (one division per step, not per element), the channel is
the tile's K index, and the operands' offsets are their index expressions with those names,
so the input tile of one tap is a shifted window and its padding mask depends only on the
output pixels (``[1, BLOCK_N]``). One flat loop keeps Triton's software pipelining across
taps. Channels past the extent are masked unless it is a static multiple of ``BLOCK_K``.

[Note: interpreted bf16 dots]
Triton's interpreter (TRITON_INTERPRET=1, how CI runs these kernels) multiplies bf16 tiles
in ``tl.dot`` as their raw 16-bit patterns (seen with Triton 3.9). The launcher passes
``INTERPRETED`` and bf16 tiles are then widened to float32 before the dot, which is exact;
compiled kernels never take that branch.

Offsets are 32-bit unless some tensor reaches 2**31 elements; the launcher then passes
``INDEX_64`` and the program index is widened, which widens every offset derived from it.
The tile configuration comes from the cost model ([Note: Triton GEMM configs]), priced on
the kernel's static sizes (``size_hints`` for symbolic ones, else 2048); ``config``
overrides it. Everything used exists in Triton 3.6 and later.
"""

from __future__ import annotations

from typing import Mapping

import sympy

from effc.costmodel.triton_gemm_configs import GemmConfig, GemmProblem, rank_gemm_configs
from effc.ir import DType
from effc.ir.kernel import Kernel, LoweringError

from .triton_abi import TritonSource, kernel_name, py_ident, tl_dtype
from .triton_epilogue import Epilogue, TilePrinter, decompose, module_text, params, sizes, unpack_sizes
from .triton_gemm_plan import GemmForm, Side, addressing, gemm_form
from .triton_index import PythonPrinter

DEFAULT_HINT = 2048


def generate_template(kernel: Kernel, name: str, config: GemmConfig | None = None, *, allow_tf32: bool = False,
                      target: str = "sm90", size_hints: Mapping[sympy.Symbol, int] | None = None) -> TritonSource:
    """The Triton source of a matmul template kernel [Note: Triton GEMM template]; raises
    LoweringError for a kernel it cannot express (another template, integer operands, an
    epilogue op without a Triton form)."""
    t = kernel.template
    if t is None or t.op != "matmul":
        raise LoweringError(f"kernel {kernel.name} is not a matmul template")
    if config is not None and not isinstance(config, GemmConfig):
        raise TypeError(f"a matmul template takes a GemmConfig, not {type(config).__name__}")
    return gemm_source(kernel, name, gemm_form(kernel), config, allow_tf32=allow_tf32, target=target,
                       size_hints=size_hints)


def rank_template_configs(kernel: Kernel, size_hints: Mapping[sympy.Symbol, int] | None = None, *,
                          allow_tf32: bool = False, target: str = "sm90") -> list[tuple[float, GemmConfig]]:
    """The feasible tile configurations of a matmul template, each with its predicted seconds,
    fastest first ([Note: Triton GEMM configs]): what an autotuner measures the top few of."""
    form = gemm_form(kernel)
    ranked = rank_gemm_configs(problem(kernel, form, allow_tf32, size_hints), target)
    return [(t, c) for c, t, _ in ranked if t is not None]


def dot_dtype(a: DType, b: DType) -> DType:
    """The dtype both operands enter ``tl.dot`` in."""
    if a is b and a in (DType.F16, DType.BF16, DType.F32, DType.F64):
        return a
    if a.is_float and b.is_float:
        return DType.F64 if DType.F64 in (a, b) else DType.F32
    raise LoweringError(f"{a} x {b} operands have no Triton matmul")


def size_hint(e: sympy.Expr, hints: Mapping[sympy.Symbol, int]) -> int:
    e = sympy.sympify(e)
    v = e.subs({s: hints.get(s, DEFAULT_HINT) for s in e.free_symbols})
    return max(1, int(v)) if v.is_number else DEFAULT_HINT


def problem(kernel: Kernel, form: GemmForm, allow_tf32: bool,
            hints: Mapping[sympy.Symbol, int] | None = None) -> GemmProblem:
    """The cost model's view of the GEMM (symbolic extents at their hints)."""
    h = dict(hints or {})
    d = dot_dtype(form.a.dtype, form.b.dtype)
    out = max((b.dtype.itemsize for b in kernel.outputs), default=4)
    return GemmProblem(size_hint(form.extent(form.batch), h), size_hint(form.extent(form.m), h),
                       size_hint(form.extent(form.n), h), size_hint(form.extent(form.k), h), d.itemsize, out,
                       tensor_cores=d in (DType.F16, DType.BF16) or (d is DType.F32 and allow_tf32))


def _accumulate(d: DType, prec: str) -> str:
    """One K step into ``acc`` [Note: float64 GEMM tiles]."""
    if d is DType.F64:
        return "acc += tl.sum(a[:, :, None] * b[None, :, :], axis=1)"
    return f"acc = tl.dot(a, b, acc{prec})"


# Note: float64 GEMM tiles
# tl.dot takes float64 operands in some Triton releases only (3.9's interpreter does, 3.6's
# compiler for sm90 rejects them), so float64 tiles are multiplied out by broadcasting and
# summed over K on the FMA units. The outer product lives in registers, which is why float64
# problems get the small FLOAT64_CONFIGS (costmodel/triton_gemm_configs.py).


def _even(e: sympy.Expr, block: int) -> bool:
    return bool(e.is_Integer) and int(e) % block == 0


class _Program:
    """The kernel body's lines, with the names every symbol prints as: sizes by position,
    domain axes ``ax0..`` in form order."""

    def __init__(self, kernel: Kernel, form: GemmForm) -> None:
        self.kernel, self.form = kernel, form
        self.names: dict[sympy.Symbol, str] = sizes(kernel)
        self.params = params(kernel)
        self.dims: dict[sympy.Symbol, frozenset[str]] = {}
        for group, dim in ((form.batch, ""), (form.m, "m"), (form.n, "n")):
            for s, _ in group:
                self.names[s] = f"ax{len(self.dims)}"
                self.dims[s] = frozenset({dim}) if dim else frozenset()
        self.printer = TilePrinter(self.names, set(self.dims) | {s for s, _ in form.k})
        self.lines: list[str] = []

    def emit(self, *lines: str) -> None:
        self.lines.extend(lines)

    def expr(self, e: sympy.Basic, extra: Mapping[sympy.Symbol, str] | None = None) -> str:
        """``e`` printed with this program's names plus ``extra`` (the K loop's axes)."""
        if not extra:
            return self.printer(e)
        p = TilePrinter({**self.names, **extra}, self.printer.wide)
        text = p(e)
        self.printer.helpers |= p.helpers
        return text

    def axes(self, flat: str, axes: tuple[tuple[sympy.Symbol, sympy.Expr], ...], expand: str) -> None:
        named = [(self.names[s], n) for s, n in axes]
        for var, src in decompose(flat, named, self.printer):
            self.emit(f"{var} = {src}{expand}")

    def expr_dims(self, e: sympy.Basic, extra: Mapping[sympy.Symbol, frozenset[str]]) -> frozenset[str]:
        return frozenset().union(*(self.dims.get(s, extra.get(s, frozenset())) for s in e.free_symbols))


def _widen(src: str, have: frozenset[str], want: tuple[str, str], shapes: dict[str, str]) -> str:
    """``src`` plus a zero tile for each dimension of ``want`` it does not vary along."""
    missing = [d for d in want if d not in have]
    if not missing:
        return src
    shape = ", ".join(shapes[d] if d in missing else "1" for d in want)
    return f"({src}) + tl.zeros(({shape}), dtype=tl.int32)"


def _times(p: _Program, var: str, st: sympy.Expr) -> str:
    return var if st == 1 else f"{var} * ({p.expr(st)})"


def _operand(p: _Program, side: Side, which: str, even_k: bool, fast: bool,
             chunk: int | None = None) -> tuple[list[str], list[str]]:
    """(lines before the K loop, lines inside it) loading operand ``which`` ('a' or 'b') into
    a tile named ``which``; ``chunk``: the K loop walks that reduce axis in blocks, the
    others as scalars ``kt0..`` [Note: Triton convolution K loop]."""
    form = p.form
    tile = ("m", "k") if which == "a" else ("k", "n")
    shapes = {"m": "BLOCK_M", "n": "BLOCK_N", "k": "BLOCK_K"}
    kvar = f"rk{which}"
    knames = {s: f"k{which}{j}" for j, (s, _) in enumerate(form.k)}
    kdims = {s: frozenset({"k"}) for s, _ in form.k}
    if chunk is not None:
        knames = {s: (kvar if j == chunk else f"kt{j}") for j, (s, _) in enumerate(form.k)}
        kdims = {s: frozenset({"k"}) for j, (s, _) in enumerate(form.k) if j == chunk}
    ad = addressing(side, form)
    ptr = p.params[side.buffer]
    kshape = "[None, :]" if which == "a" else "[:, None]"
    before: list[str] = []
    body: list[str] = []
    if fast:
        assert ad.outer is not None and ad.flat_stride is not None
        off = _widen(f"{p.expr(ad.outer)} + {_times(p, kvar, ad.flat_stride)}",
                     p.expr_dims(ad.outer, kdims) | {"k"}, tile, shapes)
        before += [f"{kvar} = tl.arange(0, BLOCK_K){kshape}", f"{which}_ptrs = {ptr} + ({off})"]
        mask = "" if even_k else f", mask={kvar} < K - k * BLOCK_K, other=0.0"
        body += [f"{which} = tl.load({which}_ptrs{mask})",
                 f"{which}_ptrs += {_times(p, 'BLOCK_K', ad.flat_stride)}"]
        return before, body
    body.append(f"{kvar} = k * BLOCK_K + tl.arange(0, BLOCK_K){kshape}")
    if ad.outer is not None:
        before.append(f"{which}_outer = {p.expr(ad.outer)}")
        outer_dims = p.expr_dims(ad.outer, kdims)
    if chunk is not None:
        inner = p.expr(ad.inner, knames) if ad.outer is not None else p.expr(side.index, knames)
    elif ad.flat_stride is not None and ad.outer is not None:
        inner = _times(p, kvar, ad.flat_stride)
    else:
        body += [f"{v} = {src}" for v, src in decompose(kvar, [(knames[s], n) for s, n in form.k], p.printer)]
        inner = p.expr(ad.inner, knames) if ad.outer is not None else p.expr(side.index, knames)
    if ad.outer is not None:
        off = _widen(f"{which}_outer + {inner}", outer_dims | {"k"}, tile, shapes)
    else:
        off = _widen(inner, p.expr_dims(side.index, kdims) | {"k"}, tile, shapes)
    conds = [] if even_k else [f"({kvar} < {'KC' if chunk is not None else 'K'})"]
    if side.mask is not None:
        conds.append(p.expr(side.mask, knames))
    mask = f", mask={' & '.join(conds)}, other=0.0" if conds else ""
    body.append(f"{which} = tl.load({ptr} + ({off}){mask})")
    return before, body


CHUNK_MIN = 16   # a reduce axis shorter than this is not walked in blocks of its own


def _chunk_axis(form: GemmForm, block_k: int) -> int | None:
    """The reduce axis the K loop walks in ``BLOCK_K`` blocks, the others one point per step
    [Note: Triton convolution K loop]: the first axis (a convolution's input channel) when
    there are several, both operands separate into domain and reduce parts, and its blocks
    waste little (a static extent a multiple of BLOCK_K or at least four blocks long)."""
    if len(form.k) < 2:
        return None
    if any(addressing(s, form).outer is None for s in (form.a, form.b)):
        return None
    n = form.k[0][1]
    if n.is_Integer and not (int(n) >= CHUNK_MIN and (int(n) % block_k == 0 or int(n) >= 4 * block_k)):
        return None
    return 0


def gemm_source(kernel: Kernel, name: str, form: GemmForm, config: GemmConfig | None, *, allow_tf32: bool = False,
                target: str = "sm90", size_hints: Mapping[sympy.Symbol, int] | None = None) -> TritonSource:
    """The module text of ``kernel`` tiled as ``form`` [Note: Triton GEMM template]."""
    d = dot_dtype(form.a.dtype, form.b.dtype)
    if config is None:
        ranked = rank_gemm_configs(problem(kernel, form, allow_tf32, size_hints), target)
        if ranked[0][1] is None:
            raise LoweringError(f"no Triton GEMM configuration fits kernel {kernel.name}: {ranked[0][2]}")
        config = ranked[0][0]
    cfg = config
    if min(cfg.block_m, cfg.block_n, cfg.block_k) < 16:
        raise LoweringError(f"tl.dot needs blocks of at least 16, not {cfg}")
    M, N, K, NB = (form.extent(x) for x in (form.m, form.n, form.k, form.batch))
    even_m, even_n, even_k = _even(M, cfg.block_m), _even(N, cfg.block_n), _even(K, cfg.block_k)
    p = _Program(kernel, form)
    p.emit("pid = tl.program_id(0)", "if INDEX_64:", "    pid = pid.to(tl.int64)",
           "grid_m = tl.cdiv(M, BLOCK_M)", "grid_n = tl.cdiv(N, BLOCK_N)",
           "bid = pid // (grid_m * grid_n)", "tile = pid % (grid_m * grid_n)",
           # grouped order [Note: Triton GEMM template]
           "width = GROUP_M * grid_n", "first_m = (tile // width) * GROUP_M",
           "group_size = tl.minimum(grid_m - first_m, GROUP_M)",
           "pid_m = first_m + (tile % width) % group_size", "pid_n = (tile % width) // group_size",
           "rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)", "rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)",
           f"am = rm{'' if even_m else ' % M'}", f"bn = rn{'' if even_n else ' % N'}")
    # wrapped rows keep aligned runs of 16 only when the extent is a multiple of 16
    if not even_m and _even(M, 16):
        p.emit("am = tl.max_contiguous(tl.multiple_of(am, BLOCK_M), BLOCK_M)")
    if not even_n and _even(N, 16):
        p.emit("bn = tl.max_contiguous(tl.multiple_of(bn, BLOCK_N), BLOCK_N)")
    p.axes("bid", form.batch, "")
    p.axes("am", form.m, "[:, None]")
    p.axes("bn", form.n, "[None, :]")
    ads = [addressing(s, form) for s in (form.a, form.b)]
    fast = all(x.flat_stride is not None and x.outer is not None for x in ads) and \
        form.a.mask is None and form.b.mask is None
    chunk = None if fast else _chunk_axis(form, cfg.block_k)
    loop = ["for k in range(0, tl.cdiv(K, BLOCK_K)):"]
    if chunk is not None:  # [Note: Triton convolution K loop]
        kc = form.k[chunk][1]
        even_k = _even(kc, cfg.block_k)
        others = [(f"kt{j}", n) for j, (_, n) in enumerate(form.k) if j != chunk]
        taps = sympy.Mul(*[n for _, n in others])
        p.emit(f"KC = {p.expr(kc)}", "NCH = tl.cdiv(KC, BLOCK_K)")
        loop = [f"for it in range(0, NCH * {p.expr(taps)}):", "    k = it % NCH", "    tap = it // NCH"]
        loop += [f"    {v} = {src}" for v, src in decompose("tap", others, p.printer)]
    (a_before, a_body), (b_before, b_body) = (_operand(p, s, w, even_k, fast, chunk)
                                              for s, w in ((form.a, "a"), (form.b, "b")))
    acc_t = "tl.float64" if d is DType.F64 else "tl.float32"
    prec = "" if d is not DType.F32 else f", input_precision=\"{'tf32' if allow_tf32 else 'ieee'}\""
    casts = [f"{w} = {w}.to({tl_dtype(d)})" for w, s in (("a", form.a), ("b", form.b)) if s.dtype is not d]
    if d is DType.BF16:  # [Note: interpreted bf16 dots]
        casts += ["if INTERPRETED:", "    a = a.to(tl.float32)", "    b = b.to(tl.float32)"]
    p.emit(*a_before, *b_before, f"acc = tl.zeros((BLOCK_M, BLOCK_N), dtype={acc_t})",
           *loop,
           *("    " + x for x in a_body + b_body + casts), "    " + _accumulate(d, prec))
    conds = ([] if even_m else ["(rm < M)[:, None]"]) + ([] if even_n else ["(rn < N)[None, :]"])
    epi = Epilogue(kernel, p.printer, p.dims, ("m", "n"), "(BLOCK_M, BLOCK_N)", p.params,
                   " & ".join(conds) or None, dict(form.subst))
    p.emit(*epi.lines())
    return _module(kernel, name, p, cfg, (M, N, K, NB))


def _module(kernel: Kernel, name: str, p: _Program, cfg: GemmConfig,
            extents: tuple[sympy.Expr, ...]) -> TritonSource:
    jit = kernel_name(name)
    sz = list(sizes(kernel).values())
    args = [p.params[b.name] for b in kernel.inputs + kernel.outputs] + sz
    consts = ["BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "INDEX_64", "INTERPRETED"]
    py = PythonPrinter(sizes(kernel))
    M, N, K, NB = (py(e) for e in extents)
    entry = unpack_sizes(kernel) + [
        f"M, N, K, NB = {M}, {N}, {K}, {NB}",
        "if M <= 0 or N <= 0 or NB <= 0:",
        "    return",
        "index_64 = max([t.numel() for t in list(inputs) + list(outputs)] + [0]) >= 2 ** 31",
        f"grid = (NB * triton.cdiv(M, {cfg.block_m}) * triton.cdiv(N, {cfg.block_n}),)",
        f"{jit}[grid](*inputs, *outputs, {''.join(s + ', ' for s in sz)}M, N, K,",
        f"    BLOCK_M={cfg.block_m}, BLOCK_N={cfg.block_n}, BLOCK_K={cfg.block_k}, GROUP_M={cfg.group_m},",
        "    INDEX_64=index_64, INTERPRETED=os.environ.get('TRITON_INTERPRET') == '1',",
        f"    num_warps={cfg.num_warps}, num_stages={cfg.num_stages})"]
    sig = args + ["M", "N", "K"] + [f"{c}: tl.constexpr" for c in consts]
    return TritonSource(py_ident(name), module_text(jit, sig, p.lines, entry, p.printer.helpers), "entry")
