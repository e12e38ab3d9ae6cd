"""The gateway: rounds, aggregation strategies, stores, and the service that runs them.

It collects each round's noised summaries from the broker, validates every message before it
touches state (its form, then whether it is physical: :mod:`gateway.validation`), combines the
accepted summaries by a strategy (:mod:`gateway.strategy`, robust by default) and merges the
result into the next global model by the exact rule of :mod:`federation.summary`, publishes
that model retained and versioned (and can republish an earlier one: a rollback), and records
rounds, models, rollbacks, alerts, statuses, budgets and rejections in a
:class:`~gateway.store.Store`.
"""

from gateway.rounds import Round
from gateway.service import Gateway, RoundClosed
from gateway.store import RoundRecord, SQLiteStore, Store, StoreError, open_store
from gateway.strategy import STRATEGIES, ExactMerge, Strategy, make_strategy

__all__ = [
    "STRATEGIES",
    "ExactMerge",
    "Gateway",
    "Round",
    "RoundClosed",
    "RoundRecord",
    "SQLiteStore",
    "Store",
    "StoreError",
    "Strategy",
    "make_strategy",
    "open_store",
]
