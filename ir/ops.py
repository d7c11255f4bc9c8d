"""The effc op vocabulary: one enum, and for each op its family and attribute names.

Frontends map framework ops onto these through one table (``effc.frontends.aten_table``);
after the frontend no string op name survives except inside ``extern`` nodes, which call a
torch op by its qualified name. Shape and dtype rules live in ``shape_rules``.
"""

from __future__ import annotations

import enum


class Family(enum.Enum):
    UNARY = "unary"            # elementwise, one input
    BINARY = "binary"          # elementwise, two broadcast inputs
    COMPARE = "compare"        # elementwise, two inputs, bool result
    TERNARY = "ternary"        # where
    CAST = "cast"
    REDUCE = "reduce"
    SCAN = "scan"
    MATMUL = "matmul"
    CONV = "conv"
    POOL = "pool"
    NORM = "norm"
    SOFTMAX = "softmax"
    LAYOUT = "layout"          # views and data movement without arithmetic
    INDEX = "index"            # gather-like
    CREATE = "create"          # no tensor inputs
    ATTENTION = "attention"
    CONSTANT = "constant"
    EXTERN = "extern"
    KERNEL = "kernel"          # a fused group: its subgraph is the ``body`` attribute


class Op(enum.Enum):
    # unary: same dtype as the input
    NEG = "neg"; ABS = "abs"; RELU = "relu"; FLOOR = "floor"; CEIL = "ceil"  # noqa: E702
    ROUND = "round"; TRUNC = "trunc"; SIGN = "sign"; BITWISE_NOT = "bitwise_not"  # noqa: E702
    HARDTANH = "hardtanh"; LEAKY_RELU = "leaky_relu"  # noqa: E702
    # unary: integer inputs compute in the default float type
    EXP = "exp"; EXP2 = "exp2"; EXPM1 = "expm1"; LOG = "log"; LOG2 = "log2"  # noqa: E702
    LOG10 = "log10"; LOG1P = "log1p"; SQRT = "sqrt"; RSQRT = "rsqrt"  # noqa: E702
    RECIPROCAL = "reciprocal"; SIN = "sin"; COS = "cos"; TAN = "tan"; ASIN = "asin"  # noqa: E702
    ACOS = "acos"; ATAN = "atan"; SINH = "sinh"; COSH = "cosh"; TANH = "tanh"  # noqa: E702
    ASINH = "asinh"; ACOSH = "acosh"; ATANH = "atanh"; SIGMOID = "sigmoid"; ERF = "erf"  # noqa: E702
    ERFINV = "erfinv"; SILU = "silu"; GELU = "gelu"; HARDSWISH = "hardswish"  # noqa: E702
    HARDSIGMOID = "hardsigmoid"; SOFTPLUS = "softplus"; ELU = "elu"  # noqa: E702
    # unary: bool result
    LOGICAL_NOT = "logical_not"; ISNAN = "isnan"; ISINF = "isinf"  # noqa: E702
    # binary
    ADD = "add"; SUB = "sub"; MUL = "mul"; DIV = "div"; POW = "pow"  # noqa: E702
    MAXIMUM = "maximum"; MINIMUM = "minimum"; FMOD = "fmod"; REMAINDER = "remainder"  # noqa: E702
    ATAN2 = "atan2"; BITWISE_AND = "bitwise_and"; BITWISE_OR = "bitwise_or"  # noqa: E702
    BITWISE_XOR = "bitwise_xor"  # noqa: E702
    # compare (bool result)
    EQ = "eq"; NE = "ne"; LT = "lt"; LE = "le"; GT = "gt"; GE = "ge"  # noqa: E702
    LOGICAL_AND = "logical_and"; LOGICAL_OR = "logical_or"; LOGICAL_XOR = "logical_xor"  # noqa: E702
    # ternary and clamps
    WHERE = "where"; CLAMP = "clamp"  # noqa: E702
    CAST = "cast"
    # reductions
    SUM = "sum"; MEAN = "mean"; AMAX = "amax"; AMIN = "amin"; PROD = "prod"  # noqa: E702
    ARGMAX = "argmax"; ARGMIN = "argmin"; VAR = "var"; STD = "std"  # noqa: E702
    ANY = "any"; ALL = "all"  # noqa: E702
    CUMSUM = "cumsum"
    # linear algebra and convolution
    MATMUL = "matmul"; ADDMM = "addmm"; LINEAR = "linear"  # noqa: E702
    CONVOLUTION = "convolution"
    MAX_POOL = "max_pool"; AVG_POOL = "avg_pool"  # noqa: E702
    ADAPTIVE_AVG_POOL = "adaptive_avg_pool"; ADAPTIVE_MAX_POOL = "adaptive_max_pool"  # noqa: E702
    BATCH_NORM = "batch_norm"; LAYER_NORM = "layer_norm"; GROUP_NORM = "group_norm"  # noqa: E702
    RMS_NORM = "rms_norm"  # noqa: E702
    SOFTMAX = "softmax"; LOG_SOFTMAX = "log_softmax"  # noqa: E702
    # layout
    RESHAPE = "reshape"; PERMUTE = "permute"; EXPAND = "expand"; SQUEEZE = "squeeze"  # noqa: E702
    UNSQUEEZE = "unsqueeze"; SLICE = "slice"; SELECT = "select"; CAT = "cat"  # noqa: E702
    SPLIT = "split"; PAD = "pad"  # noqa: E702
    # indexing
    GATHER = "gather"; INDEX_SELECT = "index_select"; EMBEDDING = "embedding"  # noqa: E702
    # creation
    ARANGE = "arange"; FULL = "full"  # noqa: E702
    SDPA = "scaled_dot_product_attention"
    CONSTANT = "constant"
    EXTERN = "extern"
    KERNEL = "kernel"

    def __str__(self) -> str:
        return self.value

    @property
    def family(self) -> Family:
        return FAMILY[self]

    @property
    def attr_names(self) -> tuple[str, ...]:
        return ATTRS.get(self, ())


