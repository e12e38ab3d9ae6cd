"""One picture of a report: per-regime bars, score traces with the true faults, privacy-utility.

Drawn with matplotlib's object interface (no global pyplot state, no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from analytics.datasets import Dataset
from analytics.replay import Run

__all__ = ["draw"]

_BARS = ("pr_auc", "roc_auc", "f1")
_TRACED = ("local", "federated", "centralized")


def draw(report: dict[str, Any], dataset: Dataset, runs: dict[str, Run], path: str | Path,
         traces: int = 3) -> None:
    """Write the report's picture to ``path`` (the format follows its extension)."""
    shown = _traced_streams(dataset, traces)
    figure = Figure(figsize=(13, 4 + 2.2 * len(shown)), layout="constrained")
    grid = figure.add_gridspec(1 + len(shown), 2)
    _bars(figure.add_subplot(grid[0, 0]), report)
    _privacy_utility(figure.add_subplot(grid[0, 1]), report)
    for k, stream in enumerate(shown):
        _trace(figure.add_subplot(grid[1 + k, :]), stream, runs, dataset.time_unit)
    figure.suptitle(f"{report['dataset']}: {report['devices']} devices, {report['rows']:,} rows")
    figure.savefig(path, dpi=110)


def _bars(axes: Any, report: dict[str, Any]) -> None:
    names = list(report["regimes"])
    width = 0.8 / len(_BARS)
    for k, metric in enumerate(_BARS):
        values = [report["regimes"][name][metric] or 0.0 for name in names]
        axes.bar(np.arange(len(names)) + k * width, values, width, label=metric)
    axes.set_xticks(np.arange(len(names)) + width * (len(_BARS) - 1) / 2,
                    [name.replace("federated_dp_", "dp ") for name in names],
                    rotation=30, ha="right")
    axes.set_ylim(0, 1.2)  # the legend sits above 1, where no bar reaches
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_title("pooled quality per regime")
    axes.legend(loc="upper center", ncols=len(_BARS), fontsize="small")


def _privacy_utility(axes: Any, report: dict[str, Any]) -> None:
    epsilons = sorted(report["settings"]["epsilons"])
    regimes = report["regimes"]
    for name, style in (("federated", "--"), ("local", ":"), ("centralized", "-.")):
        if regimes[name]["pr_auc"] is not None:
            axes.axhline(regimes[name]["pr_auc"], linestyle=style, color="grey", label=name)
    if epsilons:
        values = [regimes[f"federated_dp_eps={e:g}"]["pr_auc"] or 0.0 for e in epsilons]
        axes.plot(epsilons, values, "o-", label="federated with privacy noise")
        axes.set_xscale("log")
    else:
        axes.text(0.5, 0.5, "give --epsilon values to draw the curve", ha="center",
                  transform=axes.transAxes)
    axes.set_xlabel("epsilon per device over the whole run")
    axes.set_ylabel("PR-AUC")
    axes.set_title("privacy-utility")
    axes.legend(loc="lower right", fontsize="small")


def _trace(axes: Any, stream: Any, runs: dict[str, Run], unit: str) -> None:
    times = stream.times_s - stream.times_s[0]
    for name in _TRACED:
        axes.plot(times, runs[name].scores[stream.device_id], linewidth=0.8, label=name)
    for start, end in _windows(stream.labels):
        axes.axvspan(times[start], times[end - 1], color="red", alpha=0.12)
    threshold = runs["federated"].thresholds.get(stream.device_id)
    if threshold is not None:
        axes.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label="threshold")
    axes.set_title(f"{stream.device_id}: alert level (true fault rows shaded)", fontsize="medium")
    axes.set_xlabel(f"time since the device's first row ({unit})")
    axes.legend(loc="upper left", fontsize="small")


def _windows(labels: np.ndarray) -> list[tuple[int, int]]:
    """The runs of anomalous rows as ``(start, end)`` index pairs."""
    edges = np.diff(np.concatenate([[0], labels.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(),
                    strict=True))


def _traced_streams(dataset: Dataset, count: int) -> list[Any]:
    faulty = [s for s in dataset.streams if s.labels.any()]
    return (faulty or dataset.streams)[:count]
