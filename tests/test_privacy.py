"""Mechanisms, clipping and accounting: the noise is what the documents say it is."""

from __future__ import annotations

import math
import resource

import dp_accounting
import numpy as np
import pytest
from scipy import optimize, stats

from federation.accounting import Spend, epsilon_spent, gaussian_noise_multiplier, rounds_within
from federation.features import FEATURE_NAMES
from federation.privacy import (
    MAX_NOISE_MULTIPLIER,
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    NoiseSource,
    SecureNoise,
    SeededNoise,
    _opendp_gaussian,
    public_centre,
)
from federation.summary import ModelSummary
from federation.whitening import Whitening

CENTRE = public_centre(FEATURE_NAMES)
DRAWS = 400  # summaries per statistical test; each has 54 noised coordinates


def _balle_wang_sigma(epsilon: float, delta: float) -> float:
    """The analytic Gaussian mechanism's sigma for sensitivity 1, from its closed-form delta
    (Balle & Wang 2018, Theorem 8), solved by root finding: independent of the library."""
    def excess(sigma: float) -> float:
        a, b = 1 / (2 * sigma), epsilon * sigma
        return stats.norm.cdf(a - b) - math.exp(epsilon) * stats.norm.cdf(-a - b) - delta
    return float(optimize.brentq(excess, 1e-3, 1e3, xtol=1e-12))


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0, 8.0])
def test_the_gaussian_noise_scale_is_the_analytic_gaussian_mechanisms(epsilon):
    mechanism = GaussianMechanism(epsilon=epsilon, delta=1e-5, clip_norm=0.5)

    expected = _balle_wang_sigma(epsilon, 1e-5) * mechanism.sensitivity

    # The accountant's grid is pessimistic: never less noise, at most 0.5 % more.
    assert expected <= mechanism.scale <= 1.005 * expected
    assert mechanism.scale < math.sqrt(2 * math.log(1.25 / 1e-5)) / epsilon * 1.0  # classical


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 4.0])
def test_the_laplace_noise_scale_is_sensitivity_over_epsilon_and_pure(epsilon):
    mechanism = LaplaceMechanism(epsilon=epsilon, delta=1e-5, clip_norm=0.25)

    pld = dp_accounting.pld.privacy_loss_distribution.from_laplace_mechanism(
        mechanism.scale / mechanism.sensitivity)

    assert mechanism.scale == pytest.approx(2 * 0.25 / epsilon, rel=1e-12)
    assert pld.get_delta_for_epsilon(epsilon * 1.001) < 1e-15  # pure epsilon-DP ...
    assert pld.get_delta_for_epsilon(epsilon * 0.99) > 0.0  # ... and no less


def _noise_draws(mechanism: Mechanism, noise: NoiseSource) -> np.ndarray:
    """The noise the mechanism adds, read off summaries equal to their centre, in the
    centre's whitened coordinates (where a summary equal to the centre packs to zero)."""
    pack = Whitening(CENTRE).pack
    return np.array([pack(mechanism.privatize(CENTRE, CENTRE, noise))
                     for _ in range(DRAWS)]).ravel()


def _reference(mechanism: Mechanism) -> stats.rv_continuous:
    if isinstance(mechanism, GaussianMechanism):
        return stats.norm(scale=mechanism.scale)
    return stats.laplace(scale=mechanism.scale)


MECHANISMS = [GaussianMechanism(1.0, 1e-5, 0.5), LaplaceMechanism(1.0, 1e-5, 0.5)]


@pytest.mark.parametrize("mechanism", MECHANISMS, ids=["gaussian", "laplace"])
def test_seeded_noise_follows_the_calibrated_distribution(mechanism):
    draws = _noise_draws(mechanism, SeededNoise(20261124))

    # Fixed seed: deterministic. Tolerances: the KS test at the 1 % level, the standard
    # deviation within 3 % (over 21,600 draws its standard error is below 0.8 %).
    assert stats.kstest(draws, _reference(mechanism).cdf).pvalue > 0.01
    assert draws.std() == pytest.approx(mechanism.noise_std, rel=0.03)
    assert abs(draws.mean()) < 4 * mechanism.noise_std / math.sqrt(draws.size)


