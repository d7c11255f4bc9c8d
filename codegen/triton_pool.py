"""2-D pooling over (..., H, W) as a Triton kernel: ``Template(op="node")`` over a max pool, an
avg pool or an adaptive avg pool node, per [Note: Triton kernel ABI].

    kernel k1 op(x: f16[s0, 64, 56, 56]) -> (out0: f16[s0, 64, 28, 28])
      call max_pool {kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), ceil_mode=False}
becomes one program per ``BLOCK`` elements of the flattened output, the window unrolled:
    o = pid * BLOCK + tl.arange(0, BLOCK); m = o < XNUMEL
    ow = o % OW; t = o // OW; oh = t % OH; x = in0 + (t // OH) * H * W
    acc = tl.full([BLOCK], float("-inf"), tl.float32)
    for kh in tl.static_range(3):
        ih = oh * 2 - 1 + kh * 1; okh = m & (ih >= 0) & (ih < H)
        for kw in tl.static_range(3):
            iw = ow * 2 - 1 + kw * 1; ok = okh & (iw >= 0) & (iw < W)
            v = tl.load(x + (ih * W + iw), mask=ok, other=0).to(tl.float32)
            acc = tl.where(ok & ((v > acc) | (v != v)), v, acc)
    tl.store(out0 + o, acc.to(tl.float16), mask=m)

[Note: Triton pooling]
- The semantics are [Note: C pooling]'s (codegen/c_pool.py), which copy eager torch:
  * max pool: -inf, then each valid tap row-major, taken when ``v > m`` or ``v`` is NaN (a
    NaN wins and stays; ties keep the first, signed zeros included); no valid tap: -inf.
  * avg pool: ``h0 = oh*s - p``, ``h1 = min(h0 + k, H + p)``; ``pool = (h1-h0)*(w1-w0)``
    before clipping to the input. The divisor is ``divisor_override``, else ``pool`` under
    ``count_include_pad``, else the clipped count; the sum runs row-major (masked taps add
    0, which changes nothing: torch's sum starts at +0 too) and is divided once; an empty
    clipped window stores 0.
  * adaptive avg pool: ``start = floor(i*in/out)``, ``end = ceil((i+1)*in/out)``, the sum
    divided by the window's rows, then by its columns. A 1x1 output is a reduction over H*W
    per (n, c) row: ``XBLOCK`` rows by ``RBLOCK`` columns per step, summed across the block
    at the end (reassociated, as the ABI allows for reductions) and divided by H*W.
- f16/bf16 load into float32 and accumulate there; f32 stays f32 (division ``div_rn``);
  f64 stays f64. The store rounds to the output's dtype.
- Extents come from the kernel's buffer shapes: a static one is a ``tl.constexpr`` argument
  (the divisions by OW and OH become divisions by constants), a symbolic one a runtime
  argument computed by ``entry``. The leading dims (N, C, or just C) flatten into one.
- The window is unrolled with ``tl.static_range`` up to ``UNROLL_MAX`` taps (its size is
  static, or for an adaptive pool over static sizes, its largest window); a larger or
  symbolic window is a ``range`` loop. An adaptive pool over symbolic sizes loops to the
  bound ``ceil(in/out) + 1`` and masks each tap by its own window.
- Indices are int32 unless a buffer may reach 2**31 elements (``IDX64``, decided at launch).
Declined with a LoweringError: 1-d/3-d pools, adaptive max pool, integer and bool dtypes,
inputs of rank below 3, attributes that are not pairs of positive ints.
"""

from __future__ import annotations

from typing import Any

import sympy

from effc.ir import DType, Op
from effc.ir.kernel import Kernel, LoweringError

from .c_pool import int_pair
from .triton_abi import INT32_LIMIT, TritonConfig, TritonSource, kernel_name, py_ident, size_symbols, tl_dtype
from .triton_index import PythonPrinter

__all__ = ["generate_pool", "UNROLL_MAX"]

HEADER = "import torch\nimport triton\nimport triton.language as tl\n\n"
POOLS = (Op.MAX_POOL, Op.AVG_POOL, Op.ADAPTIVE_AVG_POOL)
DTYPES = (DType.F16, DType.BF16, DType.F32, DType.F64)
UNROLL_MAX = 64          # windows up to this many taps are unrolled (static_range)
BLOCK = 256              # output elements per program of a windowed pool
ROWS_X_COLS = 2048       # a global pool's block: XBLOCK * RBLOCK elements per step
RBLOCK_MAX = 1024
EXTENTS = ("NC", "H", "W", "OH", "OW")


