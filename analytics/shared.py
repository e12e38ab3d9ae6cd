"""A tick of the ``centralized`` regime: one detector for every device, refreshed within it.

A detector refreshes its model before it scores, once it has learned ``refresh_every`` readings
since its last refresh. Shared by every device, it learns a tick's readings one device after
another, so its model changes many times within a tick (about once every 120 devices), and
whether a device learns (its gate: burn-in, level) depends on the score the model of its turn
gives it, which depends on which devices before it learned.

A tick is run in passes. A pass assumes which devices learn, places the refreshes where those
learned readings put them, fits all the models those refreshes make in one stacked call, and
scores every device with the model of its turn. Where the gates then agree with the
assumption, the pass is what the detector would have done. At the first device where one does
not, the pass is kept up to that device, and the next pass starts after it. The first
assumption comes from scoring the tick with the model at its start: a tick's models differ so
little that a second pass is rare. The readings learned between two refreshes enter the model
as one block (equal to learning them one by one up to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

import numpy as np

from analytics.models import Fit, Models, Priors, residuals
from analytics.policies import Chart, Policies
from federation.summary import Moments, merge

__all__ = ["Gate", "shared_tick"]

ONE = np.zeros(1, dtype=np.int64)


@dataclass(frozen=True)
class Gate:
    """The vehicle's learning gate: a complete reading is learned during the burn-in, and after
    it only while the level is below ``learn_below``."""

    burn_in: int
    learn_below: float

    def __call__(self, level: np.ndarray, readings: np.ndarray,
                 complete: np.ndarray) -> np.ndarray:
        return complete & ((readings < self.burn_in) | (level < self.learn_below))


class _Plan(NamedTuple):
    targets: np.ndarray  # learned readings (counted from the pass's start) at each refresh
    positions: np.ndarray  # the devices each refresh comes before
    fits: Fit  # the model at the pass's start, then the model after each refresh


def shared_tick(models: Models, policies: Policies, readings: np.ndarray, priors: Priors,
                gate: Gate, scaled: np.ndarray, finite: np.ndarray,
                complete: np.ndarray) -> np.ndarray:
    """Every device reads its row of ``scaled`` in turn, scored by and learning into the one
    model of ``models``; their levels. ``readings`` counts each device's readings."""
    level, start, guess = np.empty(len(scaled)), 0, None
    while start < len(scaled):
        if models.stale[0] >= models.detector.refresh_every:
            models.refresh(ONE, priors)
        rows = slice(start, len(scaled))
        if guess is None:
            now = Fit(*(np.broadcast_to(part, (len(scaled) - start, *part.shape[1:]))
                        for part in (models.ready[ONE], models.mean[ONE], models.weights[ONE])))
            chart = policies.propose(rows, residuals(now, scaled[rows], finite[rows]))
            guess = gate(chart.level, readings[rows], complete[rows])
        plan = _plan(models, priors, guess, scaled[rows])
        turn = np.searchsorted(plan.positions, np.arange(len(guess)), side="right")
        fits = Fit(*(part[turn] for part in plan.fits))
        chart = policies.propose(rows, residuals(fits, scaled[rows], finite[rows]))
        learn = gate(chart.level, readings[rows], complete[rows])
        wrong = np.flatnonzero(learn != guess)
        cut = int(wrong[0]) + 1 if len(wrong) else len(learn)
        kept = slice(start, start + cut)
        policies.commit(kept, Chart(*(part[:cut] for part in chart)))
        level[kept] = chart.level[:cut]
        readings[kept] += 1
        _advance(models, plan, scaled[kept][learn[:cut]], cut)
        start, guess = start + cut, learn[cut:]
    return level


def _plan(models: Models, priors: Priors, learn: np.ndarray, scaled: np.ndarray) -> _Plan:
    """Where the refreshes fall if the devices learn as ``learn`` says, and their models."""
    counted = np.cumsum(learn) - learn  # readings learned before each device
    every = models.detector.refresh_every
    targets = np.arange(every - int(models.stale[0]), int(counted[-1]) + 1, every)
    positions = np.searchsorted(counted, targets)
    now = Fit(models.ready[ONE], models.mean[ONE], models.weights[ONE])
    if not len(targets):
        return _Plan(targets, positions, now)
    recent = models.recent.moments(ONE)
    heads = _heads(scaled[learn], targets)
    fit = models.fit(np.zeros(len(targets), dtype=np.int64),
                     merge(Moments(*(np.broadcast_to(part, (len(targets), *part.shape[1:]))
                                     for part in recent)), heads), priors)
    return _Plan(targets, positions, Fit(*(np.concatenate([a, b]) for a, b in zip(now, fit,
                                                                                 strict=True))))


def _heads(learned: np.ndarray, counts: np.ndarray) -> Moments:
    """The summaries of the first ``counts`` rows of ``learned``, one per count."""
    pivot = learned[:counts[-1]].mean(axis=0)
    offsets = learned[:counts[-1]] - pivot
    bounds = np.concatenate([[0], counts])
    squares = np.cumsum([offsets[a:b].T @ offsets[a:b] for a, b in pairwise(bounds)], axis=0)
    shift = np.cumsum(offsets, axis=0)[counts - 1] / counts[:, None]
    n = counts.astype(float)
    cov = squares / n[:, None, None] - shift[:, :, None] * shift[:, None, :]
    return Moments(n, pivot + shift, cov)


def _advance(models: Models, plan: _Plan, learned: np.ndarray, cut: int) -> None:
    """The shared detector after the kept devices: their learned readings, as one block, and
    the last refresh among them."""
    before = int(np.count_nonzero(plan.positions < cut))
    if len(learned):
        models.fold(ONE, _heads(learned, np.array([len(learned)])))
    if before:
        last = Fit(*(part[before:before + 1] for part in plan.fits))
        models.ready[ONE], models.mean[ONE], models.weights[ONE] = last
        models.stale[0] = len(learned) - int(plan.targets[before - 1])
