"""``fedfleet evaluate``: detection quality of every regime on a labelled dataset.

It runs offline (no broker, no gateway) and prints a summary table; ``--out`` writes the
whole report as JSON and ``--plot`` draws it. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from analytics.attacks import ATTACKS
from fedfleet.config import DEFAULTS
from gateway.strategy import STRATEGIES

__all__ = ["add_parser", "main"]


def add_parser(sub: Any) -> None:
    """Add the ``evaluate`` subcommand to the CLI's subparsers."""
    parser = sub.add_parser(
        "evaluate", help="measure detection quality: local, federated, centralized, batch",
        description="Replay a labelled dataset through the devices' detector under every "
                    "regime and report detection quality (docs/EVALUATION.md).")
    parser.add_argument("--dataset", required=True, metavar="SOURCE",
                        help="sim:N, cmapss:DIR, skab:DIR or csv:DIR")
    parser.add_argument("--epsilon", "--epsilon-budget", dest="epsilon", type=float,
                        action="append", default=[], metavar="E",
                        help="also run federation with privacy noise at this per-device "
                             "budget over the whole run (repeatable: one regime each)")
    parser.add_argument("--privacy", choices=["local", "central", "secagg", "off"],
                        default=DEFAULTS["privacy"],
                        help="for the --epsilon regimes: noise the aggregate at the gateway "
                             "(central, the default), each release on the device (local), or "
                             "by secure aggregation (secagg: each round's releases run through "
                             "the protocol itself); off runs no noised regime")
    parser.add_argument("--secagg-dropout", type=float, default=0.0, metavar="F",
                        help="with --privacy secagg: this share of each round's vehicles drops "
                             "out before a phase (0; past 1/3 the protocol refuses the round)")
    parser.add_argument("--mechanism", choices=["gaussian", "laplace"],
                        default=DEFAULTS["mechanism"],
                        help="Gaussian noise for (epsilon, delta) (default) or Laplace noise "
                             "for pure epsilon")
    parser.add_argument("--delta", type=float, default=DEFAULTS["delta"], metavar="D",
                        help="delta of every total (default 1e-5)")
    parser.add_argument("--out", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--plot", metavar="FILE", help="draw the report (PNG, SVG, PDF)")
    parser.add_argument("--seed", type=int, default=0, metavar="K")
    parser.add_argument("--window", type=int, default=30, metavar="N",
                        help="C-MAPSS: the last N cycles before failure are anomalous (30)")
    parser.add_argument("--time-col", default="timestamp", metavar="C",
                        help="csv: the time column (timestamp)")
    parser.add_argument("--label-col", default="label", metavar="C",
                        help="csv: the 0/1 label column (label)")
    parser.add_argument("--sep", default=",", metavar="S", help="csv: the field separator (,)")
    parser.add_argument("--round-rows", type=int, default=30, metavar="N",
                        help="readings per device between two rounds (30)")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="only the first N devices (quick runs)")
    parser.add_argument("--late-fraction", type=float, default=0.1, metavar="F",
                        help="share of devices held out to join late, for cold start (0.1)")
    parser.add_argument("--tuning", choices=["vehicle", "engine", "rig"],
                        help="device settings (devices/onboard/tuning.py); default: by dataset "
                             "kind (sim and csv: vehicle, cmapss: engine, skab: rig)")
    parser.add_argument("--prior-readings", type=float, metavar="N",
                        help="the most readings the fleet's model counts for in a device's "
                             "model, instead of the preset's (0: the fleet's model is not used)")
    parser.add_argument("--cold-fraction", type=float, default=0.1, metavar="F",
                        help="cold start is scored over the late devices' first F of rows (0.1)")
    parser.add_argument("--strategy", choices=list(STRATEGIES), default=DEFAULTS["strategy"],
                        help="how the gateway combines a round's updates (docs/SECURITY.md; "
                             f"default {DEFAULTS['strategy']})")
    parser.add_argument("--attack", choices=list(ATTACKS),
                        help="also run every federated regime with --attackers of the devices "
                             "poisoning their updates this way, and compare")
    parser.add_argument("--attackers", type=float, default=0.2, metavar="F",
                        help="share of devices that attack, with --attack (0.2)")
    parser.add_argument("--replay", choices=["vectorized", "per-reading"], default="vectorized",
                        help="replay every device of a tick at once on arrays (default), or "
                             "each reading through the devices' River code: the same scores, "
                             "some 30 times slower")