def generate_pool(kernel: Kernel, name: str, config: Any = None) -> TritonSource:
    """The Triton module of a pooling kernel per [Note: Triton pooling]. ``config`` may be a
    ``TritonConfig``: ``xblock`` output elements per program (a global pool: rows, with
    ``rblock`` columns per step); None takes the defaults."""
    t = kernel.template
    if t is None or t.op != "node" or t.node is None or t.node.op not in POOLS:
        raise LoweringError(f"kernel {kernel.name} is not a max, avg or adaptive avg pool")
    if config is not None and not isinstance(config, TritonConfig):
        raise TypeError(f"a pooling kernel takes a TritonConfig or None, not {type(config).__name__}")
    node = t.node
    if len(kernel.inputs) != 1 or len(kernel.outputs) != 1:
        raise LoweringError(f"kernel {kernel.name}: a pool has one input and one output")
    x, y = kernel.inputs[0], kernel.outputs[0]
    if x.dtype not in DTYPES or y.dtype is not x.dtype:
        raise LoweringError(f"kernel {kernel.name}: {node.op} over {x.dtype} has no Triton form")
    if len(x.shape) < 3 or len(y.shape) != len(x.shape):
        raise LoweringError(f"kernel {kernel.name}: a 2-d pool needs an input of rank 3 or more")
    a = node.attrs
    if node.op is Op.ADAPTIVE_AVG_POOL:
        out = int_pair(a.get("output_size"))
        if out is None or len(tuple(a["output_size"])) != 2 or min(out) < 1:
            raise LoweringError(f"kernel {kernel.name}: only 2-d adaptive pools have a Triton form")
        window = None
    else:
        raw = [a.get(n) for n in ("kernel", "stride", "padding")]
        if not all(isinstance(v, (tuple, list)) and len(v) == 2 for v in raw):
            raise LoweringError(f"kernel {kernel.name}: only 2-d pools have a Triton form")
        k, s, p = (int_pair(v) for v in raw)
        d = int_pair(a.get("dilation", (1, 1))) if node.op is Op.MAX_POOL else (1, 1)
        if k is None or s is None or p is None or d is None or min(k + s + d) < 1 or min(p) < 0:
            raise LoweringError(f"kernel {kernel.name}: pool attributes {dict(a)} are not positive pairs")
        div = a.get("divisor_override")
        if div is not None and (not isinstance(div, int) or isinstance(div, bool) or div == 0):
            raise LoweringError(f"kernel {kernel.name}: divisor_override {div!r} is not a nonzero int")
        window = (k, s, p, d)
    return _Pool(kernel, name, config, window).source()


