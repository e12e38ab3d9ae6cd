"""The prequential replay: every regime sees the identical interleaved streams and schedule.

Time advances in ticks. At each tick every device that has joined and has rows left reads its
next row, in a seeded device order fixed for the run: the device's detector scores the row,
then learns from it (prequential: score before learn). Every ``round_rows`` ticks a round
closes and the next opens, exactly as a gateway would: the devices' updates of the round are
merged into the next global model, which every device adopts. Held-out devices join late, at
``join_tick``, and receive the latest global model (retained) on joining.

The online regimes run the live system's own code: each device is a
:class:`devices.onboard.vehicle.Vehicle` (detector, alert policy, learning gate, summary, privacy
noise), updates are validated and accepted as the gateway does (:mod:`analytics.rounds`) and
combined by a strategy of :mod:`gateway.strategy` (the gateway's default unless told). A row's
score is the alert policy's smoothed level, and its alarm is whether that level passed the
policy's threshold: what the device acts on.

- ``local``: no rounds;
- ``federated``: rounds with exact summaries;
- ``federated_dp``: rounds with the vehicle's privacy mechanism, its releases calibrated to
  the run's budget (:func:`federation.privacy.calibrated`), each device keeping a privacy
  ledger; with ``central`` the devices send clipped summaries and the gateway noises their
  aggregate (:mod:`gateway.private`), or, with secure rounds, each round's releases are
  summed by secure aggregation, which adds the noise (:mod:`analytics.secure`);
- ``centralized``: every device scores with, and learns into, one shared detector (all rows
  pooled in time order), each keeping its own alert policy;
- ``batch_reference``: see :mod:`analytics.batch`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from analytics.attacks import Attack
from analytics.datasets import Dataset, Progress, Stream, split_devices
from analytics.rounds import RoundCycle
from analytics.secure import SecureRounds, SecureSum
from devices.onboard.ledger import PrivacyLedger
from devices.onboard.tuning import ENGINE_CYCLES, TEST_RIG, VEHICLE, Tuning
from devices.onboard.vehicle import Vehicle
from devices.sources import Reading, SensorSource
from federation import topics
from federation.messages import GlobalModel, Update
from federation.privacy import Mechanism, SeededNoise
from gateway.strategy import Strategy

__all__ = [
    "CLIP_NORM", "TUNINGS", "Progress", "Run", "Schedule", "choose_tuning", "run_online",
    "tuning_for",
]



@dataclass(frozen=True)
class Schedule:
    """When each device starts, the device order within a tick, and the round cadence.

    Examples
    --------
    >>> from analytics.datasets import load
    >>> fleet = load("sim:10", seed=1, duration_s=300)
    >>> plan = Schedule.plan(fleet, seed=1, round_rows=30, late_fraction=0.2)
    >>> sorted(plan.late), plan.join_tick, plan.start["veh-0004"], plan.start["veh-0000"]
    (['veh-0004', 'veh-0005'], 150, 150, 0)
    """

    order: tuple[int, ...]
    start: dict[str, int]
    round_rows: int
    join_tick: int
    late: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def plan(cls, dataset: Dataset, seed: int, round_rows: int = 30,
             late_fraction: float = 0.1) -> Schedule:
        if round_rows < 1:
            raise ValueError(f"round_rows must be at least 1, got {round_rows}")
        streams = dataset.streams
        late = split_devices([s.device_id for s in streams], late_fraction, seed)
        join_tick = int(np.median([len(s) for s in streams])) // 2
        order = tuple(np.random.default_rng(seed).permutation(len(streams)).tolist())
        start = {s.device_id: join_tick if s.device_id in late else 0 for s in streams}
        return cls(order, start, round_rows, join_tick, frozenset(late))


@dataclass
class Run:
    """One regime's replay: each device's score and alarm on every row, what it cost, and
    the last global model of a federated regime (and, of a secure one, its unmasked sums)."""

    regime: str
    scores: dict[str, np.ndarray]
    alarms: dict[str, np.ndarray]
    rounds: int = 0
    epsilon_spent: float = 0.0
    seconds: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    updates: int = 0
    noise_std: float = 0.0
    model: GlobalModel | None = None
    refused: dict[str, int] = field(default_factory=dict)
    infeasible_models: int = 0
    secure_sums: list[SecureSum] = field(default_factory=list)

    def gateway_result(self, gateway: RoundCycle | None) -> None:
        """What the round cycle of a federated regime leaves: its rounds, last model (and its
        noise), the updates it refused by reason and the infeasible models it made."""
        if gateway is None:
            return
        self.rounds, self.model = gateway.rounds, gateway.model
        self.noise_std = gateway.model.noise_std if gateway.model else 0.0
        self.refused = dict(gateway.rejected)
        self.infeasible_models = gateway.infeasible
        if gateway.secure is not None:
            self.secure_sums = list(gateway.secure.sums)


CLIP_NORM = 4.0  # the fleet's default (fedfleet/config.py)


class _Rows(SensorSource):
    """A stream's rows as readings, one per ``read``."""

    def __init__(self, stream: Stream, columns: tuple[str, ...]) -> None:
        self._times = stream.times_s.tolist()
        self._rows = stream.values.tolist()
        self._columns = columns
        self.position = 0

    def read(self) -> Reading | None:
        if self.position >= len(self._rows):
            return None
        k, self.position = self.position, self.position + 1
        return Reading(self._times[k], dict(zip(self._columns, self._rows[k], strict=True)))


TUNINGS = {"vehicle": VEHICLE, "engine": ENGINE_CYCLES, "rig": TEST_RIG}


