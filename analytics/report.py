"""Run every regime on one dataset and gather the figures into one JSON-ready report.

The report's shape::

    {"dataset", "devices", "rows", "time_unit", "settings",
     "regimes": {name: {pooled metrics, "lead_time" (run-to-failure data), "rounds", ...}},
     "per_device": {device: {regime: metrics}},
     "federated_vs_local": {metric: devices where federated beats local on it},
     "no_worse_than_local": {noised regime: devices whose PR-AUC is at most 0.01 below local},
     "ratios": {PR-AUC of federated over centralized, batch_reference and local},
     "cold_start": {late-joining devices over their first readings, federated vs local},
     "skab_protocol": {regime: F1, FAR, MAR, and the same over "valve1" and the "held_out"
                       other experiments} (SKAB only), "notes"}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from analytics import skab
from analytics.attacks import Attack
from analytics.batch import MAX_SCORED_ROWS, run_batch
from analytics.datasets import Dataset, Stream
from analytics.metrics import detection, lead_time, lead_times, wins
from analytics.replay import CLIP_NORM, Progress, Run, Schedule, run_online, tuning_for
from analytics.secure import MIN_VEHICLES, SecureRelease, SecureRounds
from analytics.vectorized import run_vectorized
from devices.onboard.tuning import Tuning
from federation.privacy import Mechanism, calibrated
from federation.secagg.params import RoundPlan, SecAggConfig, release_epsilon
from gateway.strategy import DEFAULT_STRATEGY, make_strategy

__all__ = ["REPLAYS", "dp_regime", "evaluate"]

ONLINE = ("local", "federated", "centralized")
# The per-reading replay through the devices' own River code, and the same on arrays.
REPLAYS = {"vectorized": run_vectorized, "per-reading": run_online}


def _mechanism(privacy: str, mechanism: str, budget: float, releases: int, delta: float,
               clip_norm: float, devices: int, features: int) -> Mechanism:
    """The mechanism of a noised regime: ``releases`` of it compose to ``budget``. A secure
    release (``privacy="secagg"``) is clipped as a central one and charged the zCDP ``rho``
    of the fleet's round plan; the protocol adds its noise in the round
    (:mod:`analytics.secure`)."""
    if privacy != "secagg":
        return calibrated(mechanism, budget, releases, delta, clip_norm)
    epsilon = release_epsilon(budget, releases, delta)
    dimension = features + features * (features + 1) // 2
    plan = RoundPlan.make(SecAggConfig(dimension, clip_norm, epsilon, delta),
                          max(devices, MIN_VEHICLES))
    return SecureRelease(epsilon, delta, clip_norm, rho=plan.rho)


def dp_regime(epsilon: float) -> str:
    """The regime name of the privacy-noised federation at ``epsilon`` per device.

    >>> dp_regime(1.0), dp_regime(0.5)
    ('federated_dp_eps=1', 'federated_dp_eps=0.5')
    """
    return f"federated_dp_eps={epsilon:g}"


def evaluate(
    dataset: Dataset,
    *,
    epsilons: Sequence[float] = (),
    seed: int = 0,
    round_rows: int = 30,
    late_fraction: float = 0.1,
    cold_fraction: float = 0.1,
    delta: float = 1e-5,
    privacy: str = "central",
    mechanism: str = "gaussian",
    clip_norm: float = CLIP_NORM,
    tuning: Tuning | None = None,
    replay: str = "vectorized",
    progress: Progress | None = None,
    strategy: str = DEFAULT_STRATEGY,
    attack: str | None = None,
    attackers: float = 0.2,
    secagg_dropout: float = 0.0,
) -> tuple[dict[str, Any], dict[str, Run]]:
    """Replay every regime on identical streams and schedule; return the report and runs.

    Each of ``epsilons`` is a device's budget over the whole run, for one noised regime with
    ``mechanism`` noise added at the gateway (``privacy="central"``) or on the devices
    (``"local"``), or, for ``"secagg"``, by secure aggregation: each round's releases run
    through the real protocol, ``secagg_dropout`` of its vehicles dropping out
    (:mod:`analytics.secure`). Each release spends what
    makes the most releases any device makes (before its last reading, on the tuning's
    schedule) compose to the budget. ``replay`` names how
    the online regimes are replayed (:data:`REPLAYS`: the same scores either way). The
    gateway combines with ``strategy`` (:mod:`gateway.strategy`); with ``attack``, every
    federated regime is run again with ``attackers`` of the devices poisoning their updates
    (:mod:`analytics.attacks`), as ``REGIME+ATTACK``, and the report's ``"attack"`` compares
    them."""
    schedule = Schedule.plan(dataset, seed, round_rows, late_fraction)
    tuning = tuning or tuning_for(dataset)
    replayed = REPLAYS[replay]
    hostile = (Attack.choose(attack, [s.device_id for s in dataset.streams], attackers, seed)
               if attack else None)

    def run(data: Dataset, plan: Schedule, name: str, **kwargs: Any) -> Run:
        return replayed(data, plan, name, strategy=make_strategy(strategy), **kwargs)

    runs = {name: run(dataset, schedule, name, seed=seed, tuning=tuning, progress=progress)
            for name in ONLINE}
    releases = max(1, max(tuning.releases_within(len(s) - 1) for s in dataset.streams))
    noised: dict[str, Any] = {}
    budget_of = {dp_regime(epsilon): epsilon for epsilon in epsilons}

    def private(budget: float) -> dict[str, Any]:
        """The options of the noised regime at ``budget``: a secure one's rounds are fresh."""
        chosen = _mechanism(privacy, mechanism, budget, releases, delta, clip_norm,
                            len(dataset.streams), len(dataset.schema))
        secure = SecureRounds(dataset.schema, epsilon=chosen.epsilon, delta=delta,
                              clip_norm=clip_norm, seed=seed, dropout=secagg_dropout) if (
            privacy == "secagg") else None
        return {"mechanism": chosen, "central": privacy != "local", "budget": budget,
                "secure": secure}

    for epsilon in epsilons:
        name = dp_regime(epsilon)
        options = private(epsilon)
        runs[name] = run(dataset, schedule, name, seed=seed, tuning=tuning, progress=progress,
                         **options)
        noised[name] = _noised(options["mechanism"], runs[name])
    if hostile is not None:
        for name in [n for n in runs if n.startswith("federated")]:
            options = private(budget_of[name]) if name in budget_of else {}
            runs[f"{name}+{attack}"] = run(dataset, schedule, f"{name}+{attack}", seed=seed,
                                           tuning=tuning, progress=progress, attack=hostile,
                                           **options)
    runs["batch_reference"] = run_batch(dataset, schedule, seed=seed, progress=progress)
    regimes = {}
    for k, (name, done) in enumerate(runs.items()):  # progress: the rows measured, pooled,
        regimes[name] = _pooled(dataset, done) | noised.get(name, {})  # then per device
        if progress is not None:
            progress("metrics", (k + 1) * dataset.rows, (len(runs) + 1) * dataset.rows)
    per_device = _per_device(dataset, runs)
    if progress is not None:
        progress("metrics", (len(runs) + 1) * dataset.rows, (len(runs) + 1) * dataset.rows)
    report = {
        "dataset": dataset.name,
        "devices": len(dataset.streams),
        "rows": dataset.rows,
        "time_unit": dataset.time_unit,
        "settings": {"seed": seed, "round_rows": round_rows, "epsilons": list(epsilons),
                     "delta": delta, "privacy": privacy, "mechanism": mechanism,
                     "clip_norm": clip_norm, "releases": releases,
                     "late_devices": sorted(schedule.late),
                     "join_tick": schedule.join_tick, "cold_fraction": cold_fraction,
                     "tuning": asdict(tuning), "replay": replay, "strategy": strategy,
                     "secagg_dropout": secagg_dropout},
        "regimes": regimes,
        "per_device": per_device,
        "federated_vs_local": _wins(per_device, "federated", "local"),
        "no_worse_than_local": {name: _no_worse(per_device, name, "local") for name in noised},
        "ratios": _ratios(regimes),
        "cold_start": _cold_start(dataset, runs, schedule, cold_fraction),
        "notes": [*dataset.notes, *_sampled(dataset, runs["batch_reference"])],
    }
    if hostile is not None:
        report["attack"] = _attack(hostile, regimes, runs)
    if dataset.name.startswith("skab:"):
        # The rig preset's threshold factor was chosen on the valve1 experiments: the others
        # are held out of that choice.
        report["skab_protocol"] = {
            name: skab.outlier_protocol(dataset, run)
            | {"valve1": skab.outlier_protocol(dataset, run, prefix="valve1"),
               "held_out": skab.outlier_protocol(dataset, run, prefix="!valve1")}
            for name, run in runs.items()}
    return report, runs


