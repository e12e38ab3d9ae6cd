"""A vehicle's side of a secure round: a pure object that takes messages and returns them.

It makes its keys and self-mask seed when created, then answers each phase once, in order:
:meth:`SecAggClient.advertise`, :meth:`~SecAggClient.share_keys` (given its roster),
:meth:`~SecAggClient.masked_input` (given the shares relayed to it, and its vector) and
:meth:`~SecAggClient.unmask` (given the gateway's request). A message out of turn, for another
round or vehicle, malformed for the round's plan, or forged raises
:class:`~federation.secagg.errors.SecAggError` and changes nothing; so does a request to
unmask a sum of fewer inputs than the plan's quorum. The vehicle reveals, for each neighbour,
one share only: of its self-mask seed if that neighbour's input is in the sum, of its mask
key if not, so the gateway never holds both for anyone; and the parts of its own noise that a
sum of that many inputs does not need (:attr:`~federation.secagg.params.RoundPlan.levels`).
"""

from __future__ import annotations

import secrets

import numpy as np

from federation.privacy import clip
from federation.secagg import masks
from federation.secagg.errors import SecAggError
from federation.secagg.keys import KeyPair, agree, context, open_sealed, seal
from federation.secagg.messages import (
    Advertise,
    MaskedInput,
    Neighbour,
    Roster,
    ShareKeys,
    SharesRelay,
    UnmaskRequest,
    UnmaskShares,
)
from federation.secagg.noise import IntegerNoise, SecureIntegerNoise
from federation.secagg.params import RoundPlan, SecAggConfig
from federation.secagg.randomness import RandomBytes, generator
from federation.secagg.shamir import SECRET_BYTES, SHARE_BYTES, split
from federation.topics import check_vehicle_id

__all__ = ["SecAggClient"]

PHASES = ("advertise", "share", "input", "unmask", "done")


