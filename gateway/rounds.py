"""One federation round: which updates it accepts, and when it is due to close."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from federation.features import Schema
from federation.messages import GlobalModel, Partial, RoundOpen, Update
from federation.privacy import PUBLIC_CLIP_FACTOR, NoiseSource, SecureNoise, public_centre
from federation.secagg.server import Aggregate
from federation.summary import ModelSummary
from gateway.private import CLIP_NORM, Packed, Piece, pieces, unmasked_piece
from gateway.strategy import Strategy
from gateway.validation import Plausibility

__all__ = ["Round", "release_centre"]


@dataclass
class Round:
    """The open round and the updates accepted into it.

    A round is due at its deadline, or earlier once ``target_updates`` updates are in. At the
    close it is merged only if at least ``min_updates`` were accepted (the quorum).

    ``expected`` holds the vehicles the round counts on (those online when it opened, and any
    heard from while it is open); those of them that ``left`` (went offline) while it was open
    without sending it an update have :meth:`dropped` out. A vehicle that stays online and
    sends nothing has not dropped out: with privacy, vehicles release rarely.

    >>> r = Round(RoundOpen(round=3, opened_at=0.0, deadline=10.0, min_updates=1, model_version=2),
    ...           expected={"veh-1", "veh-2", "veh-3"}, left={"veh-1", "veh-2"})
    >>> r.reject_reason("veh-1", "veh-2", 3)
    'topic_mismatch'
    >>> r.reject_reason("veh-1", "veh-1", 2)
    'wrong_round'
    >>> r.dropped()
    ('veh-1', 'veh-2')
    """

    info: RoundOpen
    target_updates: int | None = None
    accepted: dict[str, Update] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    expected: set[str] = field(default_factory=set)
    senders: set[str] = field(default_factory=set)
    left: set[str] = field(default_factory=set)
    partials: dict[str, Partial] = field(default_factory=dict)  # by worker: merged elsewhere
    held: set[str] = field(default_factory=set)  # the vehicles the partials hold
    packed: Packed | None = None  # the accepted updates packed for the close: prepare()
    # Combined elsewhere (a secure round's unmasked sum: gateway/secure.py), and the readings
    # of earlier releases they replace.
    unmasked: list[Piece] = field(default_factory=list)
    unmasked_replaces_readings: float = 0.0

    @property
    def number(self) -> int:
        return self.info.round

    @property
    def participants(self) -> int:
        """The updates accepted here and in the partials."""
        return len(self.accepted) + len(self.held)

    @property
    def quorum_met(self) -> bool:
        return self.participants >= self.info.min_updates

    def take_unmasked(self, aggregate: Aggregate, readings: float, replaces_readings: float,
                      centre: ModelSummary) -> None:
        """A secure round's unmasked sum into this round's merge, as the average of its
        releases, made about ``centre``: ``readings`` they summarise in all, and
        ``replaces_readings`` of earlier releases they replace."""
        self.unmasked.append(unmasked_piece(aggregate.total / aggregate.inputs, readings,
                                            centre, aggregate.noise_std / aggregate.inputs))
        self.unmasked_replaces_readings += replaces_readings
        self.held.update(aggregate.vehicle_ids)
        self.senders.update(aggregate.vehicle_ids)

    def add_partial(self, partial: Partial) -> str | None:
        """Take a worker's partial aggregate of this round, or return why not.

        No vehicle counts twice: a partial holding a vehicle another partial holds is refused
        whole (``duplicate``: it cannot be taken apart), and an update accepted here from a
        vehicle the partial holds is dropped (the vehicle sent twice; the partial keeps it).
        """
        if partial.round != self.number or partial.model_version != self.info.model_version:
            return "wrong_round"
        if partial.worker_id in self.partials or self.held.intersection(partial.vehicles):
            return "duplicate"
        for vehicle in self.accepted.keys() & set(partial.vehicles):
            del self.accepted[vehicle]
            if self.packed is not None:
                self.packed.drop(vehicle)
            self.rejected["duplicate"] += 1
        self.partials[partial.worker_id] = partial
        self.held.update(partial.vehicles)
        self.senders.update(partial.vehicles)
        return None

    def is_due(self, now_s: float) -> bool:
        target = self.target_updates
        return now_s >= self.info.deadline or (target is not None and self.participants >= target)

    def reject_reason(self, topic_vehicle: str, vehicle_id: str, round_number: int,
                      late_allowed: bool = False) -> str | None:
        """Why an update from ``topic_vehicle`` cannot join this round, or ``None`` if it can
        (with ``late_allowed``, an update for the round before this one can)."""
        if topic_vehicle != vehicle_id:
            return "topic_mismatch"
        if round_number != self.number and not (late_allowed and round_number == self.number - 1):
            return "wrong_round"
        if vehicle_id in self.accepted or vehicle_id in self.held:
            return "duplicate"
        return None

    def offer(self, topic_vehicle: str, update: Update) -> str | None:
        """Accept ``update`` or return the reason it was rejected (and count it).

        A private release that missed its round (sent in time, delivered after the close) joins
        this one: its vehicle paid for it, and the release is about a model the gateway can
        express it against (:mod:`gateway.private`). An exact update that missed its round is
        ``wrong_round``: it summarises a round's readings only.
        """
        if update.round == self.number:
            self.senders.add(topic_vehicle)
        reason = self.reject_reason(topic_vehicle, update.vehicle_id, update.round,
                                    late_allowed=update.privacy != "off")
        if reason is None:
            self.accepted[update.vehicle_id] = update
            if self.packed is not None:
                self.packed.add(update)
        else:
            self.rejected[reason] += 1
        return reason

    def admit(self, topic_vehicle: str, update: Update, plausibility: Plausibility,
              now_s: float) -> str | None:
        """Check ``update`` is physical (:mod:`gateway.validation`), then :meth:`offer` it;
        accepted, ``plausibility`` remembers it. The reason it was rejected, or ``None``."""
        reason = plausibility.reason(update, now_s)
        if reason is not None:
            self.rejected[reason] += 1
            return reason
        reason = self.offer(topic_vehicle, update)
        if reason is None:
            plausibility.accepted(update, now_s)
        return reason

    def dropped(self, excused: Collection[str] = ()) -> tuple[str, ...]:
        """The expected vehicles, less ``excused``, that left the round without sending it an
        update; sorted."""
        return tuple(sorted((self.expected & self.left) - self.senders - set(excused)))

    def prepare(self, previous: GlobalModel | None, strategy: Strategy, schema: Schema) -> None:
        """Pack each update as it is accepted (:class:`~gateway.private.Packed`) about the
        centre :meth:`merge` will combine them about, with ``previous`` and ``strategy``: the
        close then only combines. Without it, or if the centre changed, the close packs."""
        self.packed = Packed(release_centre(previous, schema)[0], strategy)
        for update in self.accepted.values():
            self.packed.add(update)

    def merge(
        self, previous: GlobalModel | None, strategy: Strategy, schema: Schema, created_at: float,
        noise: NoiseSource | None = None, clip_norm: float = CLIP_NORM,
    ) -> GlobalModel:
        """The next global model: ``previous`` with this round's accepted updates merged in.

        Private updates, all released about the round's base model, are first combined by
        ``strategy`` (and those that ask for central privacy clipped again to ``clip_norm``, or
        :data:`~federation.privacy.PUBLIC_CLIP_FACTOR` times it about the public centre, and
        noised, with ``noise``, default secure noise): :mod:`gateway.private`."""
        centre, bound = release_centre(previous, schema, clip_norm)
        packed = self.packed
        if packed is not None and not packed.fits(centre, self.accepted.keys()):
            packed = None  # packed about another model, or the updates changed behind it
        made = pieces(list(self.accepted.values()), centre, noise or SecureNoise(), strategy,
                      bound, packed)
        made += [Piece(p.summary, 0.0) for p in self.partials.values() if p.vehicles]
        made += self.unmasked
        # A private release summarises all its vehicle learned: what its last one did counts
        # in the previous model already, and now counts in this round's instead.
        replaced = (sum(u.replaces_readings for u in self.accepted.values())
                    + self.unmasked_replaces_readings)
        kept = max(0.0, previous.summary.n - replaced) if previous else 0.0
        base = previous.summary.weighted(kept) if previous else ModelSummary.empty(schema.names)
        summary = strategy.aggregate(base, [p.summary for p in made]).feasible()
        return GlobalModel(
            version=(previous.version if previous else 0) + 1,
            round=self.number,
            participants=self.participants,
            summary=summary,
            created_at=created_at,
            noise_std=_merged_noise_std(previous, kept, made, summary.n),
            schema_digest=schema.digest,
        )


def release_centre(previous: GlobalModel | None, schema: Schema,
                   clip_norm: float = CLIP_NORM) -> tuple[ModelSummary, float]:
    """What a round's releases are made about (its base model ``previous``, or the public
    centre before the first), and the norm they are clipped to there."""
    if previous is None:
        return public_centre(schema.names), clip_norm * PUBLIC_CLIP_FACTOR
    return previous.summary, clip_norm


def _merged_noise_std(previous: GlobalModel | None, kept: float, pieces: list[Piece],
                      n: float) -> float:
    """The relative noise left in a merge: each summary's noise weighs by its readings
    (``kept`` of the previous model's)."""
    weighted = (previous.noise_std * kept) ** 2 if previous else 0.0
    weighted += sum((p.noise_std * p.summary.n) ** 2 for p in pieces)
    return math.sqrt(weighted) / n if n else 0.0
