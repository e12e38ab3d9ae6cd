"""How a round's updates become the next global model.

A strategy is the server's policy in one small class (the shape Flower gives it), kept apart
from any network so that it can be tested on summaries alone.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from federation.summary import ModelSummary

__all__ = ["ExactMerge", "Strategy"]


class Strategy(abc.ABC):
    """Aggregate one round's accepted summaries into the next global model state."""

    @abc.abstractmethod
    def aggregate(self, current: ModelSummary, updates: Sequence[ModelSummary]) -> ModelSummary:
        """The new global state from the current one and this round's summaries."""


class ExactMerge(Strategy):
    """Merge every summary into the global one by the exact rule, weighting by readings.

    The global model after any number of rounds summarises every reading ever contributed,
    exactly as if those readings had been pooled (before privacy noise).

    >>> import numpy as np
    >>> names = ("a", "b")
    >>> one = ModelSummary.from_array(names, np.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> two = ModelSummary.from_array(names, np.array([[4.0, 5.0]]))
    >>> merged = ExactMerge().aggregate(ModelSummary.empty(names), [one, two])
    >>> merged.n, merged.mean.tolist()
    (3.0, [2.0, 3.0])
    """

    def aggregate(self, current: ModelSummary, updates: Sequence[ModelSummary]) -> ModelSummary:
        merged = current
        for summary in updates:
            merged = merged + summary
        return merged
