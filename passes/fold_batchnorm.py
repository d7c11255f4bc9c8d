"""(being written)"""
from effc.ir import Graph
from effc.options import Options
from .manager import PassResult

NAME = "fold_batchnorm"


def run(graph: Graph, options: Options) -> PassResult:
    return PassResult(graph, False)
