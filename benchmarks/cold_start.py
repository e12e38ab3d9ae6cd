"""What a late-joining vehicle's alert level does in its first readings, against its healthy twin.

``fedfleet evaluate --dataset sim:N`` measures cold start as the late vehicles' PR-AUC over
their first 10 % of readings, pooled. This command looks behind that figure. It plans
``sim:N`` as the evaluation does (the same late vehicles, half of them with a fault: in turn
one that begins in their first 10 %, and one they arrive with), replays the federated regime
over the other vehicles up to the late vehicles' join tick to obtain the fleet's model, then
drives each late vehicle alone through its first 10 % with that model (it keeps it: the model
moves little in that time), once per device setting given; and likewise each faulty one's
healthy twin, the same vehicle with the same seed and driving, and no fault. For each kind of
fault, over the late vehicles with it and those with no fault in the window, per setting it
prints:

- ``PR-AUC``, ``ROC-AUC``: over the window, pooled (``cold_start``'s ``by_onset``; a device
  alone does not score yet, so its PR-AUC is ``prevalence``);
- ``twin ROC``: the faulty vehicles' levels after their fault's onset against their twins'
  levels at the same readings; 0.5 when the level does not respond to the fault at all;
- ``fault - twin``: the mean level difference over those readings; ``twin level``: the
  twins' mean level there (what healthy driving alone gives).

Before them it prints how far each fault has moved its sensors from the twin's readings,
half-way through the window and at its end.

References get the same figures: ``clock``, a score that counts the readings since joining
(no detector at all); ``own model``, each vehicle judged by the device's detector fitted on its
twin's 7,290 later healthy readings (knowledge no vehicle has when it joins); and two ceilings
of another kind, ``own linear`` and ``own linear, 60 s lags``: per vehicle, a least-squares
fit of each health sensor on the operating conditions (and, in the second, on their 60 s
exponential averages too, which follow the thermal lags the device's detector cannot see),
again on the twin's later healthy readings; the score is the largest standardised residual
smoothed as the alert level is (``alpha`` of the vehicle preset).

    python -m benchmarks.cold_start --vehicles 200 --set burn_in_readings=0 \\
        --set own_mean_after=0,alpha=0.01
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from analytics.datasets import Dataset, load, simulated_faults, split_devices
from analytics.replay import Schedule, run_online
from devices.onboard.detector import FleetGaussian, make_pipeline
from devices.onboard.tuning import VEHICLE, Tuning
from devices.onboard.vehicle import Vehicle
from devices.sim.faults import FaultSpec
from devices.sim.simulator import SimulatedVehicle
from federation import messages, topics
from federation.features import VEHICLE_SCHEMA
from federation.messages import GlobalModel

DURATION_S = 8100.0  # a simulated vehicle's stream in ``sim:N``
Drive = Callable[[SimulatedVehicle], np.ndarray]


def fleet_model(vehicles: int, seed: int, late_fraction: float, cold_fraction: float,
                join_tick: int) -> GlobalModel:
    """The federated regime's global model when the late vehicles join."""
    fleet = load(f"sim:{vehicles}", seed=seed, duration_s=join_tick + 1,
                 late_fraction=late_fraction, cold_fraction=cold_fraction)
    late = split_devices([s.device_id for s in fleet.streams], late_fraction, seed)
    early = Dataset(fleet.name, fleet.columns,
                    [s for s in fleet.streams if s.device_id not in late], fleet.conditions,
                    schema=fleet.schema)
    run = run_online(early, Schedule.plan(early, seed, late_fraction=0.0), "federated",
                     seed=seed, tuning=VEHICLE)
    if run.model is None:
        raise SystemExit("no global model before the late vehicles join")
    return run.model


def driver(tuning: Tuning, model: GlobalModel | None, readings: int,
           detector: FleetGaussian | None = None) -> Drive:
    """Drive a vehicle ``readings`` readings with ``tuning`` (and ``model`` as retained)."""
    def drive(source: SimulatedVehicle) -> np.ndarray:
        kwargs = tuning.vehicle_kwargs(VEHICLE_SCHEMA, copy.deepcopy(detector))
        vehicle = Vehicle(source.vehicle_id, source, mechanism=None, clock=lambda: 0.0,
                          **kwargs)
        if model is not None:
            vehicle.on_message(topics.MODEL_TOPIC, messages.encode(model))
        levels = np.empty(readings)
        for k in range(readings):
            vehicle.step()
            levels[k] = vehicle.policy.level
        return levels
    return drive


