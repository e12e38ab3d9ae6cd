"""The pieces of secure aggregation: Shamir sharing, the ring, the graph, keys, the plan."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats

from federation.secagg import RoundPlan, SecAggConfig, SecAggError
from federation.secagg.graph import graph_seed, neighbourhoods
from federation.secagg.keys import KeyPair, agree, context
from federation.secagg.params import CORRECTNESS_BITS, SECURITY_BITS
from federation.secagg.randomness import SeededBytes
from federation.secagg.ring import RING_BITS, Ring
from federation.secagg.shamir import PRIME, combine, split


def _probably_prime(n: int, rounds: int = 40) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    rng = random.Random(0)
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_the_field_is_the_smallest_prime_above_two_to_the_256():
    assert _probably_prime(PRIME)
    assert not any(_probably_prime(n) for n in range(2**256 + 1, PRIME, 2))


def test_any_threshold_of_shares_rebuilds_the_secret():
    secret = bytes(range(100, 132))
    shares = split(secret, range(1, 8), 4, SeededBytes(1))

    for chosen in itertools.combinations(range(7), 4):
        assert combine([(i + 1, shares[i]) for i in chosen]) == secret


def test_shares_below_the_threshold_are_uniform_whatever_the_secret():
    # Arrange: many sharings of two very different secrets, threshold 3.
    draws = SeededBytes(2)
    low = [split(bytes(32), [1, 2, 3], 3, draws)[:2] for _ in range(2000)]
    high = [split(bytes([255]) * 32, [1, 2, 3], 3, draws)[:2] for _ in range(2000)]

    # Act: the top 4 bits of each pair of shares (the field is just above 2**256).
    def top(shares: list[list[int]]) -> np.ndarray:
        return np.array([s >> 253 for pair in shares for s in pair])

    # Assert: the same distribution for both secrets.
    table = np.array([np.bincount(top(low), minlength=8), np.bincount(top(high), minlength=8)])
    assert stats.chi2_contingency(table[:, table.sum(axis=0) > 0]).pvalue > 1e-3


@pytest.mark.parametrize("bits", RING_BITS)
def test_ring_elements_survive_their_wire_form_and_sums_wrap_back(bits):
    ring = Ring(bits, bits // 2)
    values = ring.encode(np.array([-3.25, 0.0, 2.5, -0.5]), np.random.default_rng(0))

    back = ring.from_bytes(ring.to_bytes(values), 4)

    assert back.tolist() == values.tolist()
    assert ring.decode(ring.add(values, values)).tolist() == [-6.5, 0.0, 5.0, -1.0]


def test_stochastic_rounding_is_unbiased():
    ring = Ring(32, 4)  # steps of 1/16
    rng = np.random.default_rng(0)

    encoded = ring.decode(ring.encode(np.full(100_000, 0.3 / 16), rng))

    assert set(np.unique(encoded)) == {0.0, 1 / 16}
    assert encoded.mean() == pytest.approx(0.3 / 16, rel=0.02)


def test_every_party_derives_the_same_regular_symmetric_graph():
    ids = [f"veh-{i:03d}" for i in range(200)]
    shuffled = random.Random(3).sample(ids, len(ids))

    graph = neighbourhoods(ids, 10, graph_seed(8, ids))

    assert graph == neighbourhoods(shuffled, 10, graph_seed(8, shuffled))
    assert graph != neighbourhoods(ids, 10, graph_seed(9, ids))
    assert all(len(ns) == 10 and u not in ns for u, ns in graph.items())
    assert all(u in graph[v] for u, ns in graph.items() for v in ns)


def test_a_key_agreement_with_a_low_order_point_is_refused():
    pair = KeyPair.generate(SeededBytes(4))

    with pytest.raises(SecAggError) as refused:
        agree(pair, bytes(32), context("mask", 1, "veh-a", "veh-b"))

    assert refused.value.reason == "forged"


def _hypergeometric_tail(population: int, marked: int, draws: int, at_least: int) -> float:
    return float(stats.hypergeom.sf(at_least - 1, population, marked, draws))


@pytest.mark.parametrize("vehicles", [100, 1000, 10_000])
def test_a_plan_meets_its_correctness_and_security_targets(vehicles):
    plan = RoundPlan.make(SecAggConfig(dimension=54, clip_norm=4.0), vehicles)
    k, t = plan.degree, plan.threshold
    dropped, colluders = vehicles - plan.min_inputs, plan.colluders

    lost = _hypergeometric_tail(vehicles - 1, dropped, k, k - t + 1)
    leaked = _hypergeometric_tail(vehicles - 1, colluders, k, t)
    split_apart = vehicles**2 * ((dropped + colluders) / vehicles) ** k

    assert vehicles * lost <= 2.0**-CORRECTNESS_BITS
    assert vehicles * leaked <= 2.0**-SECURITY_BITS
    assert split_apart <= 2.0**-SECURITY_BITS
    assert k < 10 * math.log2(vehicles)
    bound = vehicles * (4.0 * 2**plan.fraction_bits + 1) + 12 * plan.share_noise_std * math.sqrt(
        vehicles)
    assert bound < 2**31


def test_the_degree_grows_with_the_log_of_the_round():
    degrees = [RoundPlan.make(SecAggConfig(dimension=54, clip_norm=4.0), n).degree
               for n in (1000, 10_000, 100_000)]

    assert degrees == sorted(degrees)
    assert degrees[-1] < 1.5 * degrees[0]


def test_a_round_too_small_or_too_wide_for_its_promises_is_refused():
    too_many_gone = SecAggConfig(dimension=54, clip_norm=4.0, tolerated_dropout=0.6,
                                 tolerated_colluders=0.3)
    narrow = SecAggConfig(dimension=54, clip_norm=4.0, ring_bits=16)

    with pytest.raises(ValueError, match="too few"):
        RoundPlan.make(too_many_gone, 10)
    with pytest.raises(ValueError, match="wider ring"):
        RoundPlan.make(narrow, 10_000)
