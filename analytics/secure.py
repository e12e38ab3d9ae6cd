"""Secure rounds in the replay (``--privacy secagg``): each round's releases through the real
protocol of :mod:`federation.secagg`, merged as the live gateway merges a secure round.

A replayed vehicle of a secure regime sends its release clipped, as a central release, to the
round cycle (:mod:`analytics.rounds`), and its ledger records what a secure release costs
(:class:`SecureRelease`: the zCDP ``rho`` of the fleet's round plan). At the round's close,
:class:`SecureRounds` packs the round's releases in its base model's whitened coordinates and
runs one whole secure round of them (:func:`federation.secagg.simulation.simulate`): the real
clients (keys, Shamir shares, the fixed-point ring, each one's share of discrete Gaussian noise,
masks) and the real server, every message through the codec. The unmasked sum's average
becomes a piece of the round's merge (:func:`gateway.private.unmasked_piece`), its vehicles
held by the round, as :mod:`gateway.secure` does live; it is not combined by the gateway's
strategy (masked vectors cannot be), and no release is checked one by one.

Where the replay differs from the wire: a round with fewer releases than a secure round needs
(:data:`MIN_VEHICLES`) is refused, as the gateway refuses it when advertising closes, and its
releases wait for the next round (a live vehicle, not yet charged, would advertise again then).
With ``dropout``, that share of each round's vehicles (drawn with the seed) drops out before
the share, input or unmask phase (drawn alike); the releases of those that dropped before
their masked input are lost, although their vehicles were charged (a live vehicle pays as its
masked input leaves), and a round the protocol refuses (too few left) merges nothing: both are
counted in the round cycle's ``rejected`` (``secagg_dropped``, ``secagg_refused``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from federation.accounting import Spend
from federation.features import Schema
from federation.messages import GlobalModel, Update
from federation.privacy import GaussianMechanism
from federation.secagg import SecAggConfig, SecAggError
from federation.secagg.simulation import PHASES, simulate
from federation.whitening import Whitening
from gateway.rounds import Round, release_centre

__all__ = ["MIN_VEHICLES", "SecureRelease", "SecureRounds", "SecureSum"]

# The fewest vehicles a secure round takes, as the gateway's (gateway/secure_round.py).
MIN_VEHICLES = 4


@dataclass(frozen=True)
class SecureRelease(GaussianMechanism):
    """A vehicle's secure release in the replay: clipped as a central release (the round adds
    the noise), and charged ``rho`` in zCDP, as a secure vehicle's ledger records it.

    Examples
    --------
    >>> release = SecureRelease(0.551, 1e-5, 4.0, rho=0.0102)
    >>> release.spend, release.about(public=True).clip_norm
    (Spend(kind='zcdp', parameter=0.0102), 6.0)
    """

    rho: float = 0.0

    @property
    def spend(self) -> Spend:
        return Spend("zcdp", self.rho)


@dataclass(frozen=True)
class SecureSum:
    """One unmasked sum: its inputs, its noise (each coordinate, whitened units), and the CPU
    time the protocol took (all its vehicles' state machines and codec, and the gateway's)."""

    inputs: int
    noise_std: float
    vehicle_cpu_seconds: float
    gateway_cpu_seconds: float


class SecureRounds:
    """Each round's central releases through a whole secure round, at its close.

    ``epsilon`` and ``delta`` are one release's, ``clip_norm`` the gateway's (in every
    round, about the public centre too, as :mod:`gateway.secure` clips); ``seed`` fixes
    every secret and noise draw of every round; ``dropout`` is the share of each round's
    vehicles that drop out. ``sums`` holds what each unmasked sum was (:class:`SecureSum`).

    Examples
    --------
    >>> from federation.features import VEHICLE_SCHEMA
    >>> from federation.messages import RoundOpen
    >>> from federation.privacy import public_centre
    >>> from federation.summary import ModelSummary
    >>> names = VEHICLE_SCHEMA.names
    >>> centre = public_centre(names)
    >>> current = Round(RoundOpen(1, 0.0, 30.0, 1, 0))
    >>> for k in range(5):
    ...     summary = ModelSummary(names, 100.0, centre.mean + 0.01 * k, centre.cov)
    ...     current.accepted[f"veh-{k}"] = Update(f"veh-{k}", 1, 0, summary, 0.5, 1e-5, 0.5,
    ...                                           0.0, privacy="central")
    >>> secure = SecureRounds(VEHICLE_SCHEMA, epsilon=0.5, delta=1e-5, clip_norm=4.0, seed=0)
    >>> secure.close(current, None, Counter())
    >>> sorted(current.held), current.accepted, [s.inputs for s in secure.sums]
    (['veh-0', 'veh-1', 'veh-2', 'veh-3', 'veh-4'], {}, [5])
    >>> current.unmasked[0].summary.n < 500  # weighed down by the sum's noise
    True
    """

    def __init__(self, schema: Schema, *, epsilon: float, delta: float, clip_norm: float,
                 seed: int, dropout: float = 0.0) -> None:
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        SecAggConfig(1, clip_norm, epsilon, delta)  # a bad setting fails here, not mid-run
        self.schema = schema
        self.epsilon, self.delta, self.clip_norm = epsilon, delta, clip_norm
        self.seed, self.dropout = seed, dropout
        self.sums: list[SecureSum] = []
        self._waiting: dict[str, Update] = {}

    def close(self, current: Round, previous: GlobalModel | None,
              rejected: Counter[str]) -> None:
        """Take ``current``'s central releases (and those waiting) out of its accepted
        updates and, if there are enough, into its merge as one unmasked piece about
        ``previous``; count what is lost in ``rejected``."""
        releases = dict(self._waiting)
        for vehicle, update in list(current.accepted.items()):
            if update.privacy == "central":
                del current.accepted[vehicle]
                waited = releases.get(vehicle)  # a newer release of a vehicle still waiting
                releases[vehicle] = update if waited is None else replace(
                    update, replaces_readings=waited.replaces_readings)
        if len(releases) < MIN_VEHICLES:
            self._waiting = releases
            return
        self._waiting = {}
        centre = release_centre(previous, self.schema)[0]
        ids = sorted(releases)
        vectors = Whitening(centre).pack_all([releases[v].summary for v in ids])
        config = SecAggConfig(vectors.shape[1], self.clip_norm, self.epsilon, self.delta)
        seed = int(np.random.SeedSequence([self.seed, current.number]).generate_state(1)[0])
        try:
            aggregate, traffic = simulate(config, dict(zip(ids, vectors, strict=True)),
                                    round_number=current.number, seed=seed,
                                    dropouts=self._dropouts(ids, seed))
        except SecAggError:
            rejected["secagg_refused"] += len(ids)
            return
        if aggregate.inputs < len(ids):
            rejected["secagg_dropped"] += len(ids) - aggregate.inputs
        kept = [releases[v] for v in aggregate.vehicle_ids]
        current.take_unmasked(aggregate, sum(u.summary.n for u in kept),
                              sum(u.replaces_readings for u in kept), centre)
        self.sums.append(SecureSum(aggregate.inputs, aggregate.noise_std,
                                   sum(traffic.vehicle_cpu_seconds.values()),
                                   traffic.server_cpu_seconds))

    def _dropouts(self, ids: list[str], seed: int) -> dict[str, str]:
        """Which of ``ids`` drop out, and before which phase (after advertising: a vehicle
        that never advertises is in no round)."""
        if not self.dropout:
            return {}
        rng = np.random.default_rng([seed, len(ids)])
        gone = rng.choice(len(ids), size=round(self.dropout * len(ids)), replace=False)
        phases = rng.choice(PHASES[1:], size=len(gone))
        return {ids[int(k)]: str(phase) for k, phase in zip(gone, phases, strict=True)}
