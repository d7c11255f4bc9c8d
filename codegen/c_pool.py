"""2-D pooling over NCHW in C: the function of an ``op`` kernel whose ``Template(op="node")``
node is a max pool, an avg pool or an adaptive avg pool ([Note: C kernel ABI]).

[Note: C pooling]
- One plain loop nest, no scratch (``(void)scratch;``), nothing allocated. The (N, C, output
  row) loops run in parallel (``collapse(3)``, only above ``PARALLEL_MIN`` points of work);
  per output row the window's valid rows are found once, and the output columns split into
  a left border, an interior whose every tap lies inside the input, and a right border
  (taps bounds-checked one by one). The interior accumulates in the output row itself, tap
  by tap in torch's order, each tap a ``#pragma omp simd`` loop over the output columns
  (GCC does not vectorise an outer loop around variable-bound window loops).
- Results match eager torch's CPU kernels, which the loops copy:
  * max pool: start at -inf, visit the valid taps row-major, take ``v`` when
    ``v > m || isnan(v)`` (so a NaN wins and stays, and ties keep the first); a window with
    no valid tap gives -inf.
  * avg pool: ``ih0 = oh*s - p``, ``ih1 = min(ih0 + k, H + p)``, ``pool = (ih1-ih0)*(iw1-iw0)``
    before clipping to the input; the divisor is ``divisor_override``, else ``pool`` when
    ``count_include_pad`` else the clipped count; the sum runs row-major in the element type
    and is divided once (``sum / (T)divisor``); an empty clipped window stores 0.
  * adaptive avg pool: ``start = floor(i*in/out)``, ``end = ceil((i+1)*in/out)``,
    ``sum / kh / kw`` as torch divides; a 1x1 output (torch computes ``mean``) is one
    vectorised sum over H*W divided by H*W (reassociated, as the ABI allows for reductions).
- Sizes may be symbolic: every extent is read from the kernel's buffer shapes (the output's
  shape is the shape rule's), printed through ``c_expr`` over the size locals.
Anything else (other ranks, integer or half dtypes, 1-d/3-d pools, adaptive max pool) is
None: the caller keeps the Python fallback.
"""

from __future__ import annotations

from typing import Any, Iterable

import sympy

from effc.ir import DType, Op
from effc.ir.kernel import Kernel

from .c_abi import buffer_params, c_expr, c_type, kernel_signature, size_locals, size_name
from .c_loops import PARALLEL_MIN

__all__ = ["pool_function", "int_pair"]

_DTYPES = (DType.F32, DType.F64)


def int_pair(v: Any) -> tuple[int, int] | None:
    """A pooling attribute (one int or two) as (rows, columns); None when it is neither."""
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    try:
        t = tuple(v)
    except TypeError:
        return None
    if len(t) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in t):
        return None
    return (int(t[0]), int(t[1]))


