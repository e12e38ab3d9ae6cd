"""Per-device state as arrays with one row per device, moved between a fleet and a stretch.

The vectorised replay keeps every device's state in arrays (:mod:`analytics.moments`,
:mod:`analytics.policies`, :mod:`analytics.models`). While the same devices read, it works on
compact copies of their rows; :meth:`Stack.take` makes them and :meth:`Stack.put` writes them
back when devices join or leave.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Self

import numpy as np

__all__ = ["Stack"]


class Stack:
    """Arrays named in ``ROWS`` with one row per device (a nested :class:`Stack` counts as one).

    Examples
    --------
    >>> class Counts(Stack):
    ...     ROWS = ("seen",)
    ...     def __init__(self, size: int) -> None:
    ...         self.seen = np.zeros(size, dtype=int)
    >>> fleet = Counts(4)
    >>> part = fleet.take(np.array([3, 1]))
    >>> part.seen += [5, 7]
    >>> fleet.put(np.array([3, 1]), part)
    >>> fleet.seen.tolist()
    [0, 7, 0, 5]
    """

    ROWS: ClassVar[tuple[str, ...]] = ()

    def take(self, rows: np.ndarray) -> Self:
        """A copy holding only ``rows``, in their order."""
        part = copy.copy(self)
        for name in self.ROWS:
            value = getattr(self, name)
            setattr(part, name, value.take(rows) if isinstance(value, Stack) else value[rows])
        return part

    def put(self, rows: np.ndarray, part: Self) -> None:
        """Write ``part``'s rows back to ``rows``."""
        for name in self.ROWS:
            value = getattr(self, name)
            if isinstance(value, Stack):
                value.put(rows, getattr(part, name))
            else:
                value[rows] = getattr(part, name)