def main(args: argparse.Namespace) -> int:
    """Run the evaluation; 0 on success, 2 on a usage error (with a message on stderr)."""
    problem = _usage_problem(args)
    if problem:
        print(f"fedfleet evaluate: error: {problem}", file=sys.stderr)
        return 2
    try:  # all of it now: a missing library is a usage error before the run, not after
        from analytics.datasets import DatasetError, load
        from analytics.plot import draw
        from analytics.replay import TUNINGS, choose_tuning, stderr_progress
        from analytics.report import evaluate
    except ImportError as exc:
        print(f"fedfleet evaluate: error: {exc.name} is missing; install the evaluation "
              "extra: pip install 'fedfleet[evaluate]'", file=sys.stderr)
        return 2
    sep = "\t" if args.sep == "\\t" else args.sep
    try:
        print(f"loading {args.dataset} ...", file=sys.stderr)
        dataset = load(args.dataset, seed=args.seed, window=args.window, time_col=args.time_col,
                       label_col=args.label_col, sep=sep, limit=args.devices,
                       late_fraction=args.late_fraction, cold_fraction=args.cold_fraction,
                       progress=stderr_progress())
    except DatasetError as exc:
        print(f"fedfleet evaluate: error: {exc}", file=sys.stderr)
        return 2
    for note in dataset.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(dataset.streams)} devices, {dataset.rows:,} rows, "
          f"{len(dataset.schema)} features", file=sys.stderr)
    tuning, why = (TUNINGS[args.tuning], f"{args.tuning}, as --tuning says") if (
        args.tuning) else choose_tuning(dataset)
    print(f"tuning: {why}", file=sys.stderr)
    if args.prior_readings is not None:
        tuning = replace(tuning, prior_readings=args.prior_readings)
    report, runs = evaluate(dataset, epsilons=args.epsilon, seed=args.seed, delta=args.delta,
                            privacy=args.privacy, mechanism=args.mechanism,
                            round_rows=args.round_rows, late_fraction=args.late_fraction,
                            cold_fraction=args.cold_fraction, tuning=tuning,
                            replay=args.replay, progress=stderr_progress(),
                            strategy=args.strategy, attack=args.attack,
                            attackers=args.attackers, secagg_dropout=args.secagg_dropout)
    report["settings"]["window"] = args.window
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        draw(report, dataset, runs, args.plot)
    print(_table(report))
    return 0


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.window < 1:
        return "--window must be at least 1"
    if args.round_rows < 1:
        return "--round-rows must be at least 1"
    if args.devices is not None and args.devices < 2:
        return "--devices must be at least 2"
    if not 0 <= args.late_fraction < 1:
        return "--late-fraction must be in [0, 1)"
    if args.prior_readings is not None and not 0 <= args.prior_readings < math.inf:
        return "--prior-readings must be a number >= 0"
    if not 0 < args.cold_fraction <= 1:
        return "--cold-fraction must be in (0, 1]"
    if not 0 < args.attackers < 0.5:
        return "--attackers must be in (0, 0.5): a majority of attackers is the fleet"
    if not 0 <= args.secagg_dropout < 1:
        return "--secagg-dropout must be in [0, 1)"
    if args.secagg_dropout and args.privacy != "secagg":
        return "--secagg-dropout needs --privacy secagg"
    if len(args.sep) != 1 and args.sep != "\\t":
        return "--sep must be one character (or \\t)"
    for option in ("out", "plot"):
        path = getattr(args, option)
        if path and not Path(path).resolve().parent.is_dir():
            return f"--{option}: folder {Path(path).parent} does not exist"
    return None


