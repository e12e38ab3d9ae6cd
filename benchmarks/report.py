"""How a benchmark prints its figures: one aligned line each, then all of them as JSON."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["print_report"]


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
