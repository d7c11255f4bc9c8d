"""Debug switches, read from the environment once, at import.

EFFC_DUMP_DIR  folder: the IR after every pass, pass timings, generated kernels
EFFC_VERIFY    1: run the verifier after every pass (on in the test suite)
EFFC_EXPLAIN   1: log every decision and rejected match with its reason
EFFC_LOG       log level for the "effc" logger (debug, info, warning; default warning)
EFFC_CACHE     0: no whole-program cache (the default of option ``cache``; on when unset)
EFFC_CACHE_LIMIT  bytes the whole-program cache may hold ("8GiB", the default; "512MB", ...)
"""

from __future__ import annotations

import logging
import os

DUMP_DIR: str | None = os.environ.get("EFFC_DUMP_DIR") or None
VERIFY: bool = os.environ.get("EFFC_VERIFY", "0") not in ("", "0", "false", "no")
EXPLAIN: bool = os.environ.get("EFFC_EXPLAIN", "0") not in ("", "0", "false", "no")
LOG_LEVEL: str = os.environ.get("EFFC_LOG", "warning").upper()
CACHE: bool = os.environ.get("EFFC_CACHE", "1").lower() not in ("", "0", "false", "no", "off")
CACHE_LIMIT: str = os.environ.get("EFFC_CACHE_LIMIT") or "8GiB"

log = logging.getLogger("effc")
if not log.handlers:
    _h = logging.StreamHandler()
    _h.setFormatter(logging.Formatter("[effc] %(levelname)s %(message)s"))
    log.addHandler(_h)
    log.propagate = False
log.setLevel(getattr(logging, LOG_LEVEL, logging.WARNING))