def pool_function(kernel: Kernel, symbols: Iterable[sympy.Symbol]) -> str | None:
    """The C function of ``kernel`` per [Note: C pooling], or None when it is not a 2-D
    NCHW float pool this module covers. ``symbols`` are the program's size symbols."""
    t = kernel.template
    if kernel.kind != "op" or t is None or t.op != "node" or t.node is None:
        return None
    node = t.node
    if node.op not in (Op.MAX_POOL, Op.AVG_POOL, Op.ADAPTIVE_AVG_POOL):
        return None
    if len(kernel.inputs) != 1 or len(kernel.outputs) != 1:
        return None
    x, y = kernel.inputs[0], kernel.outputs[0]
    if x.dtype not in _DTYPES or y.dtype is not x.dtype or len(x.shape) != 4 or len(y.shape) != 4:
        return None
    symbols = list(symbols)
    dims = [sympy.sympify(d) for d in x.shape + y.shape]
    used = {s for d in dims for s in d.free_symbols if isinstance(s, sympy.Symbol)}
    if not used <= set(symbols):
        return None
    names = {s: size_name(s) for s in used}
    N, C, H, W, _, _, OH, OW = (c_expr(d, names) for d in dims)
    a = node.attrs
    T = c_type(x.dtype)
    params = buffer_params(kernel)
    ctx = dict(T=T, X=params[x.name], Y=params[y.name], N=N, C=C, H=H, W=W, OH=OH, OW=OW)
    if node.op is Op.ADAPTIVE_AVG_POOL:
        out = int_pair(a.get("output_size"))
        if out is None:
            return None
        body = _adaptive(ctx, out)
    else:
        k, s, p = int_pair(a.get("kernel")), int_pair(a.get("stride")), int_pair(a.get("padding"))
        d = int_pair(a.get("dilation", (1, 1))) if node.op is Op.MAX_POOL else (1, 1)
        if k is None or s is None or p is None or d is None:
            return None
        if min(k + s + d) < 1 or min(p) < 0:
            return None
        ctx.update(KH=k[0], KW=k[1], SH=s[0], SW=s[1], PH=p[0], PW=p[1], DH=d[0], DW=d[1])
        if node.op is Op.MAX_POOL:
            body = _max_pool(ctx)
        else:
            div = a.get("divisor_override")
            if div is not None and (not isinstance(div, int) or isinstance(div, bool) or div == 0):
                return None
            body = _avg_pool(ctx, bool(a.get("count_include_pad", True)), div)
    head = (kernel_signature(kernel) + " {\n    (void)scratch;\n" + size_locals(symbols, used)
            + "    const int64_t p_N = {N}, p_C = {C}, p_H = {H}, p_W = {W}, p_OH = {OH}, p_OW = {OW};\n"
            .format(**ctx))
    return head + body + "}\n"


def _fmt(text: str, ctx: dict) -> str:
    return text.replace("{{", "\x00").replace("}}", "\x01").format(**ctx).replace("\x00", "{").replace("\x01", "}")


_OUTER = """\
    #pragma omp parallel for collapse(3) if(parallel: p_N*p_C*p_OH*p_OW*{TAPS} >= {PMIN})
    for (int64_t p_n = 0; p_n < p_N; p_n++)
    for (int64_t p_c = 0; p_c < p_C; p_c++)
    for (int64_t p_oh = 0; p_oh < p_OH; p_oh++) {{
        const {T} *EFFC_RESTRICT p_x = {X} + (p_n*p_C + p_c)*p_H*p_W;
        {T} *EFFC_RESTRICT p_y = {Y} + ((p_n*p_C + p_c)*p_OH + p_oh)*p_OW;
"""

# interior columns: every tap ``ow*SW - PW + kw*DW`` of the row lies in [0, W)
_COLUMNS = """\
    int64_t p_lo = ({PW} + {SW} - 1) / {SW};
    const int64_t p_last = p_W - 1 - ({KW} - 1)*{DW} + {PW};
    int64_t p_hi = p_last >= 0 ? p_last / {SW} + 1 : 0;
    if (p_lo > p_OW) p_lo = p_OW;
    if (p_hi > p_OW) p_hi = p_OW;
    if (p_hi < p_lo) p_hi = p_lo;
"""


