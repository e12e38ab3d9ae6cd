"""Secure aggregation: the gateway learns the sum of a round's vectors, and none of them.

SecAgg+ (Bell et al., CCS 2020) on the protocol of Bonawitz et al. (CCS 2017), with the
distributed discrete Gaussian of Kairouz, Liu & Steinke (ICML 2021) for differential privacy:
each vehicle encodes its clipped vector in fixed point over the integers modulo
``2**ring_bits``, adds its share of integer noise, a self mask and pairwise masks with a few
neighbours that cancel in the sum, and hands Shamir shares of its mask secrets to those
neighbours, so that the sum can be unmasked when vehicles drop out, and only the sum. The
contract, for vehicles and gateway alike, with no I/O:

- :mod:`~federation.secagg.params` — the fleet's config and each round's plan (graph degree,
  Shamir threshold, quorum, fixed point, noise), which every party derives alike;
- :mod:`~federation.secagg.messages` — the four phases' messages and their codec;
- :mod:`~federation.secagg.client`, :mod:`~federation.secagg.server` — the two state machines;
- :mod:`~federation.secagg.shamir`, :mod:`~federation.secagg.keys`,
  :mod:`~federation.secagg.ring`, :mod:`~federation.secagg.masks`,
  :mod:`~federation.secagg.graph`, :mod:`~federation.secagg.noise`,
  :mod:`~federation.secagg.randomness` — the pieces;
- :mod:`~federation.secagg.simulation` — whole rounds in one process, for tests and
  benchmarks.

Every message that does not fit raises :class:`SecAggError` and nothing else. The threat
model, the guarantee under dropout and what survives masking: ``docs/PRIVACY.md``.
"""

from federation.secagg.client import SecAggClient
from federation.secagg.errors import SecAggError
from federation.secagg.params import RoundPlan, SecAggConfig
from federation.secagg.server import Aggregate, SecAggServer

__all__ = ["Aggregate", "RoundPlan", "SecAggClient", "SecAggConfig", "SecAggError",
           "SecAggServer"]