U_SAME = {Op.NEG, Op.ABS, Op.RELU, Op.FLOOR, Op.CEIL, Op.ROUND, Op.TRUNC, Op.SIGN,
          Op.BITWISE_NOT, Op.HARDTANH, Op.LEAKY_RELU}
U_FLOAT = {Op.EXP, Op.EXP2, Op.EXPM1, Op.LOG, Op.LOG2, Op.LOG10, Op.LOG1P, Op.SQRT, Op.RSQRT,
           Op.RECIPROCAL, Op.SIN, Op.COS, Op.TAN, Op.ASIN, Op.ACOS, Op.ATAN, Op.SINH, Op.COSH,
           Op.TANH, Op.ASINH, Op.ACOSH, Op.ATANH, Op.SIGMOID, Op.ERF, Op.ERFINV, Op.SILU, Op.GELU,
           Op.HARDSWISH, Op.HARDSIGMOID, Op.SOFTPLUS, Op.ELU}
U_BOOL = {Op.LOGICAL_NOT, Op.ISNAN, Op.ISINF}
BINARY = {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MAXIMUM, Op.MINIMUM, Op.FMOD, Op.REMAINDER,
          Op.ATAN2, Op.BITWISE_AND, Op.BITWISE_OR, Op.BITWISE_XOR}
COMPARE = {Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE, Op.LOGICAL_AND, Op.LOGICAL_OR,
           Op.LOGICAL_XOR}

FAMILY: dict[Op, Family] = {
    **{op: Family.UNARY for op in U_SAME | U_FLOAT | U_BOOL | {Op.CLAMP}},
    **{op: Family.BINARY for op in BINARY},
    **{op: Family.COMPARE for op in COMPARE},
    Op.WHERE: Family.TERNARY, Op.CAST: Family.CAST,
    **{op: Family.REDUCE for op in (Op.SUM, Op.MEAN, Op.AMAX, Op.AMIN, Op.PROD, Op.ARGMAX,
                                    Op.ARGMIN, Op.VAR, Op.STD, Op.ANY, Op.ALL)},
    Op.CUMSUM: Family.SCAN,
    Op.MATMUL: Family.MATMUL, Op.ADDMM: Family.MATMUL, Op.LINEAR: Family.MATMUL,
    Op.CONVOLUTION: Family.CONV,
    **{op: Family.POOL for op in (Op.MAX_POOL, Op.AVG_POOL, Op.ADAPTIVE_AVG_POOL,
                                  Op.ADAPTIVE_MAX_POOL)},
    **{op: Family.NORM for op in (Op.BATCH_NORM, Op.LAYER_NORM, Op.GROUP_NORM, Op.RMS_NORM)},
    Op.SOFTMAX: Family.SOFTMAX, Op.LOG_SOFTMAX: Family.SOFTMAX,
    **{op: Family.LAYOUT for op in (Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SQUEEZE, Op.UNSQUEEZE,
                                    Op.SLICE, Op.SELECT, Op.CAT, Op.SPLIT, Op.PAD)},
    **{op: Family.INDEX for op in (Op.GATHER, Op.INDEX_SELECT, Op.EMBEDDING)},
    Op.ARANGE: Family.CREATE, Op.FULL: Family.CREATE,
    Op.SDPA: Family.ATTENTION, Op.CONSTANT: Family.CONSTANT, Op.EXTERN: Family.EXTERN,
    Op.KERNEL: Family.KERNEL,
}

