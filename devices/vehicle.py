"""One vehicle's behaviour, free of I/O: read, score, learn, alert, and take part in rounds.

:class:`Vehicle` turns readings and incoming broker messages into outgoing messages; whoever
owns the network connection (the fleet runner, or a single-device agent) sends them. That
keeps the behaviour testable without a broker and identical for simulated and real vehicles.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from devices.alerts import AlertPolicy
from devices.detector import FleetGaussian, make_pipeline
from devices.sources import SensorSource
from federation import messages, topics
from federation.features import Schema
from federation.messages import (
    Alert,
    GlobalModel,
    Message,
    MessageError,
    RoundOpen,
    Status,
    Update,
)
from federation.privacy import GaussianMechanism, Ledger
from federation.summary import ModelSummary

__all__ = ["Outgoing", "Vehicle"]

log = logging.getLogger(__name__)


def _public_centre(schema: Schema) -> ModelSummary:
    """Before any global model exists, offsets are clipped around the middle of every range."""
    d = len(schema)
    return ModelSummary(schema.names, 0.0, np.full(d, 0.5), np.zeros((d, d)))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: where, the message itself, and its encoded payload."""

    topic: str
    message: Message
    payload: bytes
    retain: bool = False
    qos: int = 1

    @classmethod
    def of(cls, topic: str, message: Message, retain: bool = False) -> Outgoing:
        return cls(topic, message, messages.encode(message), retain)


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
        The privacy mechanism applied to each update; ``None`` sends exact summaries.
    rng
        Randomness for the privacy noise.
    min_readings_per_update
        A vehicle with fewer new readings than this sits a round out.
    learn_below
        Readings are learned only while every subsystem's level is below this.
    burn_in_readings
        The first readings are learned whatever their level: they are the vehicle's own
        baseline, which the fleet's model cannot know (vehicles differ). Without them a
        vehicle that is healthy but unlike the fleet's average would never learn its normal.

    Examples
    --------
    >>> from devices.simulator import SimulatedVehicle
    >>> vehicle = Vehicle("veh-0001", SimulatedVehicle("veh-0001", seed=1), mechanism=None,
    ...                   rng=np.random.default_rng(0), clock=lambda: 0.0)
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
        mechanism: GaussianMechanism | None,
        rng: np.random.Generator,
        policy: AlertPolicy | None = None,
        detector: FleetGaussian | None = None,
        min_readings_per_update: int = 30,
        learn_below: float = 1.5,
        burn_in_readings: int = 600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vehicle_id = topics.check_vehicle_id(vehicle_id)
        self.source = source
        self.detector = detector or FleetGaussian()
        self.schema = self.detector.schema
        self.pipeline = make_pipeline(self.detector)
        self.policy = policy or AlertPolicy(schema=self.schema)
        self.mechanism = mechanism
        self.rng = rng
        self.min_readings_per_update = min_readings_per_update
        self.learn_below = learn_below
        self.burn_in_readings = burn_in_readings
        self.clock = clock
        self.ledger = Ledger()
        self.round: RoundOpen | None = None
        self.global_model: GlobalModel | None = None
        self.readings = 0
        self.last_sent_round = 0
        self.updates_sent = 0
        self.last_update: Outgoing | None = None
        self.alerts_raised = 0
        self.rejected: Counter[str] = Counter()

    @property
    def model_version(self) -> int:
        return self.global_model.version if self.global_model else 0

    def status(self, state: str) -> Outgoing:
        status = Status(self.vehicle_id, state, self.clock())
        return Outgoing.of(topics.status_topic(self.vehicle_id), status, retain=True)

    def step(self) -> list[Outgoing]:
        """Read one reading (if any), score it, learn it; return what to publish."""
        reading = self.source.read()
        if reading is None:
            return []
        out = []
        values = self._finite(reading.values)
        self.pipeline.score_one(values)
        subsystem = self.policy.observe(reading.ts_s, self.detector.residuals())
        # After its burn-in, a vehicle under suspicion learns nothing: a slow fault is not
        # absorbed into what it takes as normal.
        if self.readings < self.burn_in_readings or self.policy.level < self.learn_below:
            self.pipeline.learn_one(values)
        self.readings += 1
        if subsystem is not None:
            out.append(self._alert(reading.ts_s, subsystem))
        if self._should_update():
            out.append(self._update())
        return out

    def _finite(self, values: dict[str, float]) -> dict[str, float]:
        """Drop NaN and infinite values: the channel counts as missing for this reading."""
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        if len(finite) < len(values):
            dropped = self.rejected["not_finite"] = self.rejected["not_finite"] + 1
            if dropped % 1000 == 1:
                log.warning("%s: %d readings with NaN or infinite values so far (%s)",
                            self.vehicle_id, dropped, sorted(set(values) - set(finite)))
        return finite

    def on_message(self, topic: str, payload: bytes) -> None:
        """Take a round or global model from the broker; reject anything invalid, never raise."""
        try:
            if topic == topics.ROUND_TOPIC:
                self.round = messages.decode(RoundOpen, payload, self.schema)
            elif topic == topics.MODEL_TOPIC:
                self._adopt(messages.decode(GlobalModel, payload, self.schema))
        except MessageError as exc:
            self.rejected[exc.reason] += 1
            log.warning("%s: rejected message on %s: %s", self.vehicle_id, topic, exc)

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

    def _should_update(self) -> bool:
        return (
            self.round is not None
            and self.round.round > self.last_sent_round
            and self.detector.recent_readings >= self.min_readings_per_update
            and self.clock() < self.round.deadline
        )

    def _update(self) -> Outgoing:
        assert self.round is not None
        summary = self.detector.take_summary()
        epsilon = delta = noise_std = 0.0
        if self.mechanism is not None:
            centre = (self.global_model.summary if self.global_model
                      else _public_centre(self.schema))
            summary = self.mechanism.privatize(summary, centre, self.rng)
            epsilon, delta = self.mechanism.epsilon, self.mechanism.delta
            noise_std = self.mechanism.sigma
            self.ledger.spend(epsilon, delta)
        update = Update(
            self.vehicle_id, self.round.round, self.model_version, summary, epsilon, delta,
            self.ledger.epsilon_total, self.clock(), noise_std, self.schema.digest,
        )
        self.last_sent_round = self.round.round
        self.updates_sent += 1
        self.last_update = Outgoing.of(topics.update_topic(self.vehicle_id), update)
        return self.last_update
