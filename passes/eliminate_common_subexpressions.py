"""(being written)"""
from effc.ir import Graph
from effc.options import Options
from .manager import PassResult

NAME = "eliminate_common_subexpressions"


def run(graph: Graph, options: Options) -> PassResult:
    return PassResult(graph, False)
