"""The batch reference: what a data scientist holding all the raw data would run offline.

The fair rule: at every round boundary of the replay's schedule, a scikit-learn
``IsolationForest`` is fitted afresh on every row any device has read so far, pooled across
the fleet (at most ``max_fit_rows`` of them, drawn at random, seeded); until the next boundary,
each new row is scored by that forest. So the reference sees, at each point, the same rows the
federated model could have learnt from by then, but raw and all of them, which no device
shares in the live system. Its score is the forest's anomaly score (``-score_samples``) and
its alarm threshold is the forest's own (``contamination="auto"``: a score above 0.5). Before
the first boundary it knows nothing and scores every row 0. Missing values are filled with the
fitted rows' column medians.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.ensemble import IsolationForest

from analytics.datasets import Dataset
from analytics.replay import Progress, Run, Schedule

__all__ = ["run_batch"]


def run_batch(
    dataset: Dataset,
    schedule: Schedule,
    *,
    seed: int,
    max_fit_rows: int = 20_000,
    progress: Progress | None = None,
) -> Run:
    """Score every row with the forest fitted at the last round boundary before it."""
    began = time.monotonic()
    streams = dataset.streams
    ticks = np.concatenate([schedule.start[s.device_id] + np.arange(len(s)) for s in streams])
    values = np.concatenate([s.values for s in streams])
    owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(streams)])
    row = np.concatenate([np.arange(len(s)) for s in streams])
    by_tick = np.argsort(ticks, kind="stable")
    ticks, values, owner, row = ticks[by_tick], values[by_tick], owner[by_tick], row[by_tick]
    scores = {s.device_id: np.zeros(len(s)) for s in streams}
    alarms = {s.device_id: np.zeros(len(s), dtype=bool) for s in streams}
    rng = np.random.default_rng(seed)
    boundaries = np.arange(schedule.round_rows, int(ticks[-1]) + 1, schedule.round_rows)
    for k, boundary in enumerate(boundaries):
        seen = int(np.searchsorted(ticks, boundary))
        upto = int(np.searchsorted(ticks, boundary + schedule.round_rows))
        if upto == seen:
            continue
        fit_rows = values[:seen]
        if len(fit_rows) > max_fit_rows:
            fit_rows = fit_rows[rng.choice(len(fit_rows), max_fit_rows, replace=False)]
        medians = np.nanmedian(fit_rows, axis=0)
        forest = IsolationForest(random_state=seed + k).fit(_filled(fit_rows, medians))
        batch = -forest.score_samples(_filled(values[seen:upto], medians))
        threshold = -forest.offset_
        for i, j, score in zip(owner[seen:upto], row[seen:upto], batch, strict=True):
            device = streams[i].device_id
            scores[device][j] = score
            alarms[device][j] = score > threshold
        if progress is not None:
            progress("batch_reference", upto, len(ticks))
    return Run("batch_reference", scores, alarms, len(boundaries), 0.0,
               time.monotonic() - began)


def _filled(rows: np.ndarray, medians: np.ndarray) -> np.ndarray:
    missing = ~np.isfinite(rows)
    if not missing.any():
        return rows
    return np.where(missing, np.broadcast_to(medians, rows.shape), rows)
