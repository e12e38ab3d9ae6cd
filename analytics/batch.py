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

A forest scores about 200,000 rows a second: on a fleet of more than ``max_scored_rows`` rows
(sim:1000 has 8.1 million, sim:10000 81 million) it scores a seeded sample of whole devices
holding about that many, and its run holds only those devices (the report says how many). It
still fits on rows drawn from every device. Rows are read where they lie, device by device,
never copied into one table.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.ensemble import IsolationForest

from analytics.datasets import Dataset
from analytics.replay import Progress, Run, Schedule

__all__ = ["MAX_SCORED_ROWS", "run_batch", "scored_devices"]

MAX_SCORED_ROWS = 2_000_000


def scored_devices(dataset: Dataset, seed: int,
                   max_scored_rows: int = MAX_SCORED_ROWS) -> list[int]:
    """The devices the reference scores: all, or a seeded sample holding about
    ``max_scored_rows`` rows (the first of a seeded order whose rows reach it).

    >>> from analytics.datasets import load
    >>> fleet = load("sim:10", seed=1, duration_s=100)
    >>> len(scored_devices(fleet, seed=1)), scored_devices(fleet, seed=1, max_scored_rows=250)
    (10, [4, 7, 8])
    """
    if dataset.rows <= max_scored_rows:
        return list(range(len(dataset.streams)))
    order = np.random.default_rng(seed).permutation(len(dataset.streams))
    rows = np.cumsum([len(dataset.streams[i]) for i in order])
    return sorted(order[:int(np.searchsorted(rows, max_scored_rows)) + 1].tolist())


def run_batch(
    dataset: Dataset,
    schedule: Schedule,
    *,
    seed: int,
    max_fit_rows: int = 20_000,
    max_scored_rows: int = MAX_SCORED_ROWS,
    progress: Progress | None = None,
) -> Run:
    """Score every row (of :func:`scored_devices`) with the forest fitted at the last round
    boundary before it."""
    began = time.monotonic()
    streams = dataset.streams
    rows = _TickOrder([schedule.start[s.device_id] for s in streams], [len(s) for s in streams])
    scored = scored_devices(dataset, seed, max_scored_rows)
    scores = {streams[i].device_id: np.zeros(len(streams[i])) for i in scored}
    alarms = {streams[i].device_id: np.zeros(len(streams[i]), dtype=bool) for i in scored}
    starts = rows.starts[scored]
    lengths = rows.ends[scored] - starts
    rng = np.random.default_rng(seed)
    step = schedule.round_rows
    boundaries = np.arange(step, int(rows.ends.max()), step)
    total = int(lengths.sum())
    done = int(np.clip(step - starts, 0, lengths).sum())  # before the first boundary: 0
    for k, boundary in enumerate(boundaries.tolist()):
        first = np.clip(boundary - starts, 0, lengths)
        last = np.clip(boundary + step - starts, 0, lengths)
        if not (last > first).any():
            continue
        seen = rows.before(boundary)
        picked = (rng.choice(seen, max_fit_rows, replace=False) if seen > max_fit_rows
                  else np.arange(seen))
        fit_rows = rows.values(dataset, picked)
        medians = np.nanmedian(fit_rows, axis=0)
        forest = IsolationForest(random_state=seed + k).fit(_filled(fit_rows, medians))
        windows = [(i, a, b) for i, a, b in zip(scored, first.tolist(), last.tolist(),
                                                strict=True) if b > a]
        batch = -forest.score_samples(_filled(np.concatenate(
            [streams[i].values[a:b] for i, a, b in windows]), medians))
        at = 0
        for i, a, b in windows:
            device = streams[i].device_id
            scores[device][a:b] = batch[at:at + b - a]
            alarms[device][a:b] = batch[at:at + b - a] > -forest.offset_
            at += b - a
        done += at
        if progress is not None:
            progress("batch_reference", done, total)
    return Run("batch_reference", scores, alarms, len(boundaries), 0.0,
               time.monotonic() - began)


class _TickOrder:
    """Every row of every stream numbered in the replay's time order (the devices of a tick
    in the dataset's order), without gathering them: a number is mapped back to its device
    and row. Between two ticks where a device starts or ends, each tick holds the same
    devices, so a stretch of ticks is one block of numbers."""

    def __init__(self, starts: list[int], lengths: list[int]) -> None:
        self.starts = np.array(starts, dtype=np.int64)
        self.ends = self.starts + np.array(lengths, dtype=np.int64)
        self._ticks = np.array(sorted({*starts, *self.ends.tolist()}), dtype=np.int64)
        self._members = [np.flatnonzero((self.starts <= t) & (t < self.ends))
                         for t in self._ticks.tolist()]
        self._widths = np.array([len(m) for m in self._members], dtype=np.int64)
        self._first = np.concatenate([[0], np.cumsum(np.diff(self._ticks) * self._widths[:-1])])

    def before(self, tick: int) -> int:
        """How many rows are read before ``tick``."""
        k = int(np.searchsorted(self._ticks, tick, side="right")) - 1
        if k < 0:
            return 0
        return int(self._first[k] + (tick - self._ticks[k]) * self._widths[k])

    def values(self, dataset: Dataset, numbers: np.ndarray) -> np.ndarray:
        """The rows with these numbers, in the order given."""
        k = np.searchsorted(self._first, numbers, side="right") - 1
        offset = numbers - self._first[k]
        device = np.empty(len(numbers), dtype=np.int64)
        for block in np.unique(k).tolist():
            mine = np.flatnonzero(k == block)
            device[mine] = self._members[block][offset[mine] % self._widths[block]]
        row = self._ticks[k] + offset // self._widths[k] - self.starts[device]
        out = np.empty((len(numbers), len(dataset.columns)))
        order = np.argsort(device, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(device[order])) + 1):
            out[group] = dataset.streams[int(device[group[0]])].values[row[group]]
        return out


def _filled(rows: np.ndarray, medians: np.ndarray) -> np.ndarray:
    missing = ~np.isfinite(rows)
    if not missing.any():
        return rows
    return np.where(missing, np.broadcast_to(medians, rows.shape), rows)
