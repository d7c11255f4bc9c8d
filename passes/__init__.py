"""effc's passes and the one ordered pipeline that runs them.

Nothing registers itself by being imported: this list is the pipeline. A pass's name is the
same here, in ``options={"disable_passes": [...]}``, on the command line, and in its test file.
"""

from __future__ import annotations

from . import (eliminate_common_subexpressions, eliminate_dead_code, fold_batchnorm,
               fold_constants, fuse, plan_memory, simplify, tile_attention)
from .manager import PassFn, PassRecord, PassResult, run_pipeline

PIPELINE: tuple[tuple[str, PassFn], ...] = (
    (simplify.NAME, simplify.run),
    (fold_constants.NAME, fold_constants.run),
    (fold_batchnorm.NAME, fold_batchnorm.run),
    (eliminate_common_subexpressions.NAME, eliminate_common_subexpressions.run),
    (eliminate_dead_code.NAME, eliminate_dead_code.run),
    (tile_attention.NAME, tile_attention.run),
    (fuse.NAME, fuse.run),
    (plan_memory.NAME, plan_memory.run),
)
PASS_NAMES: tuple[str, ...] = tuple(name for name, _ in PIPELINE)

__all__ = ["PASS_NAMES", "PIPELINE", "PassFn", "PassRecord", "PassResult", "run_pipeline"]
