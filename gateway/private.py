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

Packing is most of a close's work, and the base model is known when the round opens: the
gateway packs each update as it is accepted (:class:`Packed`, in blocks), so that the close
only clips and combines rows that are ready.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

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

__all__ = ["CLIP_NORM", "Packed", "Piece", "pieces", "unmasked_piece"]

CLIP_NORM = 4.0  # the gateway's clip norm, in whitened units (fedfleet/config.py)
PACK_BLOCK = 1024  # updates packed at once: enough to spread each array step's fixed cost


@dataclass(frozen=True, slots=True)
class Piece:
    """A summary ready to merge, and its privacy noise relative to its own spread
    (:func:`~federation.privacy.relative_noise`)."""

    summary: ModelSummary
    noise_std: float


@dataclass
class _Group:
    """Accepted updates combined together: their rows of :class:`Packed`, and readings."""

    updates: list[Update] = field(default_factory=list)
    readings: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)


class Packed:
    """A round's updates, grouped as :func:`pieces` combines them and packed about its base
    model ``centre`` as they are accepted, in blocks of :data:`PACK_BLOCK`, into rows of one
    growing array (all but exact updates under an exact ``strategy``, merged as they came).

    >>> import numpy as np
    >>> from federation.privacy import public_centre
    >>> names = ("a", "b")
    >>> mine = ModelSummary.from_array(names, np.array([[0.4, 0.6], [0.6, 0.4]]))
    >>> packed = Packed(public_centre(names), make_strategy())
    >>> packed.add(Update("veh-1", 1, 0, mine, 1.0, 1e-5, 1.0, 0.0, privacy="central"))
    >>> [(key, len(group.updates)) for key, group in packed.groups().items()]
    [(('central', 'gaussian', 1.0, 1e-05), 1)]
    >>> rows = packed.vectors(packed.groups()[("central", "gaussian", 1.0, 1e-5)])
    >>> bool(np.array_equal(rows, Whitening(packed.centre).pack_all([mine])))
    True
    """

    def __init__(self, centre: ModelSummary, strategy: Strategy) -> None:
        self.centre = centre
        self._whitening = Whitening(centre)
        self._exact = strategy.under("off").exact
        self._rows = np.empty((PACK_BLOCK, self._whitening.size))
        self._count = 0
        self._groups: dict[tuple[str, str, float, float], _Group] = {}
        self._members: dict[str, Update] = {}  # by vehicle
        self._pending: list[tuple[_Group, Update]] = []
        self._dropped = False

    def fits(self, centre: ModelSummary, vehicles: Collection[str]) -> bool:
        """Whether the rows are packed about ``centre`` and hold exactly ``vehicles``."""
        mine = self.centre
        return (mine.features == centre.features and mine.n == centre.n
                and np.array_equal(mine.mean, centre.mean)
                and np.array_equal(mine.cov, centre.cov) and self._members.keys() == vehicles)

    def add(self, update: Update) -> None:
        """Take an accepted update; a full block of them is packed at once."""
        central = update.privacy == "central"
        key = (update.privacy, update.mechanism if central else "",
               update.epsilon if central else 0.0, update.delta if central else 0.0)
        group = self._groups.get(key)
        if group is None:  # not setdefault: that would build a group for every update
            group = self._groups[key] = _Group()
        group.updates.append(update)
        group.readings.append(update.summary.n)
        self._members[update.vehicle_id] = update
        if update.privacy != "off" or not self._exact:
            self._pending.append((group, update))
            if len(self._pending) >= PACK_BLOCK:
                self.pack()

    def drop(self, vehicle: str) -> None:
        """Leave out ``vehicle``'s update (a partial holds it)."""
        if self._members.pop(vehicle, None) is not None:
            self._dropped = True

    def pack(self) -> None:
        """Pack the updates taken since the last pack."""
        if not self._pending:
            return
        vectors = self._whitening.pack_all([u.summary for _, u in self._pending])
        end = self._count + len(vectors)
        if end > len(self._rows):
            grown = np.empty((max(end, 2 * len(self._rows)), self._rows.shape[1]))
            grown[:self._count] = self._rows[:self._count]
            self._rows = grown
        self._rows[self._count:end] = vectors
        for row, (group, _) in enumerate(self._pending, self._count):
            group.rows.append(row)
        self._count, self._pending = end, []

    def groups(self) -> dict[tuple[str, str, float, float], _Group]:
        """The groups by (privacy, and for central updates mechanism, epsilon and delta), in
        the order each first came, packed; without the updates dropped."""
        self.pack()
        if not self._dropped:
            return self._groups
        kept = {}
        for key, group in self._groups.items():
            keep = [i for i, u in enumerate(group.updates) if self._members.get(u.vehicle_id) is u]
            if keep:
                kept[key] = _Group([group.updates[i] for i in keep],
                                   [group.readings[i] for i in keep],
                                   [group.rows[i] for i in keep] if group.rows else [])
        return kept

    def vectors(self, group: _Group) -> np.ndarray:
        """The rows of ``group``'s updates (read only: a view when they are consecutive, as
        they are in a round of one group)."""
        rows = group.rows  # increasing: consecutive if the last is as far as their count
        if rows and rows[-1] - rows[0] == len(rows) - 1:
            view = self._rows[rows[0]:rows[-1] + 1]
            view.flags.writeable = False
            return view
        return self._rows[np.array(rows, dtype=np.intp)]


