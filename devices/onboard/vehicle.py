"""One vehicle's behaviour, free of I/O: read, score, learn, alert, and take part in rounds.

:class:`Vehicle` turns readings and incoming broker messages into outgoing messages; whoever
owns the network connection (the fleet runner, or a single-device agent) sends them. That
keeps the behaviour testable without a broker and identical for simulated and real vehicles.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from devices.onboard.alerts import AlertPolicy
from devices.onboard.detector import FleetGaussian
from devices.onboard.ledger import Answer, LedgerError, PrivacyLedger, Release
from devices.sources import SensorSource
from federation import messages, topics
from federation.accounting import Spend
from federation.messages import (
    Alert,
    AlertReport,
    GlobalModel,
    Message,
    MessageError,
    RoundOpen,
    Status,
    Update,
)
from federation.privacy import Mechanism, NoiseSource, SecureNoise, public_centre
from federation.randomized_response import RandomizedResponse
from federation.rejections import RejectionLog
from federation.secagg.messages import MaskedInput, SecAggMessage

__all__ = ["Outgoing", "Participation", "Vehicle"]

log = logging.getLogger(__name__)

_DAY_S = 86_400.0
# An update is not sent with less than this share of its round left: it would reach the
# gateway after the deadline and be refused (``wrong_round``). It waits for the next round.
LAST_CALL = 0.1


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: where, the message itself, and its encoded payload."""

    topic: str
    message: Message | SecAggMessage
    payload: bytes
    retain: bool = False
    qos: int = 1

    @property
    def paid_for(self) -> bool:
        """Whether it carries a release whose cost is in the ledger: it is published only
        once the ledger is on disk."""
        return isinstance(self.message, Update | MaskedInput)

    @classmethod
    def of(cls, topic: str, message: Message, retain: bool = False) -> Outgoing:
        return cls(topic, message, messages.encode(message), retain)


class Participation(Protocol):
    """Another way to take part in rounds than plain updates (secure aggregation:
    :mod:`devices.onboard.secure`): its own topics, and what it answers to them."""

    def subscriptions(self, vehicle_id: str) -> list[tuple[str, int]]:
        """The topics (and QoS) it listens on for ``vehicle_id``."""

    def on_message(self, vehicle: Vehicle, topic: str, payload: bytes) -> list[Outgoing] | None:
        """What ``vehicle`` answers a message on ``topic``; ``None`` if the topic is not its
        own. Raises :class:`~federation.messages.MessageError` for a bad message."""

    def take_part(self, vehicle: Vehicle) -> list[Outgoing]:
        """What ``vehicle`` sends now of its own accord (say, to join the open round)."""

    def joined(self, vehicle: Vehicle) -> bool:
        """Whether ``vehicle`` is in a round it has yet to finish, before its deadline."""