@pytest.mark.parametrize("mechanism", MECHANISMS, ids=["gaussian", "laplace"])
def test_secure_noise_follows_the_calibrated_distribution(mechanism):
    draws = _noise_draws(mechanism, SecureNoise())

    # Secure noise cannot be seeded: the thresholds are set so that a correct sampler fails
    # with probability below one in a million (KS p-value, and 6 standard errors on the std).
    assert stats.kstest(draws, _reference(mechanism).cdf).pvalue > 1e-6
    assert draws.std() == pytest.approx(mechanism.noise_std, rel=0.05)


@pytest.mark.parametrize("multiplier", [0.5, 6.5, MAX_NOISE_MULTIPLIER])
@pytest.mark.parametrize("sensitivity", [1e-3, 8.0])
def test_secure_gaussian_noise_on_its_grid_is_no_less_private_than_exact_noise(
        multiplier, sensitivity):
    import opendp.prelude as dp

    scale = multiplier * sensitivity
    on_grid = _opendp_gaussian(scale, 54)  # first: it enables OpenDP's "contrib" features

    exact = dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                               dp.l2_distance(T=float), scale=scale)

    # OpenDP's own privacy maps (zero-concentrated rho at the sensitivity): the grid's rounding
    # is counted, and the raised standard deviation pays for it.
    assert on_grid.map(sensitivity) <= exact.map(sensitivity)


def test_a_gaussian_mechanism_whose_noise_the_grid_cannot_cover_is_refused():
    with pytest.raises(ValueError, match="noise multiplier above"):
        GaussianMechanism(epsilon=1e-6, delta=1e-7, clip_norm=0.5)


def test_secure_noise_differs_between_draws():
    noise = SecureNoise()

    first, second = (noise.gaussian(np.zeros(54), 1.0) for _ in range(2))

    assert not np.array_equal(first, second)


def _adversarial_summaries() -> list[ModelSummary]:
    d = len(FEATURE_NAMES)
    rng = np.random.default_rng(3)
    huge = ModelSummary(FEATURE_NAMES, 1e7, np.full(d, 1e6), np.full((d, d), 1e6))
    negative = ModelSummary(FEATURE_NAMES, 1.0, np.full(d, -1e6), -np.eye(d) * 1e6)
    spike = ModelSummary(FEATURE_NAMES, 5.0, np.r_[1e9, np.zeros(d - 1)], np.zeros((d, d)))
    normal = [ModelSummary.from_array(FEATURE_NAMES, rng.random((50, d))) for _ in range(20)]
    return [huge, negative, spike, *normal]


@pytest.mark.parametrize(("mechanism", "order"), [(MECHANISMS[0], 2), (MECHANISMS[1], 1)],
                         ids=["gaussian-l2", "laplace-l1"])
def test_every_offset_is_clipped_to_its_bound_in_the_mechanisms_norm(mechanism, order):
    offsets = [mechanism.clip(s, CENTRE) for s in _adversarial_summaries()]

    norms = [np.linalg.norm(o, ord=order) for o in offsets]

    assert max(norms) <= mechanism.clip_norm * (1 + 1e-12)
    assert min(norms) > 0  # clipping scales, it does not zero


@pytest.mark.parametrize("mechanism", MECHANISMS, ids=["gaussian", "laplace"])
def test_clipping_a_round_at_once_equals_clipping_each_release(mechanism):
    summaries = _adversarial_summaries()

    at_once = mechanism.clip_all(summaries, CENTRE)

    np.testing.assert_allclose(at_once, [mechanism.clip(s, CENTRE) for s in summaries],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5, 20])
def test_the_total_after_k_rounds_is_the_accountants_composition(k):
    mechanism = GaussianMechanism(epsilon=1.0, delta=1e-5, clip_norm=0.5)
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_accounting.GaussianDpEvent(mechanism.scale / mechanism.sensitivity), k)

    total = epsilon_spent([mechanism.spend] * k, 1e-5)

    assert total == pytest.approx(accountant.get_epsilon(1e-5), rel=2e-3)
    assert total <= k * mechanism.epsilon + 1e-9


