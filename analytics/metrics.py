"""Detection quality: ranking (ROC-AUC, PR-AUC), alarms at the operating threshold, lead time.

Every function takes one row per reading: its true label (1 = anomalous), the detector's
score (higher = more anomalous) and whether the device raised its alarm on it (its score was
above the threshold it actually used). Rankings come from scikit-learn; a ranking metric is
``None`` where it is undefined (only one class among the rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["detection", "lead_time", "lead_times", "wins"]

Metrics = dict[str, float | int | None]


def detection(labels: np.ndarray, scores: np.ndarray, alarms: np.ndarray) -> Metrics:
    """Ranking and alarm quality of one set of rows.

    Examples
    --------
    >>> labels = np.array([0, 0, 0, 0, 1, 1])
    >>> scores = np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.6])
    >>> m = detection(labels, scores, scores > 0.5)
    >>> m["roc_auc"], round(m["pr_auc"], 3), m["precision"], m["recall"]
    (0.875, 0.833, 0.667, 1.0)
    >>> m["false_alarms_per_1000"]
    250.0
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    alarms = np.asarray(alarms).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    both = positives > 0 and negatives > 0
    tp = int((alarms & labels).sum())
    fp = int((alarms & ~labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "rows": len(labels),
        "anomalous": positives,
        "roc_auc": _round(roc_auc_score(labels, scores)) if both else None,
        "pr_auc": _round(average_precision_score(labels, scores)) if both else None,
        "precision": _round(precision),
        "recall": _round(recall),
        "f1": _round(f1),
        "false_alarms_per_1000": _round(1000 * fp / negatives) if negatives else None,
    }


def lead_time(
    times_s: np.ndarray, labels: np.ndarray, alarms: np.ndarray, failure_s: float
) -> float | None:
    """Time from the first alarm on an anomalous row to the failure; ``None`` if none.

    >>> labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    >>> alarms = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    >>> lead_time(np.arange(10.0), labels, alarms, failure_s=9.0)
    2.0
    """
    hits = np.flatnonzero(np.asarray(alarms).astype(bool) & np.asarray(labels).astype(bool))
    return float(failure_s - times_s[hits[0]]) if len(hits) else None


def lead_times(leads: Sequence[float | None]) -> Metrics:
    """The distribution of first-alarm lead times over run-to-failure devices.

    A device whose failure was never alarmed counts as a lead of 0 in ``median`` (it gave no
    warning); ``median_detected`` is over the devices that were alarmed.

    >>> lead_times([30.0, 10.0, None, 25.0])["median"], lead_times([30.0, 10.0, None])["missed"]
    (17.5, 1)
    """
    given = np.array([0.0 if lead is None else lead for lead in leads])
    detected = np.array([lead for lead in leads if lead is not None])
    out: Metrics = {"devices": len(leads), "missed": int(len(leads) - len(detected))}
    if len(given):
        out["median"] = _round(float(np.median(given)))
        for q in (10, 25, 75, 90):
            out[f"p{q}"] = _round(float(np.percentile(given, q)))
    if len(detected):
        out["median_detected"] = _round(float(np.median(detected)))
    return out


def wins(better: dict[str, float | None], worse: dict[str, float | None]) -> Metrics:
    """On how many devices the first regime's metric beats the second's (where both exist).

    >>> wins({"a": 0.9, "b": 0.5, "c": None}, {"a": 0.7, "b": 0.6, "c": 0.2})
    {'devices_compared': 2, 'better': 1, 'equal': 0, 'worse': 1, 'share_better': 0.5}
    """
    pairs = [(better[k], worse[k]) for k in better if k in worse]
    valid = [(a, b) for a, b in pairs if a is not None and b is not None]
    won = sum(a > b for a, b in valid)
    equal = sum(a == b for a, b in valid)
    return {"devices_compared": len(valid), "better": won, "equal": equal,
            "worse": len(valid) - won - equal,
            "share_better": _round(won / len(valid)) if valid else None}


def _round(value: float) -> float:
    return round(float(value), 3)
