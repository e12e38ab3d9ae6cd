"""The gateway: rounds, aggregation strategies, stores, and the service that runs them.

It collects each round's noised summaries from the broker, validates every message before it
touches state, merges the accepted summaries into the next global model by the exact rule of
:mod:`federation.summary`, publishes that model retained and versioned, and records rounds,
models, alerts, statuses, budgets and rejections in a :class:`~gateway.store.Store`.
"""

from gateway.rounds import Round
from gateway.service import Gateway, RoundClosed
from gateway.store import RoundRecord, SQLiteStore, Store, StoreError, open_store
from gateway.strategy import ExactMerge, Strategy

__all__ = [
    "ExactMerge",
    "Gateway",
    "Round",
    "RoundClosed",
    "RoundRecord",
    "SQLiteStore",
    "Store",
    "StoreError",
    "Strategy",
    "open_store",
]
