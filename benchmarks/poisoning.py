"""Detection quality under poisoning, per aggregation strategy: the figures behind the default.

``fedfleet evaluate --attack KIND --strategy S`` answers for one attack and one strategy, and
replays every regime. This replays only the federated ones, on one load of ``sim:N``: exact
updates (``--privacy off``) and central privacy at the given budget, clean and under each
attack (:mod:`analytics.attacks`) by the given share of vehicles, for every strategy (and
with ``--privacy local``, each release noised by its vehicle at that budget); and
prints the pooled PR-AUC and F1 of each, their ratios to the same strategy's clean run, the
false alarms per 1,000 healthy readings, the updates the gateway refused by reason, and the
global models outside the feasible region.

    python -m benchmarks.poisoning --vehicles 200 --attackers 0.2 --epsilon 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analytics.attacks import ATTACKS, Attack
from analytics.datasets import load
from analytics.metrics import detection
from analytics.replay import CLIP_NORM, Run, Schedule, tuning_for
from analytics.vectorized import run_vectorized
from federation.privacy import calibrated
from gateway.strategy import (
    CLIP_FACTOR,
    NORM_BOUND,
    STRATEGIES,
    CentredClipping,
    NormBoundedMean,
    Strategy,
    make_strategy,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=200)
    parser.add_argument("--attackers", type=float, default=0.2)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES),
                        choices=list(STRATEGIES))
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    parser.add_argument("--norm-bound", type=float, default=NORM_BOUND,
                        help="the norm-bounded mean's bound, in whitened units")
    parser.add_argument("--clip-factor", type=float, default=CLIP_FACTOR,
                        help="centred clipping's radius, times the round's median offset")
    parser.add_argument("--privacy", nargs="+", default=["off", "central"],
                        choices=["off", "central", "local"])
    args = parser.parse_args()

    def make(name: str) -> Strategy:
        if name == "norm-bounded":
            return NormBoundedMean(args.norm_bound)
        return CentredClipping(args.clip_factor) if name == "centred-clip" else (
            make_strategy(name))

    dataset = load(f"sim:{args.vehicles}", seed=args.seed)
    schedule = Schedule.plan(dataset, args.seed)
    tuning = tuning_for(dataset)
    releases = max(1, max(tuning.releases_within(len(s) - 1) for s in dataset.streams))
    mechanism = calibrated("gaussian", args.epsilon, releases, 1e-5, CLIP_NORM)
    options_of = {"off": {},
                  **{mode: {"mechanism": mechanism, "central": mode == "central",
                            "budget": args.epsilon} for mode in ("central", "local")}}
    labels = np.concatenate([s.labels for s in dataset.streams])

    def quality(run: Run) -> tuple[float, float, float]:
        """Pooled PR-AUC (how the levels rank rows), F1 (of the alarms devices act on) and
        false alarms per 1,000 healthy readings."""
        scores = np.concatenate([run.scores[s.device_id] for s in dataset.streams])
        alarms = np.concatenate([run.alarms[s.device_id] for s in dataset.streams])
        metrics = detection(labels, scores, alarms)
        return (float(metrics["pr_auc"] or 0.0), float(metrics["f1"] or 0.0),
                float(metrics["false_alarms_per_1000"] or 0.0))

    devices = [s.device_id for s in dataset.streams]
    print(f"sim:{args.vehicles}, {args.attackers:.0%} attacking, privacy (central, local) at "
          f"epsilon {args.epsilon:g} ({releases} releases)")
    print(f"{'strategy':<13}{'privacy':<9}{'attack':<14}{'PR-AUC':>8}{'ratio':>8}{'F1':>8}"
          f"{'ratio':>8}{'FA/1000':>9}  refused, infeasible models, seconds")
    for name in args.strategies:
        for privacy in args.privacy:
            regime = "federated" if privacy == "off" else "federated_dp"
            clean = (1.0, 1.0)
            for kind in ("none", *args.attacks):
                attack = None if kind == "none" else Attack.choose(kind, devices,
                                                                   args.attackers, args.seed)
                began = time.monotonic()
                run = run_vectorized(dataset, schedule, regime, seed=args.seed, tuning=tuning,
                                     strategy=make(name), attack=attack, **options_of[privacy])
                score, f1, false_alarms = quality(run)
                clean = (score, f1) if attack is None else clean
                print(f"{name:<13}{privacy:<9}{kind:<14}{score:>8.3f}"
                      f"{score / clean[0] if clean[0] else 0.0:>8.3f}{f1:>8.3f}"
                      f"{f1 / clean[1] if clean[1] else 0.0:>8.3f}{false_alarms:>9.2f}  "
                      f"{run.refused}, {run.infeasible_models}, "
                      f"{time.monotonic() - began:.0f}", flush=True)


if __name__ == "__main__":
    main()
