"""Where benchmark scripts put their results: ``benchmarks/results/<name>-<date>-cpu.{json,md}``."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_results(name: str, result: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
                  out: str | None = None) -> str:
    """Write ``result`` as JSON (``out``, or the dated default) and its markdown beside it;
    print the markdown and return the JSON path."""
    path = out or os.path.join(RESULTS, f"{name}-{result['date']}-cpu.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    text = markdown(result)
    with open(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write(text)
    print(text)
    return path