def _noised(chosen: Mechanism, run: Run) -> dict[str, Any]:
    """A noised regime's release: its epsilon, the noise on the sum of a round's releases
    and the clip norm; for a secure regime, the median noise over its unmasked sums, how
    many it unmasked, of how many inputs, and the CPU time the protocol took."""
    if not isinstance(chosen, SecureRelease):
        return {"epsilon_per_release": round(chosen.epsilon, 6),
                "noise_std_per_release": round(chosen.noise_std, 6), "clip_norm": chosen.clip_norm}
    sums = run.secure_sums
    return {"epsilon_per_release": round(chosen.epsilon, 6),
            "noise_std_per_release": round(float(np.median([s.noise_std for s in sums]))
                                           if sums else 0.0, 6),
            "clip_norm": chosen.clip_norm, "secure_sums": len(sums),
            "secure_inputs": sum(s.inputs for s in sums),
            "secure_vehicle_cpu_seconds": round(sum(s.vehicle_cpu_seconds for s in sums), 1),
            "secure_gateway_cpu_seconds": round(sum(s.gateway_cpu_seconds for s in sums), 1)}


# How far below clean an attacked regime's pooled PR-AUC may be and still hold.
ATTACK_MARGIN = 0.05


def _attack(attack: Attack, regimes: dict[str, dict[str, Any]],
            runs: dict[str, Run]) -> dict[str, Any]:
    """Each federated regime clean and attacked: pooled PR-AUC, their ratio, whether it is
    within :data:`ATTACK_MARGIN` of clean, the updates the gateway refused and the global
    models outside the feasible region (always 0: every merge is made feasible)."""
    out: dict[str, Any] = {"kind": attack.kind, "attackers": sorted(attack.attackers),
                           "margin": ATTACK_MARGIN, "regimes": {}}
    for name in [n for n in regimes if n.startswith("federated") and "+" not in n]:
        clean = _float(regimes[name]["pr_auc"])
        attacked = _float(regimes[f"{name}+{attack.kind}"]["pr_auc"])
        ratio = _ratio(attacked, clean)
        hostile = runs[f"{name}+{attack.kind}"]
        out["regimes"][name] = {
            "pr_auc_clean": clean, "pr_auc_attacked": attacked, "ratio": ratio,
            "within_margin": ratio is not None and ratio >= 1 - ATTACK_MARGIN,
            "refused": hostile.refused, "infeasible_models": hostile.infeasible_models}
    return out


