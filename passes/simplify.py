"""(being written)"""
from effc.ir import Graph
from effc.options import Options
from .manager import PassResult

NAME = "simplify"


def run(graph: Graph, options: Options) -> PassResult:
    return PassResult(graph, False)