class _Pool:
    """Source text of one pooling kernel."""

    def __init__(self, kernel: Kernel, name: str, config: TritonConfig | None,
                 window: tuple[tuple[int, int], ...] | None) -> None:
        self.kernel, self.config, self.window = kernel, config, window
        self.node = kernel.template.node  # type: ignore[union-attr]
        self.fn = kernel_name(name)
        self.module = py_ident(name, "effc_")
        self.symbols = size_symbols(kernel)
        self.pr = PythonPrinter({s: f"sz{k}" for k, s in enumerate(self.symbols)})
        x, y = kernel.inputs[0], kernel.outputs[0]
        xs, ys = [sympy.sympify(v) for v in x.shape], [sympy.sympify(v) for v in y.shape]
        self.dims = dict(zip(EXTENTS, (sympy.Mul(*xs[:-2]), xs[-2], xs[-1], ys[-2], ys[-1])))
        self.acc = "tl.float64" if x.dtype is DType.F64 else "tl.float32"
        self.out_ty = tl_dtype(y.dtype)

    # -- text helpers -----------------------------------------------------------------------------

    def static(self, *names: str) -> bool:
        return all(self.dims[n].is_number for n in names)

    def value(self, n: str) -> int:
        return int(self.dims[n])

    def div(self, a: str, b: str) -> str:
        return f"({a} / {b})" if self.acc == "tl.float64" else f"tl.math.div_rn({a}, {b})"

    def prologue(self) -> list[str]:
        return ["pid = tl.program_id(0)", "if IDX64:", "    pid = pid.to(tl.int64)"]

    def loop(self, var: str, count: int | str, unroll: bool) -> str:
        return f"for {var} in tl.static_range({count}):" if unroll else f"for {var} in range(0, {count}):"

    def source(self) -> TritonSource:
        if self.node.op is Op.ADAPTIVE_AVG_POOL and tuple(self.node.attrs["output_size"]) == (1, 1):
            body, launch = self.global_pool()
        else:
            body, launch = self.windowed()
        lines = [f"sz{k} = sizes[{k}]" for k in range(len(self.symbols))]
        for n in EXTENTS:
            lines.append(f"{n.lower()} = {self.pr(self.dims[n])}")
        lines += ["if nc * oh * ow <= 0 or h * w <= 0:", "    return",
                  f"idx64 = max(nc * h * w, nc * oh * ow) >= {INT32_LIMIT}"]
        lines += launch
        entry = "def entry(inputs, outputs, sizes):\n" + "".join(f"    {ln}\n" for ln in lines)
        text = HEADER + "@triton.jit\n" + body + "\n\n" + entry
        return TritonSource(self.module, text, "entry")

    def params(self, names: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """The jit parameters and launch arguments of the extents ``names``: a static one is
        a constexpr."""
        ps, args = [], []
        for n in names:
            const = self.dims[n].is_number
            ps.append(f"{n}: tl.constexpr" if const else n)
            args.append(f"{n}={n.lower()}")
        return ps, args

    # -- windowed pools: max, avg, adaptive avg ---------------------------------------------------

    def windowed(self) -> tuple[str, list[str]]:
        op = self.node.op
        ps, args = self.params(EXTENTS[1:])   # NC only enters through XNUMEL
        extra: list[str] = []
        L = self.prologue() + [
            "o = pid * BLOCK + tl.arange(0, BLOCK)",
            "m = o < XNUMEL",
            "ow = o % OW",
            "t = o // OW",
            "oh = t % OH",
            "x = in0 + (t // OH) * H * W",
        ]
        if op is Op.ADAPTIVE_AVG_POOL:
            body, extra, eargs = self.adaptive()
            args += eargs
        else:
            body = self.max_pool() if op is Op.MAX_POOL else self.avg_pool()
        L += body
        L.append(f"tl.store(out0 + o, res.to({self.out_ty}), mask=m)")
        block = self.config.xblock if self.config is not None else BLOCK
        warps = self.config.num_warps if self.config is not None else 4
        xnumel = self.dims["NC"] * self.dims["OH"] * self.dims["OW"]
        ps.append("XNUMEL: tl.constexpr" if xnumel.is_number else "XNUMEL")
        args.append("XNUMEL=nc * oh * ow")
        sig = ", ".join(["in0", "out0"] + ps + extra + ["BLOCK: tl.constexpr", "IDX64: tl.constexpr"])
        text = f"def {self.fn}({sig}):\n" + "".join(f"    {ln}\n" for ln in L)
        launch = [f"grid = (triton.cdiv(nc * oh * ow, {block}),)",
                  f"{self.fn}[grid](inputs[0], outputs[0], {', '.join(args)}, BLOCK={block}, IDX64=idx64, "
                  f"num_warps={warps})"]
        return text, launch

    def taps(self, header: list[str], tap: list[str], kh: int | str, kw: int | str, unroll: bool) -> list[str]:
        """Rows ``kh`` by columns ``kw`` of the window, ``header`` per row and ``tap`` per
        tap; the tap's load is ``v`` (0 where masked), its mask ``ok``."""
        load = f"v = tl.load(x + (ih * W + iw), mask=ok, other=0).to({self.acc})"
        return ([self.loop("kh", kh, unroll)] + [f"    {ln}" for ln in header]
                + [f"    {self.loop('kw', kw, unroll)}"] + [f"        {ln}" for ln in [*tap[:-1], load, tap[-1]]])

    def max_pool(self) -> list[str]:
        (KH, KW), (SH, SW), (PH, PW), (DH, DW) = self.window  # type: ignore[misc]
        return [f"h0 = oh * {SH} - {PH}", f"w0 = ow * {SW} - {PW}",
                f"res = tl.full([BLOCK], float('-inf'), {self.acc})"] + self.taps(
            [f"ih = h0 + kh * {DH}", "okh = m & (ih >= 0) & (ih < H)"],
            [f"iw = w0 + kw * {DW}", "ok = okh & (iw >= 0) & (iw < W)",
             "res = tl.where(ok & ((v > res) | (v != v)), v, res)"],
            KH, KW, KH * KW <= UNROLL_MAX)

    def avg_pool(self) -> list[str]:
        (KH, KW), (SH, SW), (PH, PW), _ = self.window  # type: ignore[misc]
        a = self.node.attrs
        div = a.get("divisor_override")
        L = [f"h0 = oh * {SH} - {PH}", f"w0 = ow * {SW} - {PW}",
             f"ph = tl.minimum(h0 + {KH}, H + {PH}) - h0", f"pw = tl.minimum(w0 + {KW}, W + {PW}) - w0",
             f"ch = tl.minimum(h0 + {KH}, H) - tl.maximum(h0, 0)",
             f"cw = tl.minimum(w0 + {KW}, W) - tl.maximum(w0, 0)",
             "empty = (ch <= 0) | (cw <= 0)",
             f"acc = tl.zeros([BLOCK], {self.acc})"]
        L += self.taps(["ih = h0 + kh", "okh = m & (ih >= 0) & (ih < H)"],
                       ["iw = w0 + kw", "ok = okh & (iw >= 0) & (iw < W)", "acc += v"],
                       KH, KW, KH * KW <= UNROLL_MAX)
        if div is not None:
            d = f"tl.full([BLOCK], {float(div)!r}, {self.acc})"
        elif a.get("count_include_pad", True):
            d = f"(ph * pw).to({self.acc})"
        else:
            d = f"tl.where(empty, 1, ch * cw).to({self.acc})"
        return L + [f"res = tl.where(empty, 0.0, {self.div('acc', d)})"]

    def adaptive(self) -> tuple[list[str], list[str], list[str]]:
        """The window rows and columns loop to ``KH``/``KW``: the largest window when the
        sizes are static, else a bound passed at launch."""
        extra: list[str] = []
        args: list[str] = []
        bounds: list[int | str] = []
        for n, i, o in (("KH", "H", "OH"), ("KW", "W", "OW")):
            if self.static(i, o):
                iv, ov = self.value(i), self.value(o)
                bounds.append(max(((j + 1) * iv + ov - 1) // ov - j * iv // ov for j in range(ov)))
            else:
                bounds.append(n)
                extra.append(n)
                args.append(f"{n}=min({i.lower()}, ({i.lower()} + {o.lower()} - 1) // {o.lower()} + 1)")
        kh, kw = bounds
        unroll = isinstance(kh, int) and isinstance(kw, int) and kh * kw <= UNROLL_MAX
        L = ["h0 = (oh * H) // OH", "h1 = ((oh + 1) * H + OH - 1) // OH",
             "w0 = (ow * W) // OW", "w1 = ((ow + 1) * W + OW - 1) // OW",
             f"acc = tl.zeros([BLOCK], {self.acc})"]
        L += self.taps(["ih = h0 + kh", "okh = m & (ih < h1)"],
                       ["iw = w0 + kw", "ok = okh & (iw < w1)", "acc += v"], kh, kw, unroll)
        L.append("res = " + self.div(self.div("acc", f"(h1 - h0).to({self.acc})"), f"(w1 - w0).to({self.acc})"))
        return L, extra, args

    # -- global average pool (1x1 adaptive) -------------------------------------------------------

    def global_pool(self) -> tuple[str, list[str]]:
        hw_static = self.static("H", "W")
        hw = str(self.value("H") * self.value("W")) if hw_static else "HW"
        # HW may arrive as a constexpr (Triton specialises an int argument equal to 1)
        hwf = repr(float(hw)) if hw_static else f"(tl.zeros([XBLOCK], {self.acc}) + HW)"
        L = self.prologue() + [
            "rows = pid * XBLOCK + tl.arange(0, XBLOCK)",
            "rm = rows < ROWS",
            f"acc = tl.zeros([XBLOCK, RBLOCK], {self.acc})",
            f"for off in range(0, {hw}, RBLOCK):",
            "    c = off + tl.arange(0, RBLOCK)",
            f"    ok = rm[:, None] & (c < {hw})[None, :]",
            f"    acc += tl.load(in0 + (rows[:, None] * {hw} + c[None, :]), mask=ok, other=0).to({self.acc})",
            "res = " + self.div("tl.sum(acc, 1)", hwf),
            f"tl.store(out0 + rows, res.to({self.out_ty}), mask=rm)",
        ]
        sig = ", ".join(["in0", "out0", "ROWS"] + ([] if hw_static else ["HW"])
                        + ["XBLOCK: tl.constexpr", "RBLOCK: tl.constexpr", "IDX64: tl.constexpr"])
        text = f"def {self.fn}({sig}):\n" + "".join(f"    {ln}\n" for ln in L)
        c = self.config
        if c is not None:
            blocks = [f"xb, rb = {c.xblock}, {c.rblock}"]
        else:
            blocks = [f"rb = min({RBLOCK_MAX}, triton.next_power_of_2(h * w))",
                      f"xb = min(max(1, {ROWS_X_COLS} // rb), triton.next_power_of_2(nc))"]
        warps = c.num_warps if c is not None else 4
        launch = blocks + [
            f"{self.fn}[(triton.cdiv(nc, xb),)](inputs[0], outputs[0], nc, "
            + ("" if hw_static else "h * w, ") + f"XBLOCK=xb, RBLOCK=rb, IDX64=idx64, num_warps={warps})"]
        return text, launch