def _sampled(dataset: Dataset, run: Run) -> list[str]:
    """What the report says when the batch reference scored a sample of the devices."""
    if len(run.scores) == len(dataset.streams):
        return []
    rows = sum(len(scores) for scores in run.scores.values())
    return [f"batch_reference scores a seeded sample of {len(run.scores):,} of "
            f"{len(dataset.streams):,} devices ({rows:,} rows; it samples above "
            f"{MAX_SCORED_ROWS:,}, as a forest scores about 200,000 rows a second): its pooled "
            "figures and the ratio to it are over those devices"]


def _pooled(dataset: Dataset, run: Run) -> dict[str, Any]:
    streams = [s for s in dataset.streams if s.device_id in run.scores]
    metrics: dict[str, Any] = dict(detection(
        np.concatenate([s.labels for s in streams]),
        np.concatenate([run.scores[s.device_id] for s in streams]),
        np.concatenate([run.alarms[s.device_id] for s in streams])))
    if dataset.run_to_failure:
        leads = [lead_time(s.times_s, s.labels, run.alarms[s.device_id], s.failure_s)
                 for s in streams if s.failure_s is not None]
        metrics["lead_time"] = {"unit": dataset.time_unit, **lead_times(leads)}
    metrics.update(rounds=run.rounds, updates=run.updates,
                   epsilon_spent=round(run.epsilon_spent, 6),
                   global_noise_std=round(run.noise_std, 6),
                   rejected_messages=run.rejected, refused_updates=run.refused,
                   seconds=round(run.seconds, 1))
    return metrics