class Vehicle:
    """A vehicle's detector, alerting and round participation.

    Parameters
    ----------
    vehicle_id
        The id in topics and messages.
    source
        Where readings come from.
    detector
        The anomaly model; its schema is the fleet's schema this vehicle speaks (by default
        the built-in vehicle schema).
    mechanism
        The privacy mechanism for each update; ``None`` sends exact summaries.
    central
        Send summaries clipped but not noised, for a gateway trusted to noise the aggregate
        with ``mechanism`` (the vehicle still accounts every round it takes part in).
    ledger
        What the vehicle has spent; before each update it checks that the round fits the
        ledger's budget, and once it does not, it publishes no more updates (it keeps learning
        and using the global model) and says so in its status. Default: in memory, no budget.
        Everything paid for is in the ledger before it is published: a vehicle restarted from
        its ledger reuses its alert answers, and sends the update of the round it last paid
        for again (no new cost) if that round is still open, since a crash may have kept it
        from the broker. It skips only that round: a lower round number is a gateway that
        started over, and it takes part.
    noise
        Where privacy noise comes from; default :class:`~federation.privacy.SecureNoise`.
    alert_report
        If given, each update also carries a randomized-response answer to "did I raise an
        alert today (by my reading clock)?"; the answer for a day and a truth is drawn once
        and repeated, so a day costs at most two answers.
    min_readings_per_update
        Without privacy, a vehicle with fewer new readings than this sits a round out.
    first_release_readings, release_growth
        With privacy, fewer and better releases: each private update summarises everything the
        vehicle has learned so far, and is sent once it has learned ``first_release_readings``,
        then ``release_growth`` times as many, and so on (300, 900, 2,700, 8,100 readings by
        default). Every release costs privacy; a summary of more readings, made about a better
        fleet model, is worth more for the same noise, and replaces the vehicle's last one.
    learn_below
        Readings are learned only while every subsystem's level is below this.
    burn_in_readings
        The first readings are learned whatever their level: they are the vehicle's own
        baseline, which the fleet's model cannot know (vehicles differ). Without them a
        vehicle that is healthy but unlike the fleet's average would never learn its normal.
    federate
        Take part in federation: adopt the fleet's model and send updates. Without, the
        vehicle learns from its own readings alone (for measuring what federation buys).
    stagger
        Spread updates over this share of each round (in ``[0, 1)``): the vehicle sends no
        earlier than its own point of that share (fixed by its id) of what is left of the
        round once its update came due, so that a fleet whose vehicles all owe an update at
        once (simulated ones, started together) sends it over a stretch of time rather than
        in one step. 0 (the default): as soon as it is owed. A staggered vehicle spreads its
        detector's refreshes too (:meth:`~devices.onboard.detector.FleetGaussian.stagger`).
    last_call
        The share of a round, at its end, in which an update is no longer sent (default
        :data:`LAST_CALL`, a tenth): one whose point falls there waits for the next round,
        since over a network it would arrive after the deadline and be refused. 0 where
        delivery is instant (the offline replays of :mod:`analytics`).
    rejections
        Where rejected messages and readings are counted and logged (default: the vehicle's
        own). Vehicles of one process share one, so that a message sent to all of them is
        logged once, not once per vehicle.
    secure
        Release by secure aggregation instead of updates (``privacy = "secagg"``): it joins
        the rounds and answers their phases, and this vehicle sends no plain update.

    Examples
    --------
    >>> from devices.sim.simulator import SimulatedVehicle
    >>> vehicle = Vehicle("veh-0001", SimulatedVehicle("veh-0001", seed=1), mechanism=None,
    ...                   clock=lambda: 0.0)
    >>> vehicle.on_message(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, 0.0, 60.0, 1, 0)))
    >>> sent = [out for _ in range(60) for out in vehicle.step()]
    >>> [(out.topic, out.qos) for out in sent]
    [('fleet/v1/vehicles/veh-0001/update', 1)]
    >>> messages.decode(Update, sent[0].payload).summary.n
    30.0
    """

    def __init__(
        self,
        vehicle_id: str,
        source: SensorSource,
        *,
        mechanism: Mechanism | None,
        central: bool = False,
        ledger: PrivacyLedger | None = None,
        noise: NoiseSource | None = None,
        alert_report: RandomizedResponse | None = None,
        policy: AlertPolicy | None = None,
        detector: FleetGaussian | None = None,
        min_readings_per_update: int = 30,
        first_release_readings: int = 300,
        release_growth: float = 3.0,
        learn_below: float = 1.5,
        burn_in_readings: int = 600,
        rejections: RejectionLog | None = None,
        federate: bool = True,
        stagger: float = 0.0,
        last_call: float = LAST_CALL,
        secure: Participation | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vehicle_id = topics.check_vehicle_id(vehicle_id)
        if not 0.0 <= stagger < 1.0 or not 0.0 <= last_call < 1.0:
            raise ValueError(f"stagger and last_call must be in [0, 1), got {stagger} and "
                             f"{last_call}")
        self._last_call = last_call
        place = zlib.crc32(vehicle_id.encode()) / 2**32  # its id's place in [0, 1)
        self._send_share = stagger * place  # where in the round this vehicle may send
        self._owed_since: float | None = None  # when the update now owed came due
        self.source = source
        self.detector = detector or FleetGaussian()
        if stagger:  # its refreshes at its own place too: one step does not pay for them all
            self.detector.stagger(place)
        self.schema = self.detector.schema
        self.policy = policy or AlertPolicy(schema=self.schema)
        self.mechanism = mechanism
        self.privacy = ("off" if mechanism is None else "secagg" if secure is not None
                        else "central" if central else "local")
        self.secure = secure
        self._answers_due: list[Outgoing] = []  # secure phases' answers, sent with the next step
        self.ledger = ledger or PrivacyLedger(
            None, budget=math.inf, delta=mechanism.delta if mechanism else 0.5)
        self.noise = noise or SecureNoise()
        self.alert_report = alert_report
        self.min_readings_per_update = min_readings_per_update
        self.first_release_readings = first_release_readings
        self.release_growth = release_growth
        # Releases made so far, counted from the ledger: a restarted vehicle goes on from them.
        self.releases = sum(any(s.kind in ("gaussian", "laplace", "zcdp") for s in entry.spends)
                            for entry in self.ledger.entries)
        self._released_readings = 0.0  # what this process's last release summarised
        self.learn_below = learn_below
        self.burn_in_readings = burn_in_readings
        self.clock = clock
        self.round: RoundOpen | None = None
        self.global_model: GlobalModel | None = None
        self.readings = 0
        self.last_sent_round = self.ledger.last_round
        self.exhausted = mechanism is not None and not self.ledger.allows([mechanism.spend])
        self._unsent: Release | None = self.ledger.release
        self._alert_day = -1
        self._answers = self.ledger.answers()
        self._day = 0
        self.updates_sent = 0
        self.last_update: Outgoing | None = None
        self.alerts_raised = 0
        self.rejections = rejections or RejectionLog(log)
        self.federate = federate

    @property
    def rejected(self) -> Counter[str]:
        """Messages and readings rejected, by reason."""
        return self.rejections.counts

    @property
    def in_secure_round(self) -> bool:
        """Whether the vehicle is in a secure round it has yet to finish answering."""
        return self.secure is not None and self.secure.joined(self)

    def subscriptions(self) -> list[tuple[str, int]]:
        """The topics (and QoS) the vehicle listens on."""
        own = self.secure.subscriptions(self.vehicle_id) if self.secure else []
        return [(topics.ROUND_TOPIC, 1), (topics.MODEL_BINARY_TOPIC, 1), *own]

    @property
    def model_version(self) -> int:
        return self.global_model.version if self.global_model else 0

    def status(self, state: str) -> Outgoing:
        """The retained status: presence, privacy mode, spending and whether it is exhausted."""
        status = Status(self.vehicle_id, state, self.clock(), self.privacy,
                        self._epsilon_total(), _finite_or_zero(self.ledger.budget),
                        self.exhausted)
        return Outgoing.of(topics.status_topic(self.vehicle_id), status, retain=True)

    def _epsilon_total(self) -> float:
        return self.ledger.epsilon_total if self.mechanism is not None else 0.0

    def step(self) -> list[Outgoing]:
        """Read one reading (if any), score it, learn it; return what to publish."""
        reading = self.source.read()
        if reading is None:
            return self._secure_part()
        out = []
        # Scaled once for both: what make_pipeline(detector) does in score_one and again in
        # learn_one.
        values = cast("dict[Hashable, Any]", self.schema.scale(self._finite(reading.values)))
        self.detector.score_one(values)
        subsystem = self.policy.observe(reading.ts_s, self.detector.residuals())
        # After its burn-in, a vehicle under suspicion learns nothing: a slow fault is not
        # absorbed into what it takes as normal.
        if self.readings < self.burn_in_readings or self.policy.level < self.learn_below:
            self.detector.learn_one(values)
        self.readings += 1
        self._day = int(reading.ts_s // _DAY_S)
        if subsystem is not None:
            self._alert_day = self._day
            out.append(self._alert(reading.ts_s, subsystem))
        return out + self.take_part()

    def take_part(self) -> list[Outgoing]:
        """The open round's update, if the vehicle owes one and can give it; else nothing.

        :meth:`step` sends updates as readings come; a vehicle whose source has ended calls
        this as rounds arrive, so that its last readings still reach the fleet.
        """
        if self.secure is not None:
            return self._secure_part()
        again = self._paid_for()
        if again is not None:
            return [again]
        return [self._update()] if self._should_update() else []

    def _secure_part(self) -> list[Outgoing]:
        """The secure phases' answers due, and whatever the vehicle sends of its accord."""
        if self.secure is None:
            return []
        due, self._answers_due = self._answers_due, []
        return due + self.secure.take_part(self)

    def _paid_for(self) -> Outgoing | None:
        """The update the ledger kept from before a restart, once, while its round is open."""
        unsent, current = self._unsent, self.round
        if unsent is None or current is None or (
                current.round == unsent.round and self.clock() >= current.deadline):
            return None
        self._unsent = None
        if current.round != unsent.round:
            return None
        try:
            update = messages.decode(Update, unsent.payload, self.schema)
        except MessageError as exc:
            log.warning("%s: the kept update of round %d is no longer valid (%s)",
                        self.vehicle_id, unsent.round, exc)
            return None
        self.updates_sent += 1
        self.last_update = Outgoing(topics.update_topic(self.vehicle_id), update,
                                    messages.encode_binary(update))
        return self.last_update

    def _finite(self, values: dict[str, float]) -> dict[str, float]:
        """Drop NaN and infinite values: the channel counts as missing for this reading."""
        if all(map(math.isfinite, values.values())):  # nearly always: no copy
            return values
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        if len(finite) < len(values):
            self.rejections.reject("not_finite", f"{self.vehicle_id}: a reading with NaN or "
                                    f"infinite values ({sorted(set(values) - set(finite))})")
        return finite

    def on_message(self, topic: str, payload: bytes) -> None:
        """Take a round or global model from the broker; reject anything invalid, never raise.

        A failure that validation did not foresee is counted as ``internal_error`` and logged
        with its traceback: no message from the network can stop a vehicle.
        """
        if not self.federate:
            return
        try:
            answers = self.secure.on_message(self, topic, payload) if self.secure else None
            if answers is not None:
                self._answers_due += answers
            elif topic == topics.ROUND_TOPIC:
                self.round = messages.decode(RoundOpen, payload, self.schema)
            elif topic in (topics.MODEL_BINARY_TOPIC, topics.MODEL_TOPIC):
                self._adopt(messages.decode(GlobalModel, payload, self.schema))
        except MessageError as exc:
            self.rejections.reject(exc.reason, f"{self.vehicle_id}: message on {topic}: {exc}")
        except Exception as exc:
            if not self.rejected["internal_error"]:
                log.exception("%s: internal error handling a message on %s", self.vehicle_id,
                              topic)
            self.rejections.reject("internal_error", f"{self.vehicle_id}: message on {topic}: "
                                    f"{type(exc).__name__}")

    def _adopt(self, model: GlobalModel) -> None:
        if self.global_model and model.version <= self.global_model.version:
            return
        self.global_model = model
        self.detector.set_global(model.summary, model.noise_std)

    def _alert(self, ts_s: float, subsystem: str) -> Outgoing:
        top = self.policy.top()
        sensors = tuple(t for t in top if abs(t[1]) > 0.5 * self.policy.threshold) or tuple(top[:1])
        alert = Alert(self.vehicle_id, ts_s, round(self.policy.level, 3), self.policy.threshold,
                      subsystem, sensors, self.model_version)
        self.alerts_raised += 1
        return Outgoing.of(topics.alert_topic(self.vehicle_id), alert)

    @property
    def owes_update(self) -> bool:
        """Whether the vehicle has learned enough since its last update to send one, and may."""
        if self.exhausted:
            return False
        if self.mechanism is None:
            return self.detector.recent_readings >= self.min_readings_per_update
        return self.detector.learned_readings >= self.next_release_readings

    @property
    def next_release_readings(self) -> int:
        """With privacy, the learned readings at which the next release is due."""
        return math.ceil(self.first_release_readings * self.release_growth ** self.releases)

    def _should_update(self) -> bool:
        now = self.clock()
        if not self.owes_update:
            self._owed_since = None
            return False
        if self._owed_since is None:
            self._owed_since = now
        current = self.round
        if current is None or current.round == self.last_sent_round or now >= current.deadline:
            return False
        # Its own point of what is left of the round once the update came due: vehicles that
        # come due together, mid-round too, still send spread out.
        start = max(current.opened_at, self._owed_since)
        send_at = start + self._send_share * (current.deadline - start)
        if current.deadline - send_at < self._last_call * (current.deadline - current.opened_at):
            return False
        return now >= send_at

    def _update(self) -> Outgoing:
        """The round's update, or the vehicle's status once its budget cannot pay for it."""
        assert self.round is not None
        report, answer = self._report()
        spends = [self.mechanism.spend] if self.mechanism is not None else []
        if answer is not None and self.alert_report is not None:
            spends.append(self.alert_report.spend)
        if not self._affordable(spends):
            return self.status("online")
        summary = self.detector.take_summary()
        epsilon = delta = noise_std = clip_norm = replaces = 0.0
        if self.mechanism is not None:
            summary, replaces = self.detector.own_summary(), self._released_readings
            centre = (self.global_model.summary if self.global_model
                      else public_centre(self.schema.names))
            mechanism = self.mechanism.about(self.global_model is None)
            summary = (mechanism.clipped(summary, centre) if self.privacy == "central"
                       else mechanism.privatize(summary, centre, self.noise))
            epsilon, delta = mechanism.epsilon, mechanism.delta
            noise_std = 0.0 if self.privacy == "central" else mechanism.noise_std
            clip_norm = mechanism.clip_norm
        update = Update(
            self.vehicle_id, self.round.round, self.model_version, summary, epsilon, delta,
            self.ledger.epsilon_after(spends) if self.mechanism is not None else 0.0,
            self.clock(), noise_std, self.schema.digest,
            privacy=self.privacy, mechanism=self.mechanism.name if self.mechanism else "none",
            clip_norm=clip_norm, epsilon_budget=_finite_or_zero(self.ledger.budget),
            alert_report=report, replaces_readings=replaces,
        )
        # Sent in the compact binary form; the ledger keeps it as JSON text.
        out = Outgoing(topics.update_topic(self.vehicle_id), update,
                       messages.encode_binary(update))
        if not self._record(spends, answer, update):
            return self.status("online")
        if answer is not None:
            self._answers = {k: v for k, v in self._answers.items() if k[0] == answer.day}
            self._answers[answer.day, answer.truth] = answer.value
        self.last_sent_round = self.round.round
        self._unsent = None
        self.updates_sent += 1
        if self.mechanism is not None:
            self.releases += 1
            self._released_readings = update.summary.n
        self.last_update = out
        return out

    @property
    def released_readings(self) -> float:
        """The readings this process's last release summarised (0 before any)."""
        return self._released_readings

    def released(self, round_number: int, readings: float) -> None:
        """Count a release made another way than an update (a secure round's input)."""
        self.last_sent_round = round_number
        self.updates_sent += 1
        self.releases += 1
        self._released_readings = readings

    def _report(self) -> tuple[AlertReport | None, Answer | None]:
        """Today's randomized alert answer, and the answer if it was drawn just now (and so
        is to be paid for); a repeated answer costs nothing."""
        if self.alert_report is None:
            return None, None
        truth = self._alert_day == self._day
        value = self._answers.get((self._day, truth))
        fresh = None
        if value is None:
            value = self.alert_report.respond(truth, self.noise)
            fresh = Answer(self._day, truth, value)
        return AlertReport(self._day, value, self.alert_report.epsilon), fresh

    def _affordable(self, spends: list[Spend]) -> bool:
        """Whether the budget allows ``spends``; once it does not, no more updates."""
        if not spends or self.ledger.allows(spends):
            return True
        log.info("%s: privacy budget %.3g exhausted (%.3g spent); no more updates",
                 self.vehicle_id, self.ledger.budget, self.ledger.epsilon_total)
        self.exhausted = True
        return False

    def _record(self, spends: list[Spend], answer: Answer | None, update: Update) -> bool:
        """Put ``spends``, the answer and the update they pay for in the ledger before
        anything is published; a ledger that cannot be written stops updates (fail closed)."""
        assert self.round is not None
        if not spends:
            return True
        try:
            self.ledger.record(self.round.round, spends, self.clock(), answer,
                               messages.encode(update))
            return True
        except LedgerError as exc:
            self.stop_updates(exc)
        return False

    def stop_updates(self, failure: LedgerError) -> None:
        """Fail closed: a ledger that cannot be written (or synced) ends the vehicle's updates."""
        log.error("%s: %s; no more updates", self.vehicle_id, failure)
        self.exhausted = True


def _finite_or_zero(value: float) -> float:
    """Budgets on the wire: 0 stands for none."""
    return value if math.isfinite(value) else 0.0
