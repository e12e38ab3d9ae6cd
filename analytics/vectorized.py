"""The prequential replay on arrays: all the devices of a tick read, score and learn at once.

It replays the schedule and regimes of :func:`analytics.replay.run_online` and gives the same
scores and alarms (a test holds every regime to that, to 1e-9), at a small fraction of the cost
per reading. Each device's state lives in arrays with one row per device
(:mod:`analytics.models`, :mod:`analytics.moments`, :mod:`analytics.policies`); a tick is a few
NumPy operations over the devices reading in it:

1. scale the readings with the schema's limits; a reading with a value that is not finite is
   counted as the vehicle counts it, its missing channels sit at the model's mean;
2. refresh the models that are due (every ``refresh_every`` learned readings, or on a new
   prior), with the detector's own rules on the stacked rows;
3. score: each device's residual weights times its reading's offset from its model's mean;
4. the alert chart's EWMA, levels and calibration, then the learning gate (burn-in, level);
5. learn: River's running mean and covariance, the same arithmetic for every device at once;
6. the devices that owe the open round an update send it.

What happens rarely is done by the product's own code: rounds open and close, accept and merge
in :class:`analytics.rounds.RoundCycle`; a global model is decoded once per release and taken
as a prior by :meth:`~devices.onboard.detector.FleetGaussian.prior_for`; a private release is
made by the device's own :class:`devices.onboard.vehicle.Vehicle` (its release schedule, ledger,
mechanism and seeded noise), handed what its detector learned
(:meth:`~devices.onboard.detector.FleetGaussian.fold`).
Exact updates, one per device and round, are built here and offered to the same round.

The ``centralized`` regime's one detector is refreshed within a tick, after every
``refresh_every`` readings it learns, as the live detector would be: :mod:`analytics.shared`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from analytics.attacks import Attack
from analytics.datasets import Dataset
from analytics.models import Models, Priors
from analytics.policies import Policies
from analytics.replay import Progress, Run, Schedule, tuning_for
from analytics.rounds import RoundCycle, receive
from analytics.secure import SecureRounds
from analytics.shared import Gate, shared_tick
from analytics.stack import Stack
from devices.onboard.ledger import PrivacyLedger
from devices.onboard.tuning import Tuning
from devices.onboard.vehicle import Vehicle
from devices.sources import Reading, SensorSource
from federation import topics
from federation.messages import GlobalModel, RoundOpen, Update
from federation.privacy import Mechanism, SeededNoise
from federation.summary import ModelSummary
from gateway.strategy import Strategy

__all__ = ["CHUNK_TICKS", "run_vectorized"]

CHUNK_TICKS = 128  # ticks of readings copied out of the streams at a time


def run_vectorized(
    dataset: Dataset,
    schedule: Schedule,
    regime: str,
    *,
    seed: int,
    mechanism: Mechanism | None = None,
    central: bool = False,
    budget: float = math.inf,
    tuning: Tuning | None = None,
    progress: Progress | None = None,
    strategy: Strategy | None = None,
    attack: Attack | None = None,
    secure: SecureRounds | None = None,
) -> Run:
    """Replay ``dataset`` under ``regime``, as :func:`analytics.replay.run_online` does with
    the same arguments, on arrays."""
    replay = _Replay(dataset, schedule, regime, seed, mechanism, central, budget,
                     tuning or tuning_for(dataset), strategy, attack, secure)
    return replay.run(progress)


class _Devices(Stack):
    """What each device's vehicle counts: readings, the round it knows, the round it last sent
    an update in, the learned readings at which its next update is due (without privacy:
    since its last update; with: in all), whether its budget is spent."""

    ROWS = ("readings", "round", "sent", "due", "exhausted")

    def __init__(self, size: int, due: int) -> None:
        self.readings = np.zeros(size, dtype=np.int64)
        self.round = np.zeros(size, dtype=np.int64)
        self.sent = np.zeros(size, dtype=np.int64)
        self.due = np.full(size, due, dtype=np.int64)
        self.exhausted = np.zeros(size, dtype=bool)


@dataclass
class _Part:
    """The devices reading through one stretch of ticks (in the schedule's order), and their
    rows of state; the shared detector of ``centralized`` is not split."""

    members: np.ndarray
    devices: _Devices
    policies: Policies
    models: Models


class _Idle(SensorSource):
    """A private regime's vehicles read nothing themselves: the replay reads for them."""

    def read(self) -> Reading | None:
        return None


class _Replay:
    def __init__(self, dataset: Dataset, schedule: Schedule, regime: str, seed: int,
                 mechanism: Mechanism | None, central: bool, budget: float,
                 tuning: Tuning, strategy: Strategy | None = None,
                 attack: Attack | None = None, secure: SecureRounds | None = None) -> None:
        schema, streams = dataset.schema, dataset.streams
        missing = [name for name in schema.names if name not in dataset.columns]
        if missing:
            raise ValueError(f"the dataset has no column for {missing}")
        self.dataset, self.schedule, self.regime, self.budget = dataset, schedule, regime, budget
        self.take = np.array([dataset.columns.index(name) for name in schema.names])
        self.low = np.array([f.low for f in schema.features])
        self.span = np.array([f.high - f.low for f in schema.features])
        self.detector = tuning.detector(schema)
        kwargs = tuning.vehicle_kwargs(schema)
        self.gate = Gate(kwargs["burn_in_readings"], kwargs["learn_below"])
        self.shared = regime == "centralized"
        self.clock = [0.0]
        self.ids = [topics.check_vehicle_id(s.device_id) for s in streams]
        self.vehicles = None if mechanism is None else [
            Vehicle(vehicle_id, _Idle(), mechanism=mechanism, central=central,
                    noise=SeededNoise([seed, i]), clock=lambda: self.clock[0], last_call=0.0,
                    ledger=PrivacyLedger(None, budget=budget, delta=mechanism.delta),
                    **tuning.vehicle_kwargs(schema))
            for i, vehicle_id in enumerate(self.ids)]
        first = Vehicle(self.ids[0], _Idle(), mechanism=mechanism, **tuning.vehicle_kwargs(schema))
        self.devices = _Devices(len(streams), first.min_readings_per_update if mechanism is None
                                else first.next_release_readings)
        self.policies = Policies(tuning.policy(schema), len(streams))
        self.models = Models(self.detector, 1 if self.shared else len(streams))
        self.priors = Priors(self.detector)
        self.gateway = (RoundCycle(schedule.round_rows, schema, SeededNoise([seed, len(streams)]),
                                   strategy, attack, schedule.start, secure)
                        if regime.startswith("federated") else None)
        self.info: RoundOpen | None = None
        self.adopted: dict[bytes, int] = {}
        self.rejected: Counter[str] = Counter()
        self.updates = 0
        self.scores = [np.zeros(len(s)) for s in streams]
        self.alarms = [np.zeros(len(s), dtype=bool) for s in streams]
        self.starts = np.array([schedule.start[s.device_id] for s in streams], dtype=np.int64)
        self.ends = self.starts + np.array([len(s) for s in streams], dtype=np.int64)

    def run(self, progress: Progress | None) -> Run:
        began, done = time.monotonic(), 0
        if progress is not None:
            progress(self.regime, done, self.dataset.rows)
        order = np.array(self.schedule.order, dtype=np.int64)
        last = int(self.ends.max())
        bounds = sorted({0, last, *self.starts.tolist(), *self.ends.tolist()})
        for first, end in pairwise(b for b in bounds if b <= last):
            members = order[(self.starts[order] <= first) & (first < self.ends[order])]
            part = self._take(members)
            for tick in range(first, end, CHUNK_TICKS):
                steps = min(CHUNK_TICKS, end - tick)
                self._chunk(part, tick, steps, joined=tick == first, progress=progress,
                            done=done)
                done += steps * len(members)
            self._put(part)
        return self._result(time.monotonic() - began)

    def _take(self, members: np.ndarray) -> _Part:
        models = self.models if self.shared else self.models.take(members)
        return _Part(members, self.devices.take(members), self.policies.take(members), models)

    def _put(self, part: _Part) -> None:
        self.devices.put(part.members, part.devices)
        self.policies.put(part.members, part.policies)
        if not self.shared:
            self.models.put(part.members, part.models)

    def _chunk(self, part: _Part, tick: int, steps: int, joined: bool,
               progress: Progress | None, done: int) -> None:
        """``steps`` ticks from ``tick`` on: copy the readings out, run them, write back;
        ``done`` rows were replayed before them."""
        members, streams = part.members, self.dataset.streams
        block = np.empty((steps, len(members), len(self.dataset.columns)))
        for j, i in enumerate(members.tolist()):
            row = tick - int(self.starts[i])
            block[:, j] = streams[i].values[row:row + steps]
        levels = np.empty((steps, len(members)))
        alarms = np.empty((steps, len(members)), dtype=bool)
        for k in range(steps):
            self._publish_at(part, tick + k, joined and k == 0)
            if len(members):
                levels[k], alarms[k] = self._tick(part, tick + k, block[k])
            if progress is not None:  # a tick of many private releases takes seconds
                progress(self.regime, done + (k + 1) * len(members), self.dataset.rows)
        for j, i in enumerate(members.tolist()):
            row = tick - int(self.starts[i])
            self.scores[i][row:row + steps] = levels[:, j]
            self.alarms[i][row:row + steps] = alarms[:, j]

    def _tick(self, part: _Part, tick: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every device of ``part`` reads its row of ``values``: its level and alarm."""
        self.clock[0] = float(tick)
        finite_all = np.isfinite(values)
        self.rejected["not_finite"] += int(np.count_nonzero(~finite_all.all(axis=1)))
        finite = finite_all[:, self.take]
        scaled = np.minimum(1.0, np.maximum(0.0, (values[:, self.take] - self.low) / self.span))
        complete = finite.all(axis=1)
        if self.shared:
            level = shared_tick(part.models, part.policies, part.devices.readings, self.priors,
                                self.gate, scaled, finite, complete)
        else:
            models, devices = part.models, part.devices
            due = np.flatnonzero(models.stale >= self.detector.refresh_every)
            if len(due):
                models.refresh(due, self.priors)
            z = models.residuals(slice(None), scaled, finite)
            level = part.policies.observe(slice(None), z)
            learn = np.flatnonzero(self.gate(level, devices.readings, complete))
            devices.readings += 1
            models.learn(learn, scaled[learn])
            if self.gateway is not None:
                self._take_part(part)
        return level, level > part.policies.threshold

    def _publish_at(self, part: _Part, tick: int, joined: bool) -> None:
        """The round cycle at ``tick``: a new round (and model) to every device online, and
        what is retained to the devices that join now."""
        if self.gateway is None:
            return
        if tick % self.schedule.round_rows == 0:
            self._receive(self.gateway.next_round(tick), part, np.arange(len(part.members)))
        if joined and tick > 0:
            fresh = np.flatnonzero(self.starts[part.members] == tick)
            self._receive(self.gateway.retained, part, fresh)

    def _receive(self, published: list[tuple[str, bytes]], part: _Part, rows: np.ndarray) -> None:
        """``rows`` receive the published messages: decoded once, as each vehicle decodes them."""
        if not len(rows):
            return
        for topic, payload in published:
            if topic == topics.ROUND_TOPIC:
                info, reason = receive(RoundOpen, payload, self.dataset.schema)
                if info is not None:
                    self.info = info
                    part.devices.round[rows] = info.round
            else:
                model, reason = receive(GlobalModel, payload, self.dataset.schema)
                if model is not None:
                    if payload not in self.adopted:
                        self.adopted[payload] = self.priors.add(model)
                    position = self.adopted[payload]
                    older = self.priors.versions[part.models.prior[rows]] < model.version
                    part.models.adopt(rows[older], position)
            if reason is not None:
                self.rejected[reason] += len(rows)

    def _take_part(self, part: _Part) -> None:
        """The devices that owe the open round an update send it, in the schedule's order."""
        devices, models = part.devices, part.models
        learned = models.recent.n if self.vehicles is None else (models.history_n
                                                                 + models.recent.n)
        owes = np.flatnonzero((devices.round > 0) & (devices.round != devices.sent)
                              & ~devices.exhausted & (learned >= devices.due))
        if not len(owes):
            return
        if self.vehicles is None:
            self._send_exact(part, owes)
        else:
            for row in owes.tolist():
                self._send_private(part, row)

    def _send_exact(self, part: _Part, rows: np.ndarray) -> None:
        """Exact updates, as :meth:`devices.onboard.vehicle.Vehicle.take_part` sends them without
        privacy: each device's readings learned since its last update."""
        assert self.gateway is not None
        schema, devices = self.dataset.schema, part.devices
        recent = part.models.take_summary(rows)
        versions = self.priors.versions[part.models.prior[rows]]
        budget = self.budget if math.isfinite(self.budget) else 0.0
        for k, row in enumerate(rows.tolist()):
            vehicle_id = self.ids[int(part.members[row])]
            summary = ModelSummary(schema.names, float(recent.n[k]), recent.mean[k], recent.cov[k])
            self.gateway.offer(vehicle_id, Update(
                vehicle_id, int(devices.round[row]), int(versions[k]), summary, 0.0, 0.0, 0.0,
                self.clock[0], 0.0, schema.digest, privacy="off", mechanism="none",
                epsilon_budget=budget))
        devices.sent[rows] = devices.round[rows]
        self.updates += len(rows)

    def _send_private(self, part: _Part, row: int) -> None:
        """One device's release, made by its own vehicle from what its detector learned (its
        history is already the vehicle's: every reading it learned was handed to it before
        one of its releases, and each release folds them in)."""
        assert self.gateway is not None and self.vehicles is not None
        vehicle, models = self.vehicles[int(part.members[row])], part.models
        one = np.array([row])
        vehicle.round = self.info
        vehicle.global_model = self.priors.models[int(models.prior[row])]
        n, mean, cov = models.recent.moments(one)
        vehicle.detector.fold(ModelSummary(self.dataset.schema.names, float(n[0]), mean[0],
                                           cov[0]))
        for out in vehicle.take_part():
            if isinstance(out.message, Update):
                self.gateway.offer(vehicle.vehicle_id, out.message)
        if vehicle.detector.recent_readings == 0:  # taken; otherwise its budget is spent
            models.take_summary(one)
        part.devices.due[row] = vehicle.next_release_readings
        part.devices.exhausted[row] = vehicle.exhausted
        part.devices.sent[row] = vehicle.last_sent_round

    def _result(self, seconds: float) -> Run:
        streams, vehicles, gateway = self.dataset.streams, self.vehicles, self.gateway
        run = Run(self.regime, {s.device_id: self.scores[i] for i, s in enumerate(streams)},
                  {s.device_id: self.alarms[i] for i, s in enumerate(streams)}, seconds=seconds)
        run.thresholds = {s.device_id: float(self.policies.threshold[i])
                          for i, s in enumerate(streams)}
        run.gateway_result(gateway)
        if vehicles is not None:
            run.epsilon_spent = max(v.ledger.epsilon_total for v in vehicles)
            run.updates = sum(v.updates_sent for v in vehicles)
            for vehicle in vehicles:
                self.rejected.update(vehicle.rejected)
        else:
            run.updates = self.updates
        run.rejected = dict(+self.rejected)
        return run