def twin_readings(vehicle_id: str, seed: int) -> list[dict[str, float]]:
    """The vehicle's healthy twin's whole stream, read once for every reference."""
    twin = SimulatedVehicle(vehicle_id, seed)
    return [twin.read().values for _ in range(int(DURATION_S))]


def own_model(twin: list[dict[str, float]], skip: int) -> FleetGaussian:
    """A model of the vehicle's own, fitted on its healthy twin's readings after ``skip``."""
    detector = VEHICLE.detector(VEHICLE_SCHEMA)
    pipeline = make_pipeline(detector)
    for values in twin[skip:]:
        pipeline.learn_one(values)
    detector.take_summary()
    return detector


def lagged_reference(twin: list[dict[str, float]], readings: int,
                     lags_s: float | None) -> tuple[Drive, np.ndarray]:
    """The ``own linear`` ceilings: a per-vehicle regression fitted on the healthy twin's
    readings after the window, and its residuals' standard deviation per health sensor there
    (physical units)."""
    conditions = [f.name for f in VEHICLE_SCHEMA.features if not f.is_health]

    def design(rows: list[dict[str, float]]) -> np.ndarray:
        x = np.array([[row[name] for name in conditions] for row in rows])
        columns = [np.ones((len(x), 1)), x]
        if lags_s is not None:
            gain, average, averaged = -math.expm1(-1.0 / lags_s), x[0].copy(), np.empty_like(x)
            for k, row in enumerate(x):
                average += gain * (row - average)
                averaged[k] = average
            columns.append(averaged)
        return np.hstack(columns)

    def health(rows: list[dict[str, float]]) -> np.ndarray:
        return np.array([[row[name] for name in VEHICLE_SCHEMA.health] for row in rows])

    x, y = design(twin)[readings:], health(twin)[readings:]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    spread = (y - x @ coef).std(axis=0)

    def drive(source: SimulatedVehicle) -> np.ndarray:
        window = [source.read().values for _ in range(readings)]
        z = (health(window) - design(window) @ coef) / spread
        smoothed, levels = np.zeros(z.shape[1]), np.empty(readings)
        for k, residual in enumerate(z):
            smoothed += VEHICLE.alpha * (residual - smoothed)
            levels[k] = np.abs(smoothed).max()
        return levels
    return drive, spread


def by_vehicle(drives: dict[str, Drive]) -> Drive:
    """Drive each vehicle with its own entry of ``drives``."""
    return lambda source: drives[source.vehicle_id](source)


def figures(drive: Drive, late: list[str], plan: dict[str, FaultSpec], seed: int,
            readings: int) -> dict[str, float]:
    """The window's pooled ranking, and how the faulty vehicles' levels differ from twins'."""
    labels, scores, faulty, twins = [], [], [], []
    for vehicle_id in late:
        fault = plan.get(vehicle_id)
        levels = drive(SimulatedVehicle(vehicle_id, seed, fault))
        after = np.arange(readings) > (fault.onset_s if fault else math.inf)
        labels.append(after)
        scores.append(levels)
        if after.any():
            faulty.append(levels[after])
            twins.append(drive(SimulatedVehicle(vehicle_id, seed))[after])
    y, score = np.concatenate(labels), np.concatenate(scores)
    hot, cold = np.concatenate(faulty), np.concatenate(twins)
    return {
        "PR-AUC": average_precision_score(y, score), "ROC-AUC": roc_auc_score(y, score),
        "twin ROC": roc_auc_score(np.r_[np.ones(len(hot)), np.zeros(len(cold))], np.r_[hot, cold]),
        "fault - twin": float(np.mean(hot - cold)), "twin level": float(np.mean(cold)),
        "prevalence": float(y.mean()),
    }


