"""Central noise: the gateway noises the aggregate of summaries vehicles sent it clipped only.

For deployments that trust the gateway. Updates marked ``"central"`` are grouped by the
mechanism, epsilon, delta and clip norm they ask for; the gateway clips each group's offsets
from its current global model again (so no vehicle, honest or not, moves the aggregate by more
than the clip norm allows), averages them and adds the noise once. Replacing one vehicle's data
moves the average of ``K`` vehicles by at most ``2 * clip_norm / K``, so the same (epsilon,
delta) costs ``K`` times less noise than each vehicle noising its own summary. Updates noised
by their vehicle (``"local"``) or exact (``"off"``) pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from federation.messages import Update
from federation.privacy import Mechanism, NoiseSource, make_mechanism
from federation.summary import ModelSummary

__all__ = ["Piece", "noise_centrally"]


@dataclass(frozen=True, slots=True)
class Piece:
    """A summary ready to merge, and the standard deviation of the noise in each coordinate."""

    summary: ModelSummary
    noise_std: float


def _mechanism(update: Update) -> Mechanism:
    return make_mechanism(update.mechanism, update.epsilon, update.delta, update.clip_norm)


def noise_centrally(updates: Sequence[Update], centre: ModelSummary,
                    noise: NoiseSource) -> list[Piece]:
    """The round's summaries as pieces to merge: one noised aggregate per group of central
    updates, and every other update as it came.

    >>> import numpy as np
    >>> from federation.privacy import SeededNoise, public_centre
    >>> names = ("a", "b")
    >>> mine = ModelSummary.from_array(names, np.array([[0.4, 0.6], [0.6, 0.4]]))
    >>> ask = Update("veh-1", 1, 0, mine, 1.0, 1e-5, 1.0, 0.0, privacy="central",
    ...              mechanism="laplace", clip_norm=0.1)
    >>> pieces = noise_centrally([ask, ask], public_centre(names), SeededNoise(1))
    >>> len(pieces), pieces[0].summary.n, round(pieces[0].noise_std, 4)  # sqrt(2) * 0.2 / 2
    (1, 4.0, 0.1414)
    """
    groups: dict[tuple[str, float, float, float], list[Update]] = {}
    pieces = []
    for update in updates:
        if update.privacy == "central":
            key = (update.mechanism, update.epsilon, update.delta, update.clip_norm)
            groups.setdefault(key, []).append(update)
        else:
            pieces.append(Piece(update.summary, update.noise_std))
    for group in groups.values():
        mechanism = _mechanism(group[0])
        aggregate = mechanism.aggregate([u.summary for u in group], centre, noise)
        pieces.append(Piece(aggregate, mechanism.noise_std / len(group)))
    return pieces
