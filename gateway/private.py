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
- Central updates are grouped by the mechanism, epsilon and delta they ask for; the gateway
  clips each again around the base model at *its own* clip norm (never the one an update
  declares, so no vehicle, honest or not, moves the aggregate by more than the gateway allows),
  combines them and adds the noise once. Replacing one vehicle's data moves the mean of ``K``
  vehicles by at most ``2 * clip_norm / K``, so the same (epsilon, delta) costs ``K`` times
  less noise than each vehicle noising its own summary.

Releases are combined by the gateway's :class:`~gateway.strategy.Strategy`: the mean, or a
robust combination (median, trimmed mean, norm-bounded mean, centred clipping) of the same
whitened vectors, in every privacy mode; central noise is calibrated to the strategy's
sensitivity.

Exact updates (``"off"``) pass through unchanged, to be merged by the exact rule, when the
strategy is the mean; a robust strategy combines them as vectors about the base model too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from federation.messages import Update
from federation.privacy import (
    NoiseSource,
    credence,
    make_mechanism,
    relative_noise,
    resolvable,
)
from federation.summary import ModelSummary
from federation.whitening import Whitening
from gateway.strategy import Strategy, make_strategy

__all__ = ["CLIP_NORM", "Piece", "pieces", "unmasked_piece"]

CLIP_NORM = 4.0  # the gateway's clip norm, in whitened units (fedfleet/config.py)


@dataclass(frozen=True, slots=True)
class Piece:
    """A summary ready to merge, and its privacy noise relative to its own spread
    (:func:`~federation.privacy.relative_noise`)."""

    summary: ModelSummary
    noise_std: float


def pieces(updates: Sequence[Update], centre: ModelSummary, noise: NoiseSource,
           strategy: Strategy | None = None, clip_norm: float = CLIP_NORM) -> list[Piece]:
    """The round's summaries as pieces to merge: the combination of the local updates, one
    noised combination per group of central updates (each clipped again to ``clip_norm``),
    and the exact updates, each as it came (mean) or combined (a robust ``strategy``).

    >>> import numpy as np
    >>> from federation.privacy import SeededNoise, public_centre
    >>> names = ("a", "b")
    >>> mine = ModelSummary.from_array(names, np.array([[0.4, 0.6], [0.6, 0.4]]))
    >>> ask = Update("veh-1", 1, 0, mine, 1.0, 1e-5, 1.0, 0.0, privacy="central",
    ...              mechanism="laplace", clip_norm=0.1)
    >>> made = pieces([ask, ask], public_centre(names), SeededNoise(1), clip_norm=0.1)
    >>> len(made), round(made[0].summary.n, 2)  # one aggregate: 4 readings, shrunk by noise
    (1, 3.27)
    >>> round(made[0].noise_std, 4)  # sqrt(2) * 0.2 / 2 = 0.1414, relative to its spread
    0.1499
    """
    chosen = strategy or make_strategy()
    groups: dict[tuple[str, float, float], list[Update]] = {}
    exact = [u.summary for u in updates if u.privacy == "off"]
    local = [u for u in updates if u.privacy == "local"]
    made = []
    strategy = chosen.under("off")
    if exact and strategy.exact:
        made = [Piece(summary, 0.0) for summary in exact]
    elif exact:
        made.append(Piece(_combined(strategy, exact, centre, 0.0), 0.0))
    for update in updates:
        if update.privacy == "central":
            groups.setdefault((update.mechanism, update.epsilon, update.delta), []).append(update)
    if local:
        noise_std = math.sqrt(sum(u.noise_std ** 2 for u in local)) / len(local)
        made.append(_piece(_combined(chosen.under("local"), [u.summary for u in local], centre,
                                     noise_std), centre, noise_std))
    strategy = chosen.under("central")
    for (name, epsilon, delta), group in groups.items():
        mechanism = make_mechanism(name, epsilon, delta, clip_norm)
        vectors = mechanism.clip_all([u.summary for u in group], centre)
        # The mechanism's noise multiplier, times how far one vehicle moves the combination.
        ratio = strategy.sensitivity(len(group), clip_norm, mechanism.order) / (
            mechanism.sensitivity)
        noisy = mechanism.add_noise(strategy.combine(vectors), noise, mechanism.scale * ratio)
        noise_std = mechanism.noise_std * ratio
        readings = strategy.readings(np.array([u.summary.n for u in group]))
        made.append(unmasked_piece(noisy, readings, centre, noise_std))
    return [piece for piece in made if piece.summary.n > 0]


def unmasked_piece(mean: np.ndarray, readings: float, centre: ModelSummary,
                   noise_std: float) -> Piece:
    """The piece of a secure round: the unmasked average of its whitened releases about
    ``centre``, with ``noise_std`` of noise in the centre's whitened units, standing for
    ``readings``; unpacked and weighed as a central group's noised combination is."""
    aggregate = Whitening(centre).unpack(mean, readings, floor=resolvable(noise_std))
    return _piece(aggregate, centre, noise_std)


def _piece(aggregate: ModelSummary, centre: ModelSummary, noise_std: float) -> Piece:
    """A private aggregate with ``noise_std`` of noise in the centre's whitened units, counted
    for its readings shrunk by that noise (:func:`~federation.privacy.credence`): a round of
    one or two releases carries noise many times the model's own spread, which must not drag
    the model with all the readings it claims."""
    return Piece(aggregate.weighted(aggregate.n * credence(noise_std)),
                 relative_noise(noise_std, aggregate, centre))


def _combined(strategy: Strategy, summaries: Sequence[ModelSummary], centre: ModelSummary,
              noise_std: float) -> ModelSummary:
    """``summaries`` combined by ``strategy`` as vectors about ``centre``, unpacked (no
    direction narrower than ``noise_std`` resolves: :func:`~federation.privacy.resolvable`)."""
    whitening = Whitening(centre)
    vector = strategy.combine(whitening.pack_all(summaries))
    readings = strategy.readings(np.array([s.n for s in summaries]))
    return whitening.unpack(vector, readings, floor=resolvable(noise_std))
