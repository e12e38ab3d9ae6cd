"""Private updates: how a round's noised and clipped summaries become pieces of the model.

A summary released with privacy (``"local"``: clipped and noised by its vehicle; ``"central"``:
clipped only, for a trusted gateway to noise) is a vector in the whitened coordinates of the
model it was released about (:mod:`federation.whitening`), unpacked to scaled units for the
wire. The gateway packs each again about the round's base model, the same model for nearly
every release; one made about an earlier model (a release that missed its round) is packed
about this one just the same: the packing is linear, so its noise still averages out, only no
longer evenly across coordinates. Such releases are *averaged*, each vehicle weighing the same,
never merged one by one with the exact rule: that rule squares each mean's offset, and the
square of noise is a bias, not noise.

- Local updates are averaged as they came: the average carries ``sqrt(sum of each noise
  variance) / K`` of noise, ``sqrt(K)`` less than one update.
- Central updates are grouped by the mechanism, epsilon, delta and clip norm they ask for; the
  gateway clips each again around the base model (so no vehicle, honest or not, moves the
  aggregate by more than the clip norm allows), averages them and adds the noise once.
  Replacing one vehicle's data moves the average of ``K`` vehicles by at most
  ``2 * clip_norm / K``, so the same (epsilon, delta) costs ``K`` times less noise than each
  vehicle noising its own summary.

Exact updates (``"off"``) pass through unchanged, to be merged by the exact rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from federation.messages import Update
from federation.privacy import NoiseSource, average, credence, make_mechanism, relative_noise
from federation.summary import ModelSummary

__all__ = ["Piece", "pieces"]


@dataclass(frozen=True, slots=True)
class Piece:
    """A summary ready to merge, and its privacy noise relative to its own spread
    (:func:`~federation.privacy.relative_noise`)."""

    summary: ModelSummary
    noise_std: float


def pieces(updates: Sequence[Update], centre: ModelSummary, noise: NoiseSource) -> list[Piece]:
    """The round's summaries as pieces to merge: the average of the local updates, one noised
    aggregate per group of central updates, and every exact update as it came.

    >>> import numpy as np
    >>> from federation.privacy import SeededNoise, public_centre
    >>> names = ("a", "b")
    >>> mine = ModelSummary.from_array(names, np.array([[0.4, 0.6], [0.6, 0.4]]))
    >>> ask = Update("veh-1", 1, 0, mine, 1.0, 1e-5, 1.0, 0.0, privacy="central",
    ...              mechanism="laplace", clip_norm=0.1)
    >>> made = pieces([ask, ask], public_centre(names), SeededNoise(1))
    >>> len(made), round(made[0].summary.n, 2)  # one aggregate: 4 readings, shrunk by noise
    (1, 3.27)
    >>> round(made[0].noise_std, 4)  # sqrt(2) * 0.2 / 2 = 0.1414, relative to its spread
    0.1499
    """
    groups: dict[tuple[str, float, float, float], list[Update]] = {}
    local = [u for u in updates if u.privacy == "local"]
    made = [Piece(u.summary, 0.0) for u in updates if u.privacy == "off"]
    for update in updates:
        if update.privacy == "central":
            key = (update.mechanism, update.epsilon, update.delta, update.clip_norm)
            groups.setdefault(key, []).append(update)
    if local:
        noise_std = math.sqrt(sum(u.noise_std ** 2 for u in local)) / len(local)
        made.append(_piece(average([u.summary for u in local], centre, noise_std), centre,
                           noise_std))
    for key, group in groups.items():
        mechanism = make_mechanism(*key)
        made.append(_piece(mechanism.aggregate([u.summary for u in group], centre, noise),
                           centre, mechanism.noise_std / len(group)))
    return [piece for piece in made if piece.summary.n > 0]


def _piece(aggregate: ModelSummary, centre: ModelSummary, noise_std: float) -> Piece:
    """A private aggregate with ``noise_std`` of noise in the centre's whitened units, counted
    for its readings shrunk by that noise (:func:`~federation.privacy.credence`): a round of
    one or two releases carries noise many times the model's own spread, which must not drag
    the model with all the readings it claims."""
    return Piece(aggregate.weighted(aggregate.n * credence(noise_std)),
                 relative_noise(noise_std, aggregate, centre))