def pieces(updates: Sequence[Update], centre: ModelSummary, noise: NoiseSource,
           strategy: Strategy | None = None, clip_norm: float = CLIP_NORM,
           packed: Packed | None = None) -> list[Piece]:
    """The round's summaries as pieces to merge: the combination of the local updates, one
    noised combination per group of central updates (each clipped again to ``clip_norm``),
    and the exact updates, each as it came (mean) or combined (a robust ``strategy``).
    ``packed``, the same updates packed already about ``centre``, is taken as it is.

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
    if packed is None:
        packed = Packed(centre, chosen)
        for update in updates:
            packed.add(update)
    groups = packed.groups()
    made = []
    strategy = chosen.under("off")
    exact = groups.get(("off", "", 0.0, 0.0))
    if exact and strategy.exact:
        made = [Piece(u.summary, 0.0) for u in exact.updates]
    elif exact:
        made.append(Piece(_combined(strategy, packed.vectors(exact), exact.readings, centre,
                                    0.0), 0.0))
    local = groups.get(("local", "", 0.0, 0.0))
    if local:
        noise_std = math.sqrt(sum(u.noise_std ** 2 for u in local.updates)) / len(local.updates)
        made.append(_piece(_combined(chosen.under("local"), packed.vectors(local),
                                     local.readings, centre, noise_std), centre, noise_std))
    strategy = chosen.under("central")
    for (privacy, name, epsilon, delta), group in groups.items():
        if privacy != "central":
            continue
        mechanism = make_mechanism(name, epsilon, delta, clip_norm)
        vectors = mechanism.clip_rows(packed.vectors(group))
        # The mechanism's noise multiplier, times how far one vehicle moves the combination.
        ratio = strategy.sensitivity(len(group.updates), clip_norm, mechanism.order) / (
            mechanism.sensitivity)
        noisy = mechanism.add_noise(strategy.combine(vectors), noise, mechanism.scale * ratio)
        noise_std = mechanism.noise_std * ratio
        readings = strategy.readings(np.array(group.readings))
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


def _combined(strategy: Strategy, vectors: np.ndarray, counts: Sequence[float],
              centre: ModelSummary, noise_std: float) -> ModelSummary:
    """Summaries of ``counts`` readings, packed about ``centre`` as ``vectors``, combined by
    ``strategy`` and unpacked (no direction narrower than ``noise_std`` resolves:
    :func:`~federation.privacy.resolvable`)."""
    vector = strategy.combine(vectors)
    readings = strategy.readings(np.array(counts))
    return Whitening(centre).unpack(vector, readings, floor=resolvable(noise_std))