def shifts(vehicle_id: str, fault: FaultSpec, seed: int, readings: int) -> str:
    """How far the fault has moved its subsystem's sensors from the twin's, half-way through
    the window and at its end (physical units)."""
    faulty, twin = SimulatedVehicle(vehicle_id, seed, fault), SimulatedVehicle(vehicle_id, seed)
    at = {readings // 2: "", readings - 1: ""}
    sensors = VEHICLE_SCHEMA.subsystems[fault.subsystem]
    for k in range(readings):
        a, b = faulty.read().values, twin.read().values
        if k in at:
            at[k] = ", ".join(f"{name} {a[name] - b[name]:+.3g}" for name in sensors)
    return (f"{vehicle_id} {fault.mode.value}, onset {fault.onset_s:.0f} s: "
            + "; ".join(f"at reading {k + 1}: {text}" for k, text in at.items()))


def setting(text: str) -> Tuning:
    """``KEY=VALUE[,KEY=VALUE...]`` over the vehicle preset's fields."""
    changes: dict[str, float | int] = {}
    for pair in text.split(","):
        key, _, value = pair.partition("=")
        if key not in Tuning.__dataclass_fields__:
            raise argparse.ArgumentTypeError(f"no device setting {key!r}")
        changes[key] = type(getattr(VEHICLE, key))(value)
    return dataclasses.replace(VEHICLE, **changes)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--late-fraction", type=float, default=0.1)
    parser.add_argument("--cold-fraction", type=float, default=0.1)
    parser.add_argument("--set", type=setting, action="append", default=[], dest="settings",
                        metavar="KEY=VALUE[,...]", help="a device setting to compare with the "
                        "vehicle preset (fields of devices.onboard.tuning.Tuning); repeatable")
    args = parser.parse_args()
    ids = [f"veh-{i:04d}" for i in range(args.vehicles)]
    late = sorted(split_devices(ids, args.late_fraction, args.seed))
    if not late:
        raise SystemExit("no late vehicles: raise --vehicles or --late-fraction")
    plan = simulated_faults(ids, args.seed, DURATION_S, args.late_fraction, args.cold_fraction)
    readings = math.ceil(args.cold_fraction * DURATION_S)
    join_tick = int(DURATION_S) // 2  # Schedule.plan: half the median stream
    print(f"fleet model at tick {join_tick} ({args.vehicles - len(late)} vehicles) ...",
          flush=True)
    model = fleet_model(args.vehicles, args.seed, args.late_fraction, args.cold_fraction,
                        join_tick)
    rows: list[tuple[str, Drive]] = [
        ("preset", driver(VEHICLE, model, readings)),
        *((_changed(tuning), driver(tuning, model, readings)) for tuning in args.settings),
        ("clock", lambda source: np.arange(readings, dtype=float)),
    ]
    mute = dataclasses.replace(VEHICLE, burn_in_readings=0, learn_below=0.0)
    twins = {v: twin_readings(v, args.seed) for v in late}
    rows.append(("own model", by_vehicle({
        v: driver(mute, None, readings, own_model(twins[v], readings)) for v in late})))
    for name, lags_s in (("own linear", None), ("own linear, 60 s lags", 60.0)):
        fits = {v: lagged_reference(twins[v], readings, lags_s) for v in late}
        median = np.median([spread for _, spread in fits.values()], axis=0)
        pairs = zip(VEHICLE_SCHEMA.health, median, strict=True)
        print(f"{name}: healthy residual std, median over the late vehicles: "
              + ", ".join(f"{sensor} {value:.3g}" for sensor, value in pairs))
        rows.append((name, by_vehicle({v: drive for v, (drive, _) in fits.items()})))
    onsets = {v: plan[v].onset_s for v in late if v in plan and plan[v].onset_s < readings}
    print(f"{len(late)} late vehicles, {len(onsets)} with a fault in their first {readings} "
          "readings; its shift from the healthy twin:")
    for vehicle_id in onsets:
        print("  " + shifts(vehicle_id, plan[vehicle_id], args.seed, readings))
    columns = ("PR-AUC", "ROC-AUC", "twin ROC", "fault - twin", "twin level", "prevalence")
    width = max(len(name) for name, _ in rows) + 2
    arrived = {v for v, onset_s in onsets.items() if onset_s < 0}
    groups = {"a fault that begins in the window": [v for v in late if v not in arrived],
              "a fault they arrive with": [v for v in late if v in arrived or v not in onsets]}
    for group, vehicles in groups.items():
        faulty = sum(1 for v in vehicles if v in onsets)
        print(f"\nthe late vehicles with {group} ({faulty}) and those with none in the window "
              f"({len(vehicles) - faulty}):")
        if not faulty:
            continue
        print(f"{'setting':<{width}}" + "".join(f"{c:>13}" for c in columns))
        for name, drive in rows:
            got = figures(drive, vehicles, plan, args.seed, readings)
            print(f"{name:<{width}}" + "".join(f"{got[c]:>13.3f}" for c in columns), flush=True)


def _changed(tuning: Tuning) -> str:
    return ",".join(f"{f.name}={getattr(tuning, f.name):g}" for f in dataclasses.fields(tuning)
                    if getattr(tuning, f.name) != getattr(VEHICLE, f.name))


if __name__ == "__main__":
    main()