def _gaussian_epsilon(sigma: float, delta: float) -> float:
    """The exact epsilon at ``delta`` of one Gaussian release of noise multiplier ``sigma``
    (Balle & Wang 2018, Theorem 8), solved in log space so that huge epsilons do not overflow."""
    def excess(epsilon: float) -> float:
        a, b = 1 / (2 * sigma), epsilon * sigma
        tail = math.exp(epsilon + stats.norm.logcdf(-a - b))
        return stats.norm.cdf(a - b) - tail - delta
    return float(optimize.brentq(excess, 0.0, 1e9, xtol=1e-9, rtol=1e-12))


@pytest.mark.parametrize("epsilon", [1e3, 1e5])
def test_huge_epsilons_are_accounted_pessimistically_in_bounded_memory(epsilon):
    # A fixed 1e-3 grid of privacy loss needs gigabytes past an epsilon of about 100.
    laplace = Spend("laplace", 1 / epsilon)
    gaussian = Spend("gaussian", gaussian_noise_multiplier(epsilon, 1e-5))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    laplace_total = epsilon_spent([laplace] * 14, 1e-5)
    gaussian_total = epsilon_spent([gaussian] * 14, 1e-5)

    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500
    # 14 Laplace releases: all 14 losses are +epsilon with probability 2^-14 > delta.
    assert 14 * epsilon <= laplace_total <= 14 * epsilon * 1.001
    exact = _gaussian_epsilon(gaussian.parameter / math.sqrt(14), 1e-5)
    assert exact <= gaussian_total <= exact * 1.001


def test_mixed_releases_compose_below_their_sum():
    gaussian = Spend("gaussian", gaussian_noise_multiplier(1.0, 1e-5))
    coin = Spend("randomized_response", 0.5)

    total = epsilon_spent([gaussian, coin, gaussian], 1e-5)

    assert epsilon_spent([gaussian] * 2, 1e-5) < total < 2.0 + math.log(3)


def test_rounds_within_a_budget_is_the_last_count_that_fits():
    spend = Spend("gaussian", gaussian_noise_multiplier(1.0, 1e-5))

    rounds = rounds_within(spend, 3.0, 1e-5)

    assert epsilon_spent([spend] * rounds, 1e-5) <= 3.0 < epsilon_spent([spend] * (rounds + 1),
                                                                          1e-5)


@pytest.mark.parametrize("bad", [{"epsilon": 0.0}, {"epsilon": math.inf}, {"delta": 1.0},
                                 {"clip_norm": -1.0}])
def test_nonsense_parameters_are_refused(bad):
    settings = {"epsilon": 1.0, "delta": 1e-5, "clip_norm": 0.5} | bad

    with pytest.raises(ValueError):
        GaussianMechanism(**settings)


def test_whitenings_about_equal_centres_share_one_read_only_decomposition():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(9, 9))
    cov = a @ a.T / 9 + np.eye(9) * 0.01
    centre = ModelSummary(FEATURE_NAMES, 100.0, np.full(9, 0.5), cov)
    same = ModelSummary(FEATURE_NAMES, 100.0, np.full(9, 0.5), cov.copy())  # another object
    other = ModelSummary(FEATURE_NAMES, 100.0, np.full(9, 0.5), cov * 2)
    mine = ModelSummary(FEATURE_NAMES, 10.0, np.full(9, 0.6), cov * 1.5)

    first, second, third = Whitening(centre), Whitening(same), Whitening(other)

    assert first._inverse is second._inverse and first._inverse is not third._inverse
    assert not first._inverse.flags.writeable and not first._root.flags.writeable
    assert np.array_equal(first.pack(mine), second.pack(mine))
    assert not np.allclose(first.pack(mine), third.pack(mine))
    back = second.unpack(first.pack(mine), mine.n)
    assert np.allclose(back.mean, mine.mean) and np.allclose(back.cov, mine.cov)