_REDUCE_ATTRS = ("dims", "keepdim")
# Attribute names per op, in printing order. Every node carries exactly these keys.
ATTRS: dict[Op, tuple[str, ...]] = {
    Op.GELU: ("approximate",),
    Op.HARDTANH: ("min_val", "max_val"),
    Op.LEAKY_RELU: ("negative_slope",),
    Op.SOFTPLUS: ("beta", "threshold"),
    Op.ELU: ("alpha", "scale", "input_scale"),
    Op.DIV: ("rounding_mode",),
    Op.CLAMP: ("min", "max"),
    Op.CAST: ("dtype",),
    Op.SUM: ("dims", "keepdim", "dtype"),
    Op.MEAN: _REDUCE_ATTRS, Op.AMAX: _REDUCE_ATTRS, Op.AMIN: _REDUCE_ATTRS,
    Op.PROD: _REDUCE_ATTRS, Op.ANY: _REDUCE_ATTRS, Op.ALL: _REDUCE_ATTRS,
    Op.ARGMAX: ("dim", "keepdim"), Op.ARGMIN: ("dim", "keepdim"),
    Op.VAR: ("dims", "correction", "keepdim"), Op.STD: ("dims", "correction", "keepdim"),
    Op.CUMSUM: ("dim", "dtype"),
    Op.ADDMM: ("beta", "alpha"),
    Op.CONVOLUTION: ("stride", "padding", "dilation", "groups", "transposed", "output_padding"),
    Op.MAX_POOL: ("kernel", "stride", "padding", "dilation", "ceil_mode"),
    Op.AVG_POOL: ("kernel", "stride", "padding", "ceil_mode", "count_include_pad",
                  "divisor_override"),
    Op.ADAPTIVE_AVG_POOL: ("output_size",), Op.ADAPTIVE_MAX_POOL: ("output_size",),
    Op.BATCH_NORM: ("eps", "has_weight", "has_bias"),
    Op.LAYER_NORM: ("normalized_shape", "eps", "has_weight", "has_bias"),
    Op.GROUP_NORM: ("groups", "eps", "has_weight", "has_bias"),
    Op.RMS_NORM: ("normalized_shape", "eps", "has_weight"),
    Op.SOFTMAX: ("dim",), Op.LOG_SOFTMAX: ("dim",),
    Op.RESHAPE: ("shape",), Op.PERMUTE: ("dims",), Op.EXPAND: ("shape",),
    Op.SQUEEZE: ("dims",), Op.UNSQUEEZE: ("dim",),
    Op.SLICE: ("dim", "start", "end", "step"), Op.SELECT: ("dim", "index"),
    Op.CAT: ("dim",), Op.SPLIT: ("dim", "sizes"), Op.PAD: ("pads", "mode", "value"),
    Op.GATHER: ("dim",), Op.INDEX_SELECT: ("dim",), Op.EMBEDDING: ("padding_idx",),
    Op.ARANGE: ("start", "end", "step", "dtype"), Op.FULL: ("shape", "value", "dtype"),
    Op.SDPA: ("scale", "is_causal", "enable_gqa"),
    Op.CONSTANT: ("name",),
    Op.EXTERN: ("target", "args", "kwargs"),
    # kind and params: see [Note: kernel groups] in ir/kernel_node.py
    Op.KERNEL: ("kind", "name", "params", "body"),
}

# Ops whose result is fully determined by their inputs and attributes, with no side effect:
# everything except extern, whose torch op may be random (dropout) or stateful, and kernel,
# whose body may hold an extern.
PURE = frozenset(op for op in Op if op not in (Op.EXTERN, Op.KERNEL))