def _table(report: dict[str, Any]) -> str:
    columns = ("pr_auc", "roc_auc", "precision", "recall", "f1", "false_alarms_per_1000")
    widths = [max(10, len(c) + 2) for c in columns]  # every column's whole name
    lines = [f"{'regime':<22}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths,
                                                                   strict=True))
             + "  median lead"]
    for name, metrics in report["regimes"].items():
        cells = "".join(f"{_cell(metrics[c]):>{w}}" for c, w in zip(columns, widths, strict=True))
        lead = metrics.get("lead_time", {}).get("median")
        unit = report["time_unit"]
        lines.append(f"{name:<22}{cells}  " + ("-" if lead is None else f"{lead} {unit}"))
    for metric, versus in report["federated_vs_local"].items():
        lines.append(f"federated beats local on {metric}: {_versus(versus)}")
        for finer, among in versus.get("ties", {}).items():
            lines.append(f"  among those equal on {metric}, on {finer}: {_versus(among)}")
    for name, metrics in report["regimes"].items():
        if "epsilon_per_release" in metrics:
            lines.append(f"{name}: spent up to {metrics['epsilon_spent']:g} per device "
                         f"({metrics['updates']} releases at epsilon "
                         f"{metrics['epsilon_per_release']:g}, noise std "
                         f"{metrics['noise_std_per_release']:.3g} each; the global model's "
                         f"relative noise {metrics['global_noise_std']:.3g})")
        if "secure_sums" in metrics:
            lines.append(f"  {metrics['secure_sums']} secure sums of {metrics['secure_inputs']} "
                         f"releases: the vehicles' CPU {metrics['secure_vehicle_cpu_seconds']} s, "
                         f"the gateway's {metrics['secure_gateway_cpu_seconds']} s")
    for name, counts in report.get("no_worse_than_local", {}).items():
        lines.append(f"{name} no worse than local (PR-AUC within {counts['margin']}) on "
                     f"{counts['no_worse']} of {counts['devices']} devices")
    lines.append(f"ratios of pooled PR-AUC: {report['ratios']}")
    attack = report.get("attack") or {"regimes": {}}
    for name, figures in attack["regimes"].items():
        lines.append(
            f"{name} under {attack['kind']} by {len(attack['attackers'])} devices: PR-AUC "
            f"{_cell(figures['pr_auc_attacked'])} vs {_cell(figures['pr_auc_clean'])} clean "
            f"(ratio {_cell(figures['ratio'])}, within {attack['margin']:.0%}: "
            f"{'yes' if figures['within_margin'] else 'NO'}); refused {figures['refused']}, "
            f"infeasible models {figures['infeasible_models']}")
    cold = report["cold_start"]
    if "federated" in cold:
        lines.append(f"cold start ({len(cold['devices'])} late devices, first "
                     f"{cold['first_fraction']:.0%} of readings): {_over_local(cold)}")
        for kind, window in cold.get("by_onset", {}).items():
            lines.append(f"  {kind.replace('_', ' ')} ({len(window['devices'])}, with the late "
                         f"devices quiet in the window): {_over_local(window)}")
    for name, scores in report.get("skab_protocol", {}).items():
        lines.append(f"SKAB protocol {name}: F1 {scores['f1']}, FAR {scores['far_pct']} %, "
                     f"MAR {scores['mar_pct']} %")
    return "\n".join(lines)


def _over_local(window: dict[str, Any]) -> str:
    """PR-AUC of each federated regime over a cold-start window, and its ratio to local's."""
    cells = [f"{name} {_cell(window[name]['pr_auc'])} ({_cell(ratio)}x)"
             for name, ratio in window["pr_auc_ratios"].items()]
    return f"PR-AUC local {_cell(window['local']['pr_auc'])}, " + ", ".join(cells)


def _versus(counts: dict[str, Any]) -> str:
    return (f"{counts['better']} of {counts['devices_compared']} devices with an anomaly "
            f"({counts['equal']} equal, {counts['worse']} worse)")


def _cell(value: object) -> str:
    return "n/a" if value is None else f"{value}"
