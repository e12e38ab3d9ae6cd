"""Detection quality under poisoning, per aggregation strategy: the figures behind the default.

``fedfleet evaluate --attack KIND --strategy S`` answers for one attack and one strategy, and
replays every regime. This replays only the federated ones, on one load of ``sim:N``: exact
updates (``--privacy off``) and central privacy at the given budget, clean and under each
attack (:mod:`analytics.attacks`) by the given share of vehicles, for every strategy; and
prints the pooled PR-AUC and F1 of each, their ratios to the same strategy's clean run, the
updates the gateway refused by reason, and the global models outside the feasible region.

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
from gateway.strategy import NORM_BOUND, STRATEGIES, NormBoundedMean, Strategy, make_strategy


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
    parser.add_argument("--privacy", nargs="+", default=["off", "central"],
                        choices=["off", "central"])
    args = parser.parse_args()

    def make(name: str) -> Strategy:
        return NormBoundedMean(args.norm_bound) if name == "norm-bounded" else make_strategy(name)

    dataset = load(f"sim:{args.vehicles}", seed=args.seed)
    schedule = Schedule.plan(dataset, args.seed)
    tuning = tuning_for(dataset)
    releases = max(1, max(tuning.releases_within(len(s) - 1) for s in dataset.streams))
    private = {"mechanism": calibrated("gaussian", args.epsilon, releases, 1e-5, CLIP_NORM),
               "central": True, "budget": args.epsilon}
    labels = np.concatenate([s.labels for s in dataset.streams])

    def quality(run: Run) -> tuple[float, float]:
        """Pooled PR-AUC (how the levels rank rows) and F1 (of the alarms devices act on)."""
        scores = np.concatenate([run.scores[s.device_id] for s in dataset.streams])
        alarms = np.concatenate([run.alarms[s.device_id] for s in dataset.streams])
        metrics = detection(labels, scores, alarms)
        return float(metrics["pr_auc"] or 0.0), float(metrics["f1"] or 0.0)

    devices = [s.device_id for s in dataset.streams]
    print(f"sim:{args.vehicles}, {args.attackers:.0%} attacking, central privacy at epsilon "
          f"{args.epsilon:g} ({releases} releases)")
    print(f"{'strategy':<13}{'privacy':<9}{'attack':<14}{'PR-AUC':>8}{'ratio':>8}{'F1':>8}"
          f"{'ratio':>8}  refused, infeasible models, seconds")
    for name in args.strategies:
        for privacy in args.privacy:
            options = private if privacy == "central" else {}
            regime = "federated" if privacy == "off" else "federated_dp"
            began = time.monotonic()
            clean_run = run_vectorized(dataset, schedule, regime, seed=args.seed, tuning=tuning,
                                       strategy=make(name), **options)
            clean, clean_f1 = quality(clean_run)
            print(f"{name:<13}{privacy:<9}{'none':<14}{clean:>8.3f}{1.0:>8.3f}"
                  f"{clean_f1:>8.3f}{1.0:>8.3f}  "
                  f"{clean_run.refused}, {clean_run.infeasible_models}, "
                  f"{time.monotonic() - began:.0f}", flush=True)
            for kind in args.attacks:
                attack = Attack.choose(kind, devices, args.attackers, args.seed)
                began = time.monotonic()
                run = run_vectorized(dataset, schedule, regime, seed=args.seed, tuning=tuning,
                                     strategy=make(name), attack=attack,
                                     **options)
                score, f1 = quality(run)
                print(f"{name:<13}{privacy:<9}{kind:<14}{score:>8.3f}{score / clean:>8.3f}"
                      f"{f1:>8.3f}{f1 / clean_f1 if clean_f1 else 0.0:>8.3f}  "
                      f"{run.refused}, {run.infeasible_models}, "
                      f"{time.monotonic() - began:.0f}", flush=True)


if __name__ == "__main__":
    main()
