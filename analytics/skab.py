"""SKAB's own outlier-detection protocol, applied to a replay's alarms.

The benchmark (github.com/waico/SKAB) scores outlier detection as binary classification of
each experiment's rows after its training part, the first 400 rows (which hold no anomaly),
pooled over all experiments: F1 of the anomalous class, the false-alarm rate
``FAR = FP / (FP + TN)`` and the missed-alarm rate ``MAR = FN / (FN + TP)``, both in percent.
Its leaderboard's models are fitted offline on each training part; here the devices learn
online from the start, so the training part is replayed too but not scored.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve

from analytics.datasets import Dataset
from analytics.replay import Run

__all__ = ["TRAIN_ROWS", "outlier_protocol"]

TRAIN_ROWS = 400


def outlier_protocol(dataset: Dataset, run: Run, train_rows: int = TRAIN_ROWS,
                     prefix: str = "") -> dict[str, float]:
    """F1, FAR (%) and MAR (%) of ``run``'s alarms over every experiment's test part.

    ``best_f1`` is the highest F1 that any one threshold on the scores reaches over the same
    rows: chosen on the test labels, it is not a result but the ceiling of the score's ranking
    (what no threshold rule can beat).

    ``prefix`` keeps the experiments whose device id starts with it (``"valve1"``), or with
    ``!`` in front, those whose id does not.

    Examples
    --------
    >>> from analytics.datasets import Stream
    >>> labels = np.array([0] * 400 + [0, 0, 1, 1])
    >>> stream = Stream("valve1-0", np.arange(404.0), np.zeros((404, 1)), labels)
    >>> alarms = np.array([1] * 400 + [0, 1, 1, 0], dtype=bool)
    >>> run = Run("federated", {"valve1-0": np.zeros(404)}, {"valve1-0": alarms})
    >>> outlier_protocol(Dataset("skab:x", ("a",), [stream]), run)
    {'f1': 0.5, 'far_pct': 50.0, 'mar_pct': 50.0, 'rows': 4, 'best_f1': 0.667}
    """
    keep = prefix.removeprefix("!")
    streams = [s for s in dataset.streams
               if s.device_id.startswith(keep) != prefix.startswith("!") or not keep]
    if not streams:
        return {"rows": 0}
    labels = np.concatenate([s.labels[train_rows:] for s in streams]).astype(bool)
    alarms = np.concatenate([run.alarms[s.device_id][train_rows:] for s in streams])
    scores = np.concatenate([run.scores[s.device_id][train_rows:] for s in streams])
    tp = int((alarms & labels).sum())
    fp = int((alarms & ~labels).sum())
    fn = int((~alarms & labels).sum())
    tn = int((~alarms & ~labels).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"f1": round(f1, 3),
            "far_pct": round(100 * fp / (fp + tn), 2) if fp + tn else 0.0,
            "mar_pct": round(100 * fn / (fn + tp), 2) if fn + tp else 0.0,
            "rows": len(labels), "best_f1": _best_f1(labels, scores)}


def _best_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    if not labels.any():
        return 0.0
    precision, recall, _ = precision_recall_curve(labels, scores)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return round(float(f1.max()), 3)
