"""How a benchmark prints its figures (one aligned line each, then all of them as JSON), and
where a long one is, on standard error."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

__all__ = ["print_report", "progress", "table"]


def print_report(report: dict[str, Any]) -> None:
    """Print ``report`` as ``key  value`` lines, then as one line of JSON.

    >>> print_report({"updates": 3, "rate_per_s": 1.5})
    updates     3
    rate_per_s  1.5
    {"updates": 3, "rate_per_s": 1.5}
    """
    width = max(len(key) for key in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(report))


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """``rows`` as aligned columns, floats to three significant figures.

    >>> print(table([{"privacy": "local", "release_ms": 1.0531}], ("privacy", "release_ms")))
        privacy   release_ms
          local         1.05
    """
    lines = ["  ".join(f"{column:>11}" for column in columns)]
    for row in rows:
        lines.append("  ".join(f"{row[c]:>11.3g}" if isinstance(row[c], float) else
                               f"{row[c]!s:>11}" for c in columns))
    return "\n".join(lines)


def progress(message: str) -> None:
    """One line on standard error of where a long benchmark is; its figures go to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
