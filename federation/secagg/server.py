"""The gateway's side of a secure round: collects each phase, answers it, unmasks the sum.

:meth:`SecAggServer.receive` takes every message of the open phase; one from another round,
out of turn, from a vehicle not (or no longer) in the round, repeated, or of the wrong size
for the plan raises :class:`~federation.secagg.errors.SecAggError` and changes nothing. The
phase closes when the caller says (at its deadline): :meth:`~SecAggServer.rosters`,
:meth:`~SecAggServer.relays` and :meth:`~SecAggServer.unmask_requests` return the messages
for each vehicle still in the round, and :meth:`~SecAggServer.result` the unmasked sum. Any
of them refuses, and ends the round, when fewer vehicles than the plan's quorum took part in
the phase (``below_threshold``: in the first three the noise in the sum would fall short; in
the last, the same quorum keeps the rule one), or when some secret the sum
needs cannot be rebuilt (``too_few``) or does not match its commitment (``bad_share``).

The gateway learns the sum of the inputs of the vehicles that sent one, with the noise of all
their shares; of any one vehicle it learns nothing (its masked input is uniform over the ring
and the gateway never holds both of its secrets), unless as many of its neighbours collude
as the Shamir threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from federation.secagg import masks
from federation.secagg.errors import SecAggError
from federation.secagg.graph import graph_seed, neighbourhoods
from federation.secagg.keys import KeyPair, agree, context
from federation.secagg.messages import (
    Advertise,
    MaskedInput,
    Neighbour,
    Roster,
    SecAggMessage,
    ShareKeys,
    SharesRelay,
    UnmaskRequest,
    UnmaskShares,
)
from federation.secagg.params import TAIL_STDS, RoundPlan, SecAggConfig
from federation.secagg.shamir import combine

__all__ = ["Aggregate", "SecAggServer"]

_RECEIVES = {"advertise": Advertise, "share": ShareKeys, "input": MaskedInput,
             "unmask": UnmaskShares}


@dataclass(frozen=True)
class Aggregate:
    """A round's unmasked result: the sum of ``inputs`` vectors, in their own units, with
    discrete Gaussian noise of ``noise_std`` on each coordinate (0 without noise), exact to
    ``resolution`` per input (stochastic rounding, unbiased)."""

    total: np.ndarray
    vehicle_ids: tuple[str, ...]
    noise_std: float
    resolution: float

    @property
    def inputs(self) -> int:
        return len(self.vehicle_ids)


class SecAggServer:
    """The gateway in one secure round planned for ``vehicles`` vehicles.

    Examples
    --------
    >>> server = SecAggServer(7, SecAggConfig(dimension=3, clip_norm=1.0), vehicles=20)
    >>> server.plan.min_inputs, server.phase
    (14, 'advertise')
    >>> server.rosters()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    federation.secagg.errors.SecAggError: below_threshold: 0 of 20 vehicles advertised keys; ...
    >>> server.phase
    'failed'
    """

    def __init__(self, round_number: int, config: SecAggConfig, vehicles: int) -> None:
        self.round = round_number
        self.plan = RoundPlan.make(config, vehicles)
        self.phase = "advertise"
        self._keys: dict[str, Advertise] = {}
        self._advertised: set[bytes] = set()
        self._graph: dict[str, tuple[str, ...]] = {}
        self._index: dict[str, dict[str, int]] = {}
        self._sealed: dict[str, ShareKeys] = {}
        self._inputs: dict[str, MaskedInput] = {}
        self._shares: dict[str, UnmaskShares] = {}

    def receive(self, message: SecAggMessage) -> None:
        """Take one vehicle's message of the open phase."""
        if message.round != self.round:
            raise SecAggError("wrong_round", f"round {message.round}, not {self.round}")
        if _RECEIVES.get(self.phase) is not type(message):
            raise SecAggError("wrong_phase", f"{type(message).__name__} in the {self.phase} "
                              "phase")
        sender = message.vehicle_id
        if isinstance(message, Advertise):
            self._take_keys(message)
        elif isinstance(message, ShareKeys):
            self._check_sender(sender, self._graph, self._sealed)
            self._check_count(message.sealed, self._graph[sender])
            self._sealed[sender] = message
        elif isinstance(message, MaskedInput):
            self._check_sender(sender, self._sealed, self._inputs)
            if len(message.masked) != self.plan.config.dimension * self.plan.ring.width_bytes:
                raise SecAggError("bad_shape", "a masked vector of the wrong size")
            self._inputs[sender] = message
        else:
            assert isinstance(message, UnmaskShares)
            self._check_sender(sender, self._inputs, self._shares)
            self._check_shares(message)
            self._shares[sender] = message

    def rosters(self) -> dict[str, Roster]:
        """Close phase 1: each vehicle that advertised, its neighbours and their keys."""
        self._close("advertise", self._keys, "advertised keys")
        ids = sorted(self._keys)
        self._graph = neighbourhoods(ids, self.plan.degree, graph_seed(self.round, ids))
        self._index = {u: {v: i for i, v in enumerate(ns)} for u, ns in self._graph.items()}
        self.phase = "share"
        entry = {v: Neighbour(v, keys.cipher_key, keys.mask_key) for v, keys in self._keys.items()}
        return {u: Roster(u, self.round, self.plan.vehicles, len(ids), tuple(entry[v] for v in ns))
                for u, ns in self._graph.items()}

    def relays(self) -> dict[str, SharesRelay]:
        """Close phase 2: for each vehicle that shared, what its neighbours sealed for it."""
        self._close("share", self._sealed, "shared keys")
        self.phase = "input"
        return {v: SharesRelay(v, self.round, tuple(
            self._sealed[u].sealed[self._index[u][v]] if u in self._sealed else None
            for u in self._graph[v])) for v in self._sealed}

    def unmask_requests(self) -> dict[str, UnmaskRequest]:
        """Close phase 3: to each vehicle whose input is in, which neighbours' are too."""
        self._close("input", self._inputs, "sent masked inputs")
        self.phase = "unmask"
        return {v: UnmaskRequest(v, self.round, len(self._inputs), tuple(
            u in self._inputs for u in self._graph[v])) for v in self._inputs}

    def result(self) -> Aggregate:
        """Close phase 4: the unmasked sum of the inputs."""
        self._close("unmask", self._shares, "sent unmask shares")
        try:
            total = self._unmasked()
        except SecAggError:
            self.phase = "failed"
            raise
        self.phase = "done"
        plan = self.plan
        return Aggregate(plan.ring.decode(total), tuple(sorted(self._inputs)),
                         self._kept_noise() ** 0.5 * plan.ring.resolution, plan.ring.resolution)

    def _kept_noise(self) -> float:
        """The variance of the noise left in the sum, in lattice units: each input's kept
        at the sum's level if its vehicle removed the rest, all of its share if not."""
        plan = self.plan
        level = plan.kept_level(len(self._inputs))
        removed = sum(1 for u in self._inputs
                      if u in self._shares and self._shares[u].noise is not None)
        return (removed * plan.level_variance(level)
                + (len(self._inputs) - removed) * plan.share_noise_std**2)

    def _unmasked(self) -> np.ndarray:
        ring, d = self.plan.ring, self.plan.config.dimension
        total = np.zeros(d, dtype=np.uint64)
        for u, message in self._inputs.items():
            seed = self._rebuild(u, survived=True)
            if masks.seed_digest(seed) != message.seed_digest:
                raise SecAggError("bad_share", f"the self-mask seed of {u} does not match")
            total = ring.add(total, ring.from_bytes(message.masked, d))
            total = ring.subtract(total, masks.expand(ring, seed, d))
            shares = self._shares.get(u)
            if shares is not None and shares.noise is not None:
                total = ring.subtract(total, ring.from_bytes(shares.noise, d))
        for v in self._sealed.keys() - self._inputs.keys():
            key = KeyPair.from_private(self._rebuild(v, survived=False))
            if key.public != self._keys[v].mask_key:
                raise SecAggError("bad_share", f"the mask key of {v} does not match")
            for w in self._graph[v]:
                if w in self._inputs:
                    seed = agree(key, self._keys[w].mask_key,
                                 context("mask", self.round, *sorted((v, w))))
                    total = ring.subtract(total, masks.pairwise(ring, seed, d, w, v))
        return total

    def _rebuild(self, owner: str, survived: bool) -> bytes:
        """The self-mask seed (``survived``) or the mask key of ``owner`` from the shares its
        neighbours revealed."""
        points = []
        for holder in self._graph[owner]:
            if holder in self._shares:
                share = self._shares[holder].shares[self._index[holder][owner]]
                if share is not None:
                    points.append((self._index[owner][holder] + 1, int.from_bytes(share, "big")))
        if len(points) < self.plan.threshold:
            raise SecAggError("too_few", f"{len(points)} shares of {owner}'s "
                              f"{'seed' if survived else 'key'}; the round needs "
                              f"{self.plan.threshold}")
        try:
            return combine(points[: self.plan.threshold])
        except ValueError:
            raise SecAggError("bad_share", f"the shares of {owner} do not interpolate") from None

    def _take_keys(self, message: Advertise) -> None:
        sender = message.vehicle_id
        if sender in self._keys:
            raise SecAggError("duplicate", f"{sender} already advertised keys")
        if len(self._keys) >= self.plan.vehicles:
            raise SecAggError("full", f"the round is planned for {self.plan.vehicles} vehicles")
        keys = {message.cipher_key, message.mask_key}
        if len(keys) < 2 or keys & self._advertised:
            raise SecAggError("duplicate", "a public key already advertised")
        self._keys[sender] = message
        self._advertised |= keys

    def _check_sender(self, sender: str, members: dict, done: dict) -> None:
        if sender not in members:
            raise SecAggError("unknown_vehicle", f"{sender} is not in the {self.phase} phase")
        if sender in done:
            raise SecAggError("duplicate", f"{sender} already sent its {self.phase} message")

    def _check_count(self, entries: tuple, neighbours: tuple[str, ...]) -> None:
        if len(entries) != len(neighbours):
            raise SecAggError("bad_shape", f"{len(entries)} entries for {len(neighbours)} "
                              "neighbours")

    def _check_shares(self, message: UnmaskShares) -> None:
        neighbours = self._graph[message.vehicle_id]
        self._check_count(message.shares, neighbours)
        for u, share in zip(neighbours, message.shares, strict=True):
            if (share is not None) != (u in self._sealed):
                raise SecAggError("bad_shape", f"a share for {u} must be there if and only "
                                  "if it shared keys")
        if message.noise is not None:
            self._check_noise(message.noise)

    def _check_noise(self, payload: bytes) -> None:
        """Refuse noise revealed where the sum needs all of it, or beyond
        :data:`~federation.secagg.params.TAIL_STDS` standard deviations of the parts a
        vehicle may reveal in any coordinate: what it says it removes is bounded as its
        noise is."""
        plan = self.plan
        parts = plan.noise_parts[plan.kept_level(len(self._inputs)) + 1:]
        if len(payload) != plan.config.dimension * plan.ring.width_bytes:
            raise SecAggError("bad_shape", "revealed noise of the wrong size")
        values = plan.ring.signed(plan.ring.from_bytes(payload, plan.config.dimension))
        bound = TAIL_STDS * math.hypot(*parts) if parts else 0.0
        if float(np.abs(values.astype(float)).max()) > bound:
            raise SecAggError("out_of_range", "revealed noise beyond what the round's levels "
                              "allow")

    def _close(self, phase: str, members: dict, what: str) -> None:
        if self.phase != phase:
            raise SecAggError("wrong_phase", f"the round is in the {self.phase} phase")
        if len(members) < self.plan.min_inputs:
            self.phase = "failed"
            raise SecAggError("below_threshold", f"{len(members)} of {self.plan.vehicles} "
                              f"vehicles {what}; the quorum is {self.plan.min_inputs}")
