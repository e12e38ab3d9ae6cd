"""Poisoning attacks, for measuring the gateway's defences offline.

A share of the devices is hostile: each makes the update an honest vehicle would, then
sends it altered, as a vehicle whose code or credential an attacker holds could. Every kind
knows the global model (it is retained on the broker for every vehicle to read), and all but
``huge-counts`` make what they send look physical (means in ``[0, 1]``, variances at most
``1/4``, a positive semi-definite covariance), so that validation alone does not stop them:

- ``scaled``: the update's offset from the global model, in its whitened coordinates, times 10;
- ``shifted``: every mean moved up by 0.3 scaled units (30 % of each channel's range);
- ``huge-counts``: the update as it is, claiming 1,000 times its readings;
- ``sign-flipped``: the offset from the global model negated;
- ``colluding``: every attacker sends the same summary: the global model's mean with four
  times its covariance, a model so wide that faults no longer stand out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from analytics.datasets import split_devices
from federation.messages import Update
from federation.summary import ModelSummary
from federation.whitening import Whitening

__all__ = ["ATTACKS", "Attack", "physical"]

ATTACKS = ("scaled", "shifted", "huge-counts", "sign-flipped", "colluding")
SCALE = 10.0
SHIFT = 0.3
COUNT_FACTOR = 1000.0
WIDEN = 4.0


def physical(summary: ModelSummary) -> ModelSummary:
    """The nearest summary that passes validation's value checks: the covariance's negative
    directions set to 0, then :meth:`~federation.summary.ModelSummary.feasible`.

    >>> bad = ModelSummary(("a", "b"), 3.0, np.array([2.0, 0.5]), np.diag([-1.0, 0.01]))
    >>> fixed = physical(bad)
    >>> fixed.mean.tolist(), np.diag(fixed.cov).round(6).tolist()
    ([1.0, 0.5], [0.0, 0.01])
    """
    values, vectors = np.linalg.eigh((summary.cov + summary.cov.T) / 2)
    cov = (vectors * np.maximum(values, 0.0)) @ vectors.T
    return ModelSummary(summary.features, summary.n, summary.mean, cov).feasible()


@dataclass(frozen=True)
class Attack:
    """``kind`` of poisoning by the devices in ``attackers``.

    Examples
    --------
    >>> from federation.features import FEATURE_NAMES
    >>> from federation.privacy import public_centre
    >>> attack = Attack.choose("shifted", ["veh-1", "veh-2", "veh-3", "veh-4"], 0.5, seed=0)
    >>> sorted(attack.attackers)
    ['veh-2', 'veh-3']
    >>> d = len(FEATURE_NAMES)
    >>> honest = ModelSummary(FEATURE_NAMES, 30.0, np.full(d, 0.2), np.eye(d) * 0.01)
    >>> update = Update("veh-3", 1, 0, honest, 0.0, 0.0, 0.0, 0.0, privacy="off")
    >>> sent = attack.alter(update, public_centre(FEATURE_NAMES))
    >>> sent.summary.mean[:2].round(2).tolist(), sent.summary.n
    ([0.5, 0.5], 30.0)
    """

    kind: str
    attackers: frozenset[str]

    @classmethod
    def choose(cls, kind: str, devices: Sequence[str], fraction: float, seed: int) -> Attack:
        """``kind`` by a seeded ``fraction`` of ``devices``."""
        if kind not in ATTACKS:
            raise ValueError(f"unknown attack {kind!r}: use one of {', '.join(ATTACKS)}")
        return cls(kind, frozenset(split_devices(list(devices), fraction, seed + 1)))

    def alter(self, update: Update, model: ModelSummary) -> Update:
        """What an attacker sends instead of ``update``, knowing the global ``model``."""
        if update.vehicle_id not in self.attackers:
            return update
        summary = update.summary
        if self.kind == "huge-counts":
            return replace(update, summary=summary.weighted(summary.n * COUNT_FACTOR),
                           replaces_readings=update.replaces_readings * COUNT_FACTOR)
        whitening = Whitening(model)
        if self.kind == "scaled":
            forged = whitening.unpack(SCALE * whitening.pack(summary), summary.n)
        elif self.kind == "sign-flipped":
            forged = whitening.unpack(-whitening.pack(summary), summary.n)
        elif self.kind == "shifted":
            forged = replace(summary, mean=summary.mean + SHIFT)
        else:
            forged = ModelSummary(summary.features, summary.n, model.mean, WIDEN * model.cov)
        return replace(update, summary=physical(forged))