def _max_pool(ctx: dict) -> str:
    ctx = dict(ctx, TAPS=ctx["KH"] * ctx["KW"], PMIN=PARALLEL_MIN)
    border = """\
            {{
                {T} p_m = -INFINITY;
                const int64_t p_w0 = p_ow*{SW} - {PW};
                for (int64_t p_kh = p_kh0; p_kh < p_kh1; p_kh++) {{
                    const {T} *p_r = p_x + (p_h0 + p_kh*{DH})*p_W;
                    for (int64_t p_kw = 0; p_kw < {KW}; p_kw++) {{
                        const int64_t p_iw = p_w0 + p_kw*{DW};
                        if (p_iw < 0 || p_iw >= p_W) continue;
                        const {T} p_v = p_r[p_iw];
                        p_m = (p_v > p_m || p_v != p_v) ? p_v : p_m;
                    }}
                }}
                p_y[p_ow] = p_m;
            }}
"""
    text = _COLUMNS + _OUTER + """\
        const int64_t p_h0 = p_oh*{SH} - {PH};
        /* the valid taps of this row: p_h0 + kh*DH in [0, H) for kh in [p_kh0, p_kh1) */
        const int64_t p_kh0 = p_h0 < 0 ? (-p_h0 + {DH} - 1) / {DH} : 0;
        int64_t p_kh1 = p_H - p_h0 > 0 ? (p_H - p_h0 + {DH} - 1) / {DH} : 0;
        if (p_kh1 > {KH}) p_kh1 = {KH};
        for (int64_t p_ow = 0; p_ow < p_lo; p_ow++)
""" + border + """\
        /* the interior accumulates in the output row, taps row-major as torch visits them,
           with the output columns innermost (contiguous or strided vector loads) */
        for (int64_t p_ow = p_lo; p_ow < p_hi; p_ow++) p_y[p_ow] = -INFINITY;
        for (int64_t p_kh = p_kh0; p_kh < p_kh1; p_kh++) {{
            const {T} *p_r = p_x + (p_h0 + p_kh*{DH})*p_W - {PW};
            for (int64_t p_kw = 0; p_kw < {KW}; p_kw++) {{
                const {T} *p_t = p_r + p_kw*{DW};
                #pragma omp simd
                for (int64_t p_ow = p_lo; p_ow < p_hi; p_ow++) {{
                    const {T} p_v = p_t[p_ow*{SW}];
                    const {T} p_m = p_y[p_ow];
                    p_y[p_ow] = ((p_v > p_m) | (p_v != p_v)) ? p_v : p_m;
                }}
            }}
        }}
        for (int64_t p_ow = p_hi; p_ow < p_OW; p_ow++)
""" + border + """\
    }}
"""
    return _fmt(text, ctx)


def _avg_pool(ctx: dict, include_pad: bool, divisor: int | None) -> str:
    ctx = dict(ctx, TAPS=ctx["KH"] * ctx["KW"], PMIN=PARALLEL_MIN, DIV=divisor or 0)
    if divisor is not None:
        border_div, inner_div = "(int64_t){DIV}", "(int64_t){DIV}"
    elif include_pad:
        border_div, inner_div = "p_ph*p_pw", "p_ph*{KW}"
    else:
        border_div, inner_div = "(p_ih1 - p_ih0)*(p_iw1 - p_iw0)", "(p_ih1 - p_ih0)*{KW}"
    border = """\
            {{
                int64_t p_iw0 = p_ow*{SW} - {PW};
                int64_t p_iw1 = p_iw0 + {KW} < p_W + {PW} ? p_iw0 + {KW} : p_W + {PW};
                const int64_t p_pw = p_iw1 - p_iw0;
                if (p_iw0 < 0) p_iw0 = 0;
                if (p_iw1 > p_W) p_iw1 = p_W;
                {T} p_s = 0;
                if (p_ih0 < p_ih1 && p_iw0 < p_iw1) {{
                    for (int64_t p_ih = p_ih0; p_ih < p_ih1; p_ih++)
                        for (int64_t p_iw = p_iw0; p_iw < p_iw1; p_iw++)
                            p_s += p_x[p_ih*p_W + p_iw];
                    p_s = p_s / ({T})(BORDER_DIV);
                }}
                p_y[p_ow] = p_s;
            }}
""".replace("BORDER_DIV", border_div)
    # interior columns: the whole window [ow*SW - PW, +KW) inside [0, W)
    text = _fmt(_COLUMNS, dict(ctx, DW=1)) + _fmt(_OUTER + """\
        int64_t p_ih0 = p_oh*{SH} - {PH};
        int64_t p_ih1 = p_ih0 + {KH} < p_H + {PH} ? p_ih0 + {KH} : p_H + {PH};
        const int64_t p_ph = p_ih1 - p_ih0;
        if (p_ih0 < 0) p_ih0 = 0;
        if (p_ih1 > p_H) p_ih1 = p_H;
        for (int64_t p_ow = 0; p_ow < p_lo; p_ow++)
""" + border + """\
        if (p_ih0 < p_ih1) {{
            const {T} p_d = ({T})(INNER_DIV);
            for (int64_t p_ow = p_lo; p_ow < p_hi; p_ow++) p_y[p_ow] = 0;
            for (int64_t p_ih = p_ih0; p_ih < p_ih1; p_ih++) {{
                const {T} *p_r = p_x + p_ih*p_W - {PW};
                for (int64_t p_kw = 0; p_kw < {KW}; p_kw++) {{
                    const {T} *p_t = p_r + p_kw;
                    #pragma omp simd
                    for (int64_t p_ow = p_lo; p_ow < p_hi; p_ow++) p_y[p_ow] += p_t[p_ow*{SW}];
                }}
            }}
            #pragma omp simd
            for (int64_t p_ow = p_lo; p_ow < p_hi; p_ow++) p_y[p_ow] = p_y[p_ow] / p_d;
        }} else {{
            for (int64_t p_ow = p_lo; p_ow < p_hi; p_ow++) p_y[p_ow] = 0;
        }}
        for (int64_t p_ow = p_hi; p_ow < p_OW; p_ow++)
""" + border + """\
    }}
""", ctx).replace("INNER_DIV", _fmt(inner_div, ctx))
    return text


