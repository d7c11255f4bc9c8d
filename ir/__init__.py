"""effc's graph IR: dtypes, symbolic tensor types, ops and their rules, graphs, text, verifier."""

from .analysis import to_networkx
from .attrs import InputRef, TorchObj
from .dtypes import DType
from .graph import Graph, GraphBuilder, Node, Value, sanitize_name
from .ops import Family, Op
from .parser import ParseError, parse_graph
from .printer import print_graph
from .shape_rules import infer
from .verify import VerificationError, verify
from .types import Dim, ShapeError, TensorType, broadcast_shapes, size_symbol

__all__ = [
    "DType", "Dim", "Family", "Graph", "GraphBuilder", "InputRef", "Node", "Op", "ShapeError",
    "TensorType", "TorchObj", "Value", "broadcast_shapes", "infer", "print_graph", "sanitize_name",
    "size_symbol", "ParseError", "parse_graph", "VerificationError", "verify", "to_networkx",
]
