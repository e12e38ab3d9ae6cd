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

Failover: with a ``lease`` (:mod:`gateway.lease`) several coordinators, each with its own
store and client id, share the fleet; they take no share of the updates (the workers take
them all), so every one of them hears the same statuses, alerts, partials and forwarded
updates. The lease's holder acts as above. A standby follows: it takes in the same messages
into the same round, takes the holder's rounds and models from the broker, and neither closes
a round nor publishes. When it takes the lease over, the round in flight is its own already,
with every partial and forwarded update the holder had heard, and it closes it at the
deadline as the holder would have; a round the holder had closed (its model published) is
never closed again. Without a lease, the coordinator is one process with a persistent session
and a store: restarted, it resumes the open round with the updates it had accepted, not the
partials (they are not stored).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import paho.mqtt.client as mqtt

from federation import messages, topics
from federation.messages import GlobalModel, Lease, MessageError, Partial, RoundOpen
from gateway.lease import LeaseState
from gateway.rounds import Round
from gateway.service import PASS_S, Gateway
from gateway.store import INVALID, OpenRound, RoundRecord
from gateway.worker import GROUP

__all__ = ["PARTIAL_GRACE_S", "Coordinator"]

log = logging.getLogger(__name__)

PARTIAL_GRACE_S = 2.0  # how long past a deadline the coordinator waits for missing partials
_PARTIAL_PREFIX = topics.PARTIALS.removesuffix("+")
_IDLE_S = PASS_S / 5  # the shortest wait for a message, past a deadline
_LEASED_TOPICS = (topics.LEASE_TOPIC, topics.ROUND_TOPIC, topics.MODEL_TOPIC)


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
    lease
        Share the fleet with other coordinators: act only while holding this lease, follow
        the holder otherwise (:mod:`gateway.lease`). A coordinator under a lease takes no
        share of the updates (``group`` must be ``None``).

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
                 partial_grace_s: float = PARTIAL_GRACE_S, lease: LeaseState | None = None,
                 **kwargs: Any) -> None:
        if workers < 1 or partial_grace_s < 0:
            raise ValueError("workers must be >= 1 and partial_grace_s >= 0")
        if lease is not None and group is not None:
            raise ValueError("coordinators under a lease take no share of the updates: the "
                             "standby could not follow the holder's (group must be None)")
        super().__init__(*args, **kwargs)
        self.workers, self.group, self.partial_grace_s = workers, group, partial_grace_s
        self.lease = lease
        self._held = False
        self._owed: list[tuple[str, bytes, bool, str | None, int | None]] = []
        self._lease_sent: tuple[mqtt.MQTTMessageInfo, float] | None = None
        self._lease_connection = 0
        self._closed = max([r.round for r in self.store.rounds(1)], default=0)
        if not self.strategy.under("off").exact:
            log.warning("strategy %s does not merge exact updates by the exact rule: the workers "
                        "check them and forward them here (--strategy mean lets them merge "
                        "them, with no defence against poisoning)", self.strategy.name)

    def _subscriptions(self) -> list[tuple[str, int]]:
        updates = topics.subscription(topics.UPDATE)
        own = [(topics.shared(self.group, updates), 1)] if self.group else []
        leased = [(topics.LEASE_TOPIC, 1), (topics.ROUND_TOPIC, 1),
                  (topics.MODEL_TOPIC, 1)] if self.lease else []
        return [*own, (topics.subscription(topics.ALERT), 1),
                (topics.subscription(topics.STATUS), 1), (topics.PARTIALS, 1),
                (topics.FORWARDED, 1), *leased]

    def _max_bytes(self, topic: str) -> int:
        if topic.startswith(_PARTIAL_PREFIX):
            return messages.MAX_PARTIAL_BYTES
        return super()._max_bytes(topic)

    def _due(self) -> bool:
        if self.lease is not None:
            self._tend_lease()
            if not self._held:
                return False
        if self.round is None or not self.round.is_due(self.clock()):
            return False
        late_s = self.clock() - self.round.info.deadline
        return len(self.round.partials) >= self.workers or late_s >= self.partial_grace_s

    def _drain(self, timeout_s: float, pass_s: float = PASS_S) -> None:
        # Past a deadline the coordinator waits for partials (and a standby for the holder's
        # close): each pass still waits a little for messages, rather than spinning.
        super()._drain(max(timeout_s, _IDLE_S), max(pass_s, _IDLE_S))

    def handle(self, topic: str, payload: bytes) -> None:
        """A partial, a forwarded update (as if it came from its vehicle), the lease, the
        holder's round and model (followed by a standby), or as the gateway."""
        if self.lease is not None and topic in _LEASED_TOPICS:
            return self._on_leased(topic, payload)
        if topic.startswith(_PARTIAL_PREFIX):
            return self._on_partial(topic.removeprefix(_PARTIAL_PREFIX), payload)
        vehicle = topics.parse_forwarded_topic(topic)
        return super().handle(topics.update_topic(vehicle) if vehicle else topic, payload)

    def _on_partial(self, worker: str, payload: bytes) -> None:
        try:
            partial = messages.decode(Partial, payload, self.schema)
        except MessageError as exc:
            self._count(INVALID, 1, len(payload))
            return self._reject(exc.reason, None, f"partial from {worker[:64]}: {exc}")
        self._count("partial", 1, len(payload))
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

    # --- under a lease ----------------------------------------------------------------
    def _on_leased(self, topic: str, payload: bytes) -> None:
        try:
            if topic == topics.LEASE_TOPIC:
                return self._on_lease(messages.decode(Lease, payload))
            if self._held:
                return None  # its own round and model, as the broker echoes them
            if topic == topics.ROUND_TOPIC:
                return self._follow_round(messages.decode(RoundOpen, payload, self.schema))
            return self._follow_model(messages.decode(GlobalModel, payload, self.schema))
        except MessageError as exc:
            return self._reject(exc.reason, None, f"{topic}: {exc}")

    def _on_lease(self, lease: Lease) -> None:
        assert self.lease is not None
        if self.lease.heard(lease, time.monotonic()):
            log.warning("coordinator %s: %s claimed term %d; standing by", self.lease.holder,
                        lease.holder, lease.term)
        self._tend_lease()

    def _tend_lease(self) -> None:
        """Renew or claim the lease, note the broker's acknowledgement, and act or stop."""
        lease, now = self.lease, time.monotonic()
        assert lease is not None
        if self._connection != self._lease_connection:
            lease.connected(now)
            self._lease_connection = self._connection
        if self._lease_sent is not None and self._lease_sent[0].is_published():
            lease.acked(self._lease_sent[1])
            self._lease_sent = None
        if self._connected.is_set():
            claim = lease.to_send(now, time.time())
            if claim is not None:
                if lease.claimed_at == now:
                    log.info("coordinator %s: no renewal for %g s, claiming term %d",
                             lease.holder, lease.lease_s, claim.term)
                self._lease_sent = (self._client.publish(
                    topics.LEASE_TOPIC, messages.encode(claim), qos=1, retain=True), now)
        held, self._held = self._held, lease.holds(now)
        if self._held != held:
            (log.warning if self._held else log.error)(
                "coordinator %s %s the lease, term %d", lease.holder,
                "holds" if self._held else "no longer holds", lease.term)
        if not self._held:
            self._owed.clear()
        elif self._connected.is_set():
            owed, self._owed = self._owed, []
            for args in owed:
                super()._publish(*args)

    def _publish(self, topic: str, payload: bytes, retain: bool, kind: str | None = None,
                 copies: int | None = None) -> None:
        """Publish only while holding the lease; what falls due while the broker is away
        goes once it is back, if the lease is still held (never from paho's queue later)."""
        if self.lease is None:
            return super()._publish(topic, payload, retain, kind, copies)
        if not self._held:
            return None
        self._owed = [o for o in self._owed if o[0] != topic]
        self._owed.append((topic, payload, retain, kind, copies))
        return self._tend_lease()

    def _open_round(self) -> None:
        if self.lease is None:
            return super()._open_round()
        if not self._held:
            return None
        left, self._left_open = self._left_open, None
        if left is not None and left.info.round > self._closed:
            return super()._resume(left)
        return super()._open_round()

    def _resume(self, state: OpenRound | None) -> None:
        if self.lease is None or self._held:
            return super()._resume(state)
        return None  # a standby follows the holder's round instead

    def _follow_round(self, info: RoundOpen) -> None:
        """The holder opened ``info`` (or moved its deadline): follow it into that round."""
        current = self.round
        if current is not None and current.number == info.round:
            current.info = info
            return
        if info.round <= self._closed or (current is not None and info.round < current.number):
            return  # a round already closed, heard again
        if current is not None:
            self._followed_close(current, None)
        left, self._left_open = self._left_open, None
        kept = left.accepted if left is not None and left.info.round == info.round else ()
        self.round = Round(info, self.target_updates,
                           accepted={u.vehicle_id: u for u in kept})
        self.round.senders |= set(self.round.accepted)
        self.round.expected |= self.online - self.exhausted
        self.store.record_open_round(info)
        self._round_number = max(self._round_number, info.round)
        log.info("following round %d (closes at %.1f)", info.round, info.deadline)

    def _follow_model(self, model: GlobalModel) -> None:
        """The holder published ``model``: the base of the next merge; its round is closed."""
        if self.model is not None and model.version <= self.model.version:
            return
        self.model = self.sent = model
        self.plausibility.published(model, sent=True)
        self.store.record_model(model)
        if self.round is not None and model.round >= self.round.number:
            self._followed_close(self.round, model)
            self.round = None
        self._closed = max(self._closed, model.round)

    def _followed_close(self, current: Round, model: GlobalModel | None) -> None:
        """Record a round the holder closed, as this standby saw it."""
        self.store.record_round(RoundRecord(
            current.number, current.info.opened_at, self.clock(), current.participants,
            sum(current.rejected.values()), model is not None,
            self.model.version if self.model else 0))
        self._closed = max(self._closed, current.number)
