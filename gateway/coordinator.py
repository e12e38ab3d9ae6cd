"""The coordinator: the gateway that merges the workers' partial aggregates into the model.

It is the gateway (:class:`~gateway.service.Gateway`: it opens and closes the rounds, keeps
the store, hears every status and alert, publishes the round and the model retained), with
three differences. It takes its own share of the updates as one member of the workers'
shared-subscription group (:mod:`gateway.worker`). It accepts the workers' partials of the
open round (:meth:`~gateway.rounds.Round.add_partial`: no vehicle counts twice) and the
updates they forward, checked again as any update. And at a round's deadline it waits for
the partial of each of its ``workers``, at most ``partial_grace_s`` longer: a worker that is
gone costs its share of that round, never the round.

A partial is the exact merge of exact updates, which only a strategy that merges exact
updates by the exact rule takes; under any other strategy the workers forward every update,
and a partial that holds one is refused (``not_decomposable``).

Failover: the coordinator is one process with a persistent session and a store. Restarted
(or started elsewhere on the same store, with the same client id), it resumes the open round
with the updates it had accepted; the partials it had received for that round are lost
with it (they are not stored), and the workers' next partials count again.
"""

from __future__ import annotations

import logging
from typing import Any

from federation import messages, topics
from federation.messages import MessageError, Partial
from gateway.service import Gateway
from gateway.store import INVALID, Traffic
from gateway.worker import GROUP

__all__ = ["PARTIAL_GRACE_S", "Coordinator"]

log = logging.getLogger(__name__)

PARTIAL_GRACE_S = 2.0  # how long past a deadline the coordinator waits for missing partials
_PARTIAL_PREFIX = topics.PARTIALS.removesuffix("+")


class Coordinator(Gateway):
    """The gateway of ``workers`` gateway workers: merges their partials with its own share.

    Parameters
    ----------
    target, store
        As the gateway's; ``kwargs`` are the gateway's too.
    workers
        How many partials to wait for at each deadline (workers and region gateways).
    group
        The shared-subscription group it shares the updates with; ``None`` takes no share
        (a top gateway whose updates all come from regions).
    partial_grace_s
        The longest it waits past a deadline for the partials still missing.

    Examples
    --------
    >>> from federation.features import FEATURE_NAMES
    >>> from federation.summary import ModelSummary
    >>> from federation.transport import MqttTarget
    >>> from gateway.store import SQLiteStore
    >>> hub = Coordinator(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"), workers=1,
    ...                   clock=lambda: 0.0)
    >>> hub._publish = lambda *args, **kwargs: None
    >>> hub._open_round()
    >>> empty = Partial("w1", 1, 0, (), ModelSummary.empty(FEATURE_NAMES), 0.0)
    >>> hub.handle(topics.partial_topic("w1"), messages.encode(empty))
    >>> hub.handle(topics.partial_topic("w1"), messages.encode(empty))
    >>> list(hub.round.partials), dict(hub.rejected)
    (['w1'], {'duplicate': 1})
    """

    def __init__(self, *args: Any, workers: int, group: str | None = GROUP,
                 partial_grace_s: float = PARTIAL_GRACE_S, **kwargs: Any) -> None:
        if workers < 1 or partial_grace_s < 0:
            raise ValueError("workers must be >= 1 and partial_grace_s >= 0")
        super().__init__(*args, **kwargs)
        self.workers, self.group, self.partial_grace_s = workers, group, partial_grace_s
        if not self.strategy.under("off").exact:
            log.warning("strategy %s does not merge exact updates by the exact rule: the workers "
                        "check them and forward them here (--strategy mean lets them merge "
                        "them, with no defence against poisoning)", self.strategy.name)

    def _subscriptions(self) -> list[tuple[str, int]]:
        updates = topics.subscription(topics.UPDATE)
        own = [(topics.shared(self.group, updates), 1)] if self.group else []
        return [*own, (topics.subscription(topics.ALERT), 1),
                (topics.subscription(topics.STATUS), 1), (topics.PARTIALS, 1),
                (topics.FORWARDED, 1)]

    def _max_bytes(self, topic: str) -> int:
        if topic.startswith(_PARTIAL_PREFIX):
            return messages.MAX_PARTIAL_BYTES
        return super()._max_bytes(topic)

    def _due(self) -> bool:
        if self.round is None or not self.round.is_due(self.clock()):
            return False
        late_s = self.clock() - self.round.info.deadline
        return len(self.round.partials) >= self.workers or late_s >= self.partial_grace_s

    def handle(self, topic: str, payload: bytes) -> None:
        """A partial, a forwarded update (as if it came from its vehicle), or as the gateway."""
        if topic.startswith(_PARTIAL_PREFIX):
            return self._on_partial(topic.removeprefix(_PARTIAL_PREFIX), payload)
        vehicle = topics.parse_forwarded_topic(topic)
        return super().handle(topics.update_topic(vehicle) if vehicle else topic, payload)

    def _on_partial(self, worker: str, payload: bytes) -> None:
        try:
            partial = messages.decode(Partial, payload, self.schema)
        except MessageError as exc:
            self._count(INVALID, Traffic(1, len(payload)))
            return self._reject(exc.reason, None, f"partial from {worker[:64]}: {exc}")
        self._count("partial", Traffic(1, len(payload)))
        reason = None
        if partial.worker_id != worker:
            reason = "topic_mismatch"
        elif self.round is None:
            reason = "wrong_round"
        elif partial.vehicles and not self.strategy.under("off").exact:
            reason = "not_decomposable"
        else:
            reason = self.round.add_partial(partial)
        if reason is not None:
            return self._reject(reason, None, f"partial from {worker} for round {partial.round}")
        for vehicle, report in partial.alert_reports:
            self.alert_rate.add(vehicle, report)
