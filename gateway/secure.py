"""The gateway with secure aggregation on the wire (``fedfleet gateway --privacy secagg``).

Every round is also a secure round: when it opens, the gateway announces it retained on
``fleet/v1/global/secagg`` (:class:`~federation.secagg.messages.SecureRound`: the fleet's
config for it, about the model last sent to the vehicles, and the deadlines of its four
phases within the round's own), takes the vehicles' phase messages on
``fleet/v1/vehicles/{id}/secagg`` and answers each vehicle on ``fleet/v1/secagg/{id}``
(:mod:`gateway.secure_round` runs the phases). The unmasked average of the whitened releases
becomes a piece of the round's merge exactly as a central group's noised combination does
(:func:`gateway.private.unmasked_piece`), so the model is published retained and versioned as
for any round. A message that does not fit is refused, logged and counted by reason like any
other; a refused secure round merges nothing of it. The round's journal goes to the store
(its announcement, each message taken, each phase's close), so that a gateway restarted
mid-round goes on with it (:meth:`~gateway.secure_round.SecureRun.resumed`).

What masking removes: the gateway sees no vehicle's release, so it cannot check one
(:mod:`gateway.validation`) nor combine them robustly; the sum is averaged (the mean). The
vehicles bound their releases themselves instead: each is clipped to the gateway's clip norm
in every round, about the public centre too (where a central release is clipped at
:data:`~federation.privacy.PUBLIC_CLIP_FACTOR` times it), as the norm-bounded mean that
combines central releases by default bounds them, and the noise is sized for that bound.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from federation import topics
from federation.secagg import SecAggConfig, messages
from federation.secagg.errors import SecAggError
from federation.secagg.messages import SecAggMessage, SecureRound
from federation.secagg.server import Aggregate
from federation.summary import ModelSummary
from federation.whitening import Whitening
from gateway.rounds import Round, release_centre
from gateway.secure_round import SecureRun
from gateway.service import RESUME_GRACE_S, Gateway

__all__ = ["PHASE_SHARES", "SecureGateway"]

log = logging.getLogger(__name__)

# Where the advertise, share and input phases close, as shares of the round; unmasking ends
# at the round's deadline. Each closes earlier once every vehicle in it has answered.
PHASE_SHARES = (0.4, 0.6, 0.8)


class SecureGateway(Gateway):
    """A :class:`~gateway.service.Gateway` whose rounds are secure.

    ``epsilon`` and ``delta`` are one release's (the config every vehicle checks against its
    own); ``tolerated_dropout`` and ``tolerated_colluders`` as in
    :class:`~federation.secagg.params.SecAggConfig`. The advertise phase closes early once
    ``target_updates`` vehicles have advertised. Other arguments as for the gateway.

    Examples
    --------
    >>> from federation.transport import MqttTarget
    >>> from gateway.store import SQLiteStore
    >>> gateway = SecureGateway(MqttTarget("127.0.0.1", 1883), SQLiteStore(":memory:"),
    ...                         epsilon=0.5)
    >>> gateway.handle("fleet/v1/vehicles/veh-0001/secagg", b"{}")
    >>> dict(gateway.rejected)
    {'wrong_round': 1}
    """

    def __init__(self, *args: Any, epsilon: float, delta: float = 1e-5,
                 tolerated_dropout: float = 1 / 3, tolerated_colluders: float = 0.05,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._secure_config = (epsilon, delta, tolerated_dropout, tolerated_colluders)
        SecAggConfig(1, 1.0, *self._secure_config)  # a bad setting fails here, not mid-run
        self.secure: SecureRun | None = None
        self._merged_secure = 0  # the last round whose unmasked sum joined its merge
        self._last_refusal: tuple[str, str] | None = None  # of the last refused round

    def _subscriptions(self) -> list[tuple[str, int]]:
        return [*super()._subscriptions(), (topics.subscription(topics.SECAGG), 1)]

    def handle(self, topic: str, payload: bytes) -> None:
        vehicle = topics.parse_secagg_topic(topic)
        if vehicle is None:
            return super().handle(topic, payload)
        self.received[topics.SECAGG] += 1
        self._count(topics.SECAGG, 1, len(payload))
        try:
            if self.secure is None:
                raise SecAggError("wrong_round", "no secure round is open")
            self.secure.receive(vehicle, payload)
            self.store.record_secure(self.secure.announced.round, "message", vehicle, payload)
            if self.round is not None:
                self.round.expected.add(vehicle)  # heard from while the round is open
        except SecAggError as exc:
            if self.round is not None:
                self.round.rejected[exc.reason] += 1
            self._reject(exc.reason, vehicle, f"{topic}: {exc}")
        except Exception as exc:  # no message can stop the gateway
            self._internal_error(exc, topic, vehicle)

    def _start(self, current: Round) -> None:
        super()._start(current)
        journal = self.store.secure_journal(current.number)
        if journal and journal[0][0] == "announce":
            try:
                return self._resume_secure(current, journal)
            except SecAggError as exc:  # a store from elsewhere: the round starts afresh
                log.warning("secure round %d cannot be resumed from its journal (%s): "
                            "announced again", current.number, exc)
        now, deadline = self.clock(), current.info.deadline
        centre, bound = self._centre()
        config = SecAggConfig(Whitening(centre).size, bound, *self._secure_config)
        advertise, share, masked = (now + s * (deadline - now) for s in PHASE_SHARES)
        announced = SecureRound.about(current.number, self.sent.version if self.sent else 0,
                                      config, (advertise, share, masked, deadline))
        payload = messages.encode(announced)
        self.store.record_secure(current.number, "announce", None, payload)
        self.store.flush()  # journalled before any vehicle hears of it
        self.secure = SecureRun(announced, self.target_updates)
        self._publish(topics.SECAGG_ROUND_TOPIC, payload, retain=True, kind=topics.SECAGG)

    def _resume_secure(self, current: Round,
                       journal: list[tuple[str, str | None, bytes]]) -> None:
        """Go on with the secure part of a round a previous run left open, from its journal:
        the same announcement (still retained), every message it took, its phases closed
        where they were; the phases still open get the resumed round's grace."""
        announced = messages.decode(SecureRound, journal[0][2])
        grace = min(current.info.deadline, self.clock() + min(self.round_seconds,
                                                              RESUME_GRACE_S))
        self.secure, answers = SecureRun.resumed(announced, self.target_updates, journal[1:],
                                                 grace)
        log.info("resuming secure round %d in its %s phase from %d journal entries",
                 current.number, self.secure.phase, len(journal))
        self._answer(answers)

    def _answer(self, answers: Mapping[str, SecAggMessage]) -> None:
        for vehicle, message in answers.items():
            self._publish(topics.secagg_reply_topic(vehicle), messages.encode_binary(message),
                          retain=False, kind=topics.SECAGG, copies=1)

    def _centre(self) -> tuple[ModelSummary, float]:
        """What the round's releases are whitened about (the model the vehicles were last
        sent, or the public centre), and the clip norm there: the gateway's."""
        return release_centre(self.sent, self.schema)[0], self.clip_norm

    def _due(self) -> bool:
        """Close the secure phases that are due, then say whether the round is."""
        if self.secure is not None and self.round is not None:
            phase, over = self.secure.phase, self.secure.over
            answers = self.secure.advance(self.clock())
            if (self.secure.phase, self.secure.over) != (phase, over):  # a phase closed
                self.store.record_secure(self.round.number, "close", None, phase.encode())
                self.store.flush()
                self._log_outcome(self.secure)
            self._answer(answers)
            aggregate = self.secure.aggregate
            if aggregate is not None and self._merged_secure != self.round.number:
                self._take(self.round, aggregate)
        return super()._due()

    def _log_outcome(self, run: SecureRun) -> None:
        """Log a refused round: a warning the first time a refusal of its kind (its phase
        and reason) follows a round that was not refused so, later ones at debug level; and
        none for a round no vehicle took part in, the usual round of a private fleet."""
        if run.aggregate is not None:
            self._last_refusal = None
        if run.failure is None:
            return
        kind = (run.phase, run.failure.partition(":")[0])
        repeated = kind == self._last_refusal
        if run.took_part:
            self._last_refusal = kind
        (log.warning if run.took_part and not repeated else log.debug)(
            "secure round %d refused in the %s phase: %s%s", run.announced.round, run.phase,
            run.failure, " (refusals like it in the next rounds are logged at debug level)"
            if run.took_part and not repeated else "")

    def _take(self, current: Round, aggregate: Aggregate) -> None:
        """The unmasked sum into the round's merge, as the average of its releases."""
        assert self.secure is not None
        self._merged_secure = current.number
        readings = [self.secure.readings[v] for v in aggregate.vehicle_ids]
        current.take_unmasked(aggregate, sum(n for n, _ in readings),
                              sum(r for _, r in readings), self._centre()[0])

    def _privacy_of(self, current: Round) -> str:
        return "secagg"

    def _close_round(self) -> None:
        super()._close_round()
        self.secure = None