def _per_device(dataset: Dataset, runs: dict[str, Run]) -> dict[str, dict[str, Any]]:
    """Each device's metrics per regime, with its first-alarm lead time on run-to-failure data
    (0 where it never alarmed on an anomalous row: it gave no warning)."""
    out: dict[str, dict[str, Any]] = {}
    for s in dataset.streams:
        out[s.device_id] = {}
        for name, run in runs.items():
            if s.device_id not in run.scores:
                continue
            metrics: dict[str, Any] = dict(detection(s.labels, run.scores[s.device_id],
                                                     run.alarms[s.device_id]))
            if s.failure_s is not None:
                lead = lead_time(s.times_s, s.labels, run.alarms[s.device_id], s.failure_s)
                metrics["lead_time"] = 0.0 if lead is None else lead
            out[s.device_id][name] = metrics
    return out


# Per-device comparisons: the metric, and whether higher is better.
COMPARED = (("pr_auc", True), ("f1", True), ("false_alarms_per_1000", False), ("lead_time", True))


def _no_worse(per_device: dict[str, dict[str, Any]], regime: str, alone: str,
              margin: float = 0.01) -> dict[str, Any]:
    """On how many devices (with a PR-AUC under both) ``regime`` is at most ``margin`` below
    ``alone``: privacy must never make a device worse off than not federating.

    >>> devices = {"a": {"dp": {"pr_auc": 0.5}, "local": {"pr_auc": 0.505}},
    ...            "b": {"dp": {"pr_auc": 0.4}, "local": {"pr_auc": 0.6}},
    ...            "c": {"dp": {"pr_auc": None}, "local": {"pr_auc": None}}}
    >>> _no_worse(devices, "dp", "local")
    {'devices': 2, 'no_worse': 1, 'share': 0.5, 'margin': 0.01}
    """
    pairs = [(m[regime]["pr_auc"], m[alone]["pr_auc"]) for m in per_device.values()
             if m[regime]["pr_auc"] is not None and m[alone]["pr_auc"] is not None]
    fine = sum(ours >= theirs - margin for ours, theirs in pairs)
    return {"devices": len(pairs), "no_worse": fine,
            "share": round(fine / len(pairs), 3) if pairs else None, "margin": margin}