class SecAggClient:
    """One vehicle in one secure round.

    Examples
    --------
    >>> from federation.secagg.randomness import SeededBytes
    >>> client = SecAggClient("veh-0001", 4, SecAggConfig(dimension=3, clip_norm=1.0),
    ...                       random_bytes=SeededBytes(0))
    >>> client.advertise().round, client.phase
    (4, 'share')
    >>> client.advertise()
    Traceback (most recent call last):
    ...
    federation.secagg.errors.SecAggError: wrong_phase: expected the share phase, not advertise
    """

    def __init__(self, vehicle_id: str, round_number: int, config: SecAggConfig, *,
                 noise: IntegerNoise | None = None,
                 random_bytes: RandomBytes = secrets.token_bytes) -> None:
        self.vehicle_id = check_vehicle_id(vehicle_id)
        self.round = round_number
        self.config = config
        self.phase = PHASES[0]
        self._noise = noise or SecureIntegerNoise()
        self._random = random_bytes
        self._cipher = KeyPair.generate(random_bytes)
        self._mask = KeyPair.generate(random_bytes)
        self._seed = random_bytes(SECRET_BYTES)
        self._plan: RoundPlan | None = None
        self._neighbours: tuple[Neighbour, ...] = ()
        self._held: dict[int, tuple[bytes, bytes]] = {}  # neighbour index: its two shares
        self._noise_parts: list[np.ndarray] = []  # drawn with the masked input

    @property
    def plan(self) -> RoundPlan:
        """The round's plan, known once the vehicle has its roster."""
        return self._current_plan()

    def advertise(self) -> Advertise:
        """Phase 1: the vehicle's public keys."""
        self._check_phase("advertise")
        self.phase = "share"
        return Advertise(self.vehicle_id, self.round, self._cipher.public, self._mask.public)

    def share_keys(self, roster: Roster) -> ShareKeys:
        """Phase 2: shares of the self-mask seed and mask key, sealed for each neighbour."""
        self._check(roster, "share")
        plan = self._plan_for(roster)
        neighbours = roster.neighbours
        if len(neighbours) != min(plan.degree, roster.advertised - 1) or any(
                n.vehicle_id == self.vehicle_id for n in neighbours):
            raise SecAggError("bad_shape", f"a roster of {roster.advertised} vehicles names "
                              f"{min(plan.degree, roster.advertised - 1)} other neighbours")
        xs = range(1, len(neighbours) + 1)
        seed_shares = split(self._seed, xs, plan.threshold, self._random)
        key_shares = split(self._mask.private, xs, plan.threshold, self._random)
        sealed = tuple(
            seal(self._share_key(n, outgoing=True),
                 seed.to_bytes(SHARE_BYTES, "big") + key.to_bytes(SHARE_BYTES, "big"),
                 self._share_context(n, outgoing=True))
            for n, seed, key in zip(neighbours, seed_shares, key_shares, strict=True))
        self._plan, self._neighbours, self.phase = plan, neighbours, "input"
        return ShareKeys(self.vehicle_id, self.round, sealed)

    def masked_input(self, relay: SharesRelay, vector: np.ndarray) -> MaskedInput:
        """Phase 3: ``vector`` clipped, encoded, noised and masked."""
        self._check(relay, "input")
        plan = self._current_plan()
        if len(relay.sealed) != len(self._neighbours):
            raise SecAggError("bad_shape", f"a relay holds {len(self._neighbours)} entries")
        held = {}
        for index, sealed in enumerate(relay.sealed):
            if sealed is not None:
                n = self._neighbours[index]
                plain = open_sealed(self._share_key(n, outgoing=False), sealed,
                                    self._share_context(n, outgoing=False))
                held[index] = (plain[:SHARE_BYTES], plain[SHARE_BYTES:])
        if len(held) < plan.threshold:
            raise SecAggError("too_few", f"{len(held)} neighbours shared keys; the round "
                              f"needs {plan.threshold}")
        masked = self._masked(plan, np.asarray(vector, dtype=float), sorted(held))
        self._held, self.phase = held, "unmask"
        return MaskedInput(self.vehicle_id, self.round, plan.ring.to_bytes(masked),
                           masks.seed_digest(self._seed))

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Phase 4: for each neighbour that shared keys, the share that unmasks the sum."""
        self._check(request, "unmask")
        plan = self._current_plan()
        survivors = request.survivors
        if len(survivors) != len(self._neighbours) or any(
                alive and index not in self._held for index, alive in enumerate(survivors)):
            raise SecAggError("bad_shape", "survivors must be neighbours that shared keys")
        if request.inputs < plan.min_inputs:
            raise SecAggError("below_threshold", f"a sum of {request.inputs} inputs is below "
                              f"the quorum of {plan.min_inputs}")
        if sum(survivors) < plan.threshold:
            raise SecAggError("too_few", f"{sum(survivors)} neighbours' inputs are in the sum;"
                              f" the round needs {plan.threshold}")
        shares = tuple(
            None if index not in self._held else self._held[index][0 if alive else 1]
            for index, alive in enumerate(survivors))
        excess = self._noise_parts[plan.kept_level(request.inputs) + 1:]
        noise = plan.ring.to_bytes(plan.ring.reduce(np.sum(excess, axis=0))) if excess else None
        self._noise_parts, self.phase = [], "done"
        return UnmaskShares(self.vehicle_id, self.round, shares, noise)

    def _masked(self, plan: RoundPlan, vector: np.ndarray, sharers: list[int]) -> np.ndarray:
        if vector.shape != (self.config.dimension,) or not np.isfinite(vector).all():
            raise ValueError(f"the vector must be {self.config.dimension} finite numbers")
        ring, d = plan.ring, self.config.dimension
        total = ring.encode(clip(vector, self.config.clip_norm), generator(self._random))
        if plan.share_noise_std > 0:
            self._noise_parts = [self._noise.discrete_gaussian(d, std) for std in plan.noise_parts]
            total = ring.add(total, ring.reduce(np.sum(self._noise_parts, axis=0)))
        total = ring.add(total, masks.expand(ring, self._seed, d))
        for index in sharers:
            n = self._neighbours[index]
            seed = agree(self._mask, n.mask_key,
                         context("mask", self.round, *sorted((self.vehicle_id, n.vehicle_id))))
            total = ring.add(total, masks.pairwise(ring, seed, d, self.vehicle_id, n.vehicle_id))
        return total

    def _share_context(self, neighbour: Neighbour, outgoing: bool) -> bytes:
        pair = (self.vehicle_id, neighbour.vehicle_id)
        return context("share", self.round, *(pair if outgoing else pair[::-1]))

    def _share_key(self, neighbour: Neighbour, outgoing: bool) -> bytes:
        return agree(self._cipher, neighbour.cipher_key,
                     self._share_context(neighbour, outgoing))

    def _plan_for(self, roster: Roster) -> RoundPlan:
        try:
            plan = RoundPlan.make(self.config, roster.vehicles)
        except ValueError as exc:
            raise SecAggError("bad_params", str(exc)) from None
        if not plan.min_inputs <= roster.advertised <= roster.vehicles:
            raise SecAggError("below_threshold", f"{roster.advertised} of {roster.vehicles} "
                              f"advertised; the quorum is {plan.min_inputs}")
        return plan

    def _current_plan(self) -> RoundPlan:
        if self._plan is None:  # set in the share phase, before any later one
            raise SecAggError("wrong_phase", "the round's plan comes with the roster")
        return self._plan

    def _check_phase(self, phase: str) -> None:
        if self.phase != phase:
            raise SecAggError("wrong_phase", f"expected the {self.phase} phase, not {phase}")

    def _check(self, message: Roster | SharesRelay | UnmaskRequest, phase: str) -> None:
        if message.round != self.round:
            raise SecAggError("wrong_round", f"round {message.round}, not {self.round}")
        if message.vehicle_id != self.vehicle_id:
            raise SecAggError("not_addressed", f"for {message.vehicle_id}, not this vehicle")
        self._check_phase(phase)