def tuning_for(dataset: Dataset) -> Tuning:
    """The device settings for the dataset's kind of machine and cadence of readings."""
    return choose_tuning(dataset)[0]


def choose_tuning(dataset: Dataset) -> tuple[Tuning, str]:
    """The device settings for ``dataset``, and why, in words for its user.

    A dataset of a known kind gets its preset. Others get the road vehicle's unless their
    devices are too short for it (a median below twice the readings it needs before it
    scores): then the per-cycle preset, whose devices score from their 30th reading.
    """
    kind = dataset.name.partition(":")[0]
    known = {"cmapss": "engine", "skab": "rig", "sim": "vehicle"}
    if kind in known:
        return TUNINGS[known[kind]], f"{known[kind]}, the preset for {kind}"
    median_rows = int(np.median([len(stream) for stream in dataset.streams]))
    if median_rows >= 2 * VEHICLE.min_readings:
        return VEHICLE, (f"vehicle (a reading a second): devices have a median of "
                         f"{median_rows:,} rows; --tuning engine or rig for other cadences")
    return ENGINE_CYCLES, (
        f"engine (a reading per duty cycle): devices have a median of {median_rows:,} rows, "
        f"too few for --tuning vehicle, which scores from reading "
        f"{VEHICLE.min_readings:,}; choose another with --tuning")


def run_online(
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
    """Replay ``dataset`` under ``regime`` (``local``, ``federated``, ``federated_dp``,
    ``centralized``); ``mechanism`` privatizes the updates of ``federated_dp``, on each device
    or, with ``central``, at the gateway (with ``secure``, by secure aggregation in each
    round: :mod:`analytics.secure`); each device stops sending updates once its ledger says
    they would pass ``budget``; the devices run with ``tuning`` (by default the preset for the
    dataset's kind); the gateway combines with ``strategy`` (default the mean), and
    ``attack`` alters its attackers' updates."""
    tuning = tuning or tuning_for(dataset)
    shared = tuning.detector(dataset.schema) if regime == "centralized" else None
    clock = [0.0]
    vehicles = [
        Vehicle(_vehicle_id(s.device_id), _Rows(s, dataset.columns), mechanism=mechanism,
                central=central, noise=SeededNoise([seed, i]), clock=lambda: clock[0],
                last_call=0.0,  # delivery is instant here: nothing arrives late
                ledger=PrivacyLedger(None, budget=budget,
                                     delta=mechanism.delta if mechanism else 0.5),
                **tuning.vehicle_kwargs(dataset.schema, shared))
        for i, s in enumerate(dataset.streams)
    ]
    gateway = (RoundCycle(schedule.round_rows, dataset.schema, SeededNoise([seed, len(vehicles)]),
                          strategy, attack, schedule.start, secure)
               if regime.startswith("federated") else None)
    run = Run(regime, {s.device_id: np.zeros(len(s)) for s in dataset.streams},
              {s.device_id: np.zeros(len(s), dtype=bool) for s in dataset.streams})
    starts = [schedule.start[s.device_id] for s in dataset.streams]
    ends = [start + len(s) for start, s in zip(starts, dataset.streams, strict=True)]
    began, done = time.monotonic(), 0
    with _quiet("devices.onboard.vehicle"):
        for tick in range(max(ends)):
            clock[0] = float(tick)
            if gateway is not None and tick % schedule.round_rows == 0:
                _publish(gateway.next_round(tick), [v for v, s, e in zip(
                    vehicles, starts, ends, strict=True) if s <= tick < e])
            active = [i for i in schedule.order if starts[i] <= tick < ends[i]]
            for i in active:
                if gateway is not None and tick == starts[i] > 0:
                    _publish(gateway.retained, [vehicles[i]])
                _step(vehicles[i], dataset.streams[i].device_id, tick - starts[i], run, gateway)
            done += len(active)
            if progress is not None and (tick % 500 == 0 or tick == max(ends) - 1):
                progress(regime, done, dataset.rows)
    run.seconds = time.monotonic() - began
    run.gateway_result(gateway)
    run.epsilon_spent = max(v.ledger.epsilon_total for v in vehicles)
    run.updates = sum(v.updates_sent for v in vehicles)
    run.rejected = dict(sum((v.rejected for v in vehicles), Counter()))
    run.thresholds = {s.device_id: v.policy.threshold
                      for s, v in zip(dataset.streams, vehicles, strict=True)}
    return run


def _publish(published: list[tuple[str, bytes]], vehicles: list[Vehicle]) -> None:
    for vehicle in vehicles:
        for topic, payload in published:
            vehicle.on_message(topic, payload)


def _step(vehicle: Vehicle, device: str, row: int, run: Run, gateway: RoundCycle | None) -> None:
    """One reading: the vehicle scores, learns and sends; record what it acts on."""
    for out in vehicle.step():
        if gateway is not None and isinstance(out.message, Update):
            gateway.offer(vehicle.vehicle_id, out.message)
    run.scores[device][row] = vehicle.policy.level
    run.alarms[device][row] = vehicle.policy.level > vehicle.policy.threshold


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Hold back a component's per-message warnings: the run counts its rejections instead."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _vehicle_id(device_id: str) -> str:
    return topics.check_vehicle_id(device_id)


def stderr_progress(every_s: float = 5.0) -> Progress:
    """Report a regime's progress on stderr at most every ``every_s`` seconds, and at its end."""
    last = {"at": 0.0}

    def report(regime: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last["at"] < every_s:
            return
        last["at"] = now
        print(f"  {regime}: {done:,}/{total:,} rows ({100 * done / max(1, total):.0f} %)",
              file=sys.stderr, flush=True)

    return report