def _wins(per_device: dict[str, dict[str, Any]], first: str, second: str) -> dict[str, Any]:
    """Per metric, on how many devices with an anomaly ``first`` beats ``second`` (fewer false
    alarms is better; lead time only where the data runs to failure)."""
    def of(regime: str, metric: str) -> dict[str, float | None]:
        return {device: _float(m[regime].get(metric)) if m[regime]["anomalous"] else None
                for device, m in per_device.items()}

    def compare(metric: str, higher: bool, devices: set[str] | None = None) -> dict[str, Any]:
        a, b = of(first, metric), of(second, metric)
        if devices is not None:
            a = {k: v for k, v in a.items() if k in devices}
        return dict(wins(a, b) if higher else wins(_negated(a), _negated(b)))

    out: dict[str, Any] = {metric: compare(metric, higher) for metric, higher in COMPARED
                           if any(v is not None for v in of(first, metric).values())}
    # Where both rank a device's rows equally well (often PR-AUC 1.0 on one engine), what
    # each device acts on still differs: compare the tied devices on the finer metrics.
    pr_first, pr_second = of(first, "pr_auc"), of(second, "pr_auc")
    tied = {k for k, v in pr_first.items() if v is not None and v == pr_second.get(k)}
    out["pr_auc"]["ties"] = {metric: compare(metric, higher, tied)
                             for metric, higher in COMPARED[1:] if metric in out}
    return out


def _negated(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else -v for k, v in values.items()}


def _ratios(regimes: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    pr = {name: _float(metrics["pr_auc"]) for name, metrics in regimes.items()}
    return {f"federated_over_{name}": _ratio(pr["federated"], pr[name])
            for name in ("centralized", "batch_reference", "local")}


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return round(top / bottom, 3) if top is not None and bottom else None


def _cold_start(
    dataset: Dataset, runs: dict[str, Run], schedule: Schedule, fraction: float
) -> dict[str, Any]:
    """The late devices over their first ``fraction`` of rows, pooled, and per kind of fault.

    ``by_onset`` sets apart the devices that arrive with an anomaly (their first row is
    anomalous) from those whose anomaly begins inside the window, each pooled with the late
    devices that have none in it."""
    late = [s for s in dataset.streams if s.device_id in schedule.late]
    out: dict[str, Any] = {"devices": [s.device_id for s in late], "join_tick": schedule.join_tick,
                           "first_fraction": fraction}
    if not late:
        return out
    heads = {s.device_id: max(1, math.ceil(fraction * len(s))) for s in late}
    out |= _window(late, runs, heads, whole=True)
    anomalous = {s.device_id: bool(s.labels[:heads[s.device_id]].any()) for s in late}
    quiet = [s for s in late if not anomalous[s.device_id]]
    kinds = {"arrived_with_anomaly": [s for s in late if s.labels[0]],
             "anomaly_began_in_window": [s for s in late
                                         if anomalous[s.device_id] and not s.labels[0]]}
    out["by_onset"] = {kind: {"devices": [s.device_id for s in streams]}
                       | _window(streams + quiet, runs, heads, whole=False)
                       for kind, streams in kinds.items() if streams}
    return out


def _window(streams: list[Stream], runs: dict[str, Run], heads: dict[str, int],
            whole: bool) -> dict[str, Any]:
    """Each federated regime (noised ones too) and ``local`` over the window; ``pr_auc_ratio``
    is federated's over local's, ``pr_auc_ratios`` every federated regime's."""
    out: dict[str, Any] = {}
    names = ["local", *(name for name in runs if name.startswith("federated"))]
    for name in names:
        out[name] = _detect(streams, runs[name], heads)
        if whole:
            out[f"{name}_whole_stream"] = _detect(streams, runs[name])
    out["pr_auc_ratios"] = {name: _ratio(out[name]["pr_auc"], out["local"]["pr_auc"])
                            for name in names[1:]}
    out["pr_auc_ratio"] = out["pr_auc_ratios"]["federated"]
    return out


def _detect(streams: list[Stream], run: Run, heads: dict[str, int] | None = None) -> Any:
    """Detection metrics pooled over ``streams``, each cut to its first ``heads`` rows."""
    cut = {s.device_id: slice(heads[s.device_id] if heads else None) for s in streams}
    return detection(
        np.concatenate([s.labels[cut[s.device_id]] for s in streams]),
        np.concatenate([run.scores[s.device_id][cut[s.device_id]] for s in streams]),
        np.concatenate([run.alarms[s.device_id][cut[s.device_id]] for s in streams]))


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