def _adaptive(ctx: dict, out: tuple[int, int]) -> str:
    ctx = dict(ctx, PMIN=PARALLEL_MIN)
    if out == (1, 1):
        return _fmt("""\
    const int64_t p_hw = p_H*p_W;
    #pragma omp parallel for collapse(2) if(parallel: p_N*p_C*p_hw >= {PMIN})
    for (int64_t p_n = 0; p_n < p_N; p_n++)
    for (int64_t p_c = 0; p_c < p_C; p_c++) {{
        const {T} *EFFC_RESTRICT p_x = {X} + (p_n*p_C + p_c)*p_hw;
        {T} p_s = 0;
        #pragma omp simd reduction(+:p_s)
        for (int64_t p_i = 0; p_i < p_hw; p_i++) p_s += p_x[p_i];
        {Y}[p_n*p_C + p_c] = p_s / ({T})p_hw;
    }}
""", ctx)
    return _fmt("""\
    const int64_t p_taps = (p_H + p_OH - 1) / p_OH * ((p_W + p_OW - 1) / p_OW);
    #pragma omp parallel for collapse(3) if(parallel: p_N*p_C*p_OH*p_OW*p_taps >= {PMIN})
    for (int64_t p_n = 0; p_n < p_N; p_n++)
    for (int64_t p_c = 0; p_c < p_C; p_c++)
    for (int64_t p_oh = 0; p_oh < p_OH; p_oh++) {{
        const {T} *EFFC_RESTRICT p_x = {X} + (p_n*p_C + p_c)*p_H*p_W;
        {T} *EFFC_RESTRICT p_y = {Y} + ((p_n*p_C + p_c)*p_OH + p_oh)*p_OW;
        const int64_t p_ih0 = p_oh*p_H / p_OH, p_ih1 = ((p_oh + 1)*p_H + p_OH - 1) / p_OH;
        const {T} p_kh = ({T})(p_ih1 - p_ih0);
        if (p_W % p_OW == 0) {{
            const int64_t p_k = p_W / p_OW;
            const {T} p_kw = ({T})p_k;
            for (int64_t p_ow = 0; p_ow < p_OW; p_ow++) p_y[p_ow] = 0;
            for (int64_t p_ih = p_ih0; p_ih < p_ih1; p_ih++) {{
                const {T} *p_r = p_x + p_ih*p_W;
                for (int64_t p_j = 0; p_j < p_k; p_j++) {{
                    const {T} *p_t = p_r + p_j;
                    #pragma omp simd
                    for (int64_t p_ow = 0; p_ow < p_OW; p_ow++) p_y[p_ow] += p_t[p_ow*p_k];
                }}
            }}
            #pragma omp simd
            for (int64_t p_ow = 0; p_ow < p_OW; p_ow++) p_y[p_ow] = p_y[p_ow] / p_kh / p_kw;
        }} else {{
            for (int64_t p_ow = 0; p_ow < p_OW; p_ow++) {{
                const int64_t p_iw0 = p_ow*p_W / p_OW, p_iw1 = ((p_ow + 1)*p_W + p_OW - 1) / p_OW;
                {T} p_s = 0;
                for (int64_t p_ih = p_ih0; p_ih < p_ih1; p_ih++)
                    for (int64_t p_iw = p_iw0; p_iw < p_iw1; p_iw++)
                        p_s += p_x[p_ih*p_W + p_iw];
                p_y[p_ow] = p_s / p_kh / ({T})(p_iw1 - p_iw0);
            }}
        }}
    }}
""", ctx)
