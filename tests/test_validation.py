"""Validation refuses what no honest vehicle can send: too many readings, a replaced total no
vehicle could have learned, local noise other than declared, values outside the scaled range,
covariances that are not positive semi-definite."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from federation import messages, topics
from federation.features import FEATURE_NAMES
from federation.messages import GlobalModel, Update
from federation.privacy import (
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    SeededNoise,
    public_centre,
)
from federation.summary import ModelSummary
from federation.transport import MqttTarget
from gateway.service import Gateway
from gateway.store import SQLiteStore
from gateway.validation import TOLERANCE, Plausibility

D = len(FEATURE_NAMES)
HONEST = ModelSummary(FEATURE_NAMES, 300.0, np.full(D, 0.4), np.eye(D) * 0.01)


def _update(summary: ModelSummary = HONEST, privacy: str = "off", replaces: float = 0.0,
            noise_std: float = 0.0) -> Update:
    return Update("veh-1", 1, 0, summary, 0.0, 0.0, 0.0, 0.0, noise_std, privacy=privacy,
                  replaces_readings=replaces)


def _bounds(heard_at_s: float = 0.0, started_s: float | None = None) -> Plausibility:
    bounds = Plausibility(readings_per_s=1.0, round_s=30.0, started_s=started_s)
    bounds.heard("veh-1", heard_at_s)
    return bounds


def _gateway(store: SQLiteStore, clock: list[float] | None = None,
             readings_per_s: float = 1.0) -> Gateway:
    """A gateway without a network on ``store``, its clock ``clock[0]``, with a round open."""
    now = clock or [1000.0]
    gateway = Gateway(MqttTarget("127.0.0.1", 1), store, readings_per_s=readings_per_s,
                      round_seconds=30.0, clock=lambda: now[0])
    gateway._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    gateway._open_round()
    assert gateway.round is not None
    return gateway


def _released(mechanism: Mechanism, seed: int = 0, declared: float = 1.0,
              base: GlobalModel | None = None) -> Update:
    """An honest vehicle's locally noised release about ``base`` (default: the public centre),
    declaring ``declared`` times the noise it carries."""
    mechanism = mechanism.about(public=base is None)
    data = np.clip(np.random.default_rng(seed).normal(0.5, 0.1, (300, D)), 0.0, 1.0)
    centre = base.summary if base else public_centre(FEATURE_NAMES)
    summary = mechanism.privatize(ModelSummary.from_array(FEATURE_NAMES, data), centre,
                                  SeededNoise(seed))
    return Update("veh-1", 1, base.version if base else 0, summary, mechanism.epsilon,
                  mechanism.delta, 1.0, 0.0, declared * mechanism.noise_std, privacy="local",
                  mechanism=mechanism.name, clip_norm=mechanism.clip_norm)


def test_readings_are_bounded_by_the_rate_since_the_vehicle_was_first_heard_of():
    bounds = _bounds()

    # 300 readings at 1 a second need 135 s with a slack of 2 and a round of 30 s.
    assert bounds.reason(_update(), now_s=130.0) == "too_many_readings"
    assert bounds.reason(_update(), now_s=135.0) is None


def test_a_cumulative_release_counts_only_the_readings_added_since_the_last():
    bounds = _bounds()
    bounds.accepted(_update(), now_s=300.0)
    grown = _update(HONEST.weighted(900.0), privacy="central", replaces=300.0)

    assert bounds.reason(grown, now_s=400.0) == "too_many_readings"  # 600 new in 100 s
    assert bounds.reason(grown, now_s=600.0) is None  # 600 new in 300 s


def test_a_release_may_not_replace_more_than_its_vehicle_could_have_released_before():
    bounds = _bounds()
    bounds.accepted(_update(), now_s=300.0)

    # 300 accepted, and at most 230 more learned in the 100 s since.
    wiping = _update(HONEST.weighted(900.0), privacy="central", replaces=900.0)

    assert bounds.reason(wiping, now_s=400.0) == "too_many_readings"


def test_a_release_after_one_the_gateway_never_accepted_still_passes():
    bounds = _bounds()
    bounds.accepted(_update(), now_s=300.0)
    # Its release of 900 readings at 900 s was lost; this one replaces it.
    after_a_lost_one = _update(HONEST.weighted(2700.0), privacy="central", replaces=900.0)

    assert bounds.reason(after_a_lost_one, now_s=2700.0) is None


def test_an_exact_update_replaces_nothing():
    replacing = _update(HONEST.weighted(30.0), replaces=20.0)

    assert _bounds().reason(replacing, now_s=1e6) == "too_many_readings"


@pytest.mark.parametrize("mean", [-0.1, 1.2])
def test_an_exact_mean_outside_the_scaled_range_is_infeasible(mean: float):
    summary = replace(HONEST, mean=np.full(D, mean))

    assert _bounds().reason(_update(summary), now_s=1e6) == "infeasible"


def test_an_exact_variance_above_a_quarter_is_infeasible_a_clipped_one_may_reach_a_half():
    wide = replace(HONEST, cov=np.eye(D) * 0.4)

    assert _bounds().reason(_update(wide), now_s=1e6) == "infeasible"
    assert _bounds().reason(_update(wide, privacy="central"), now_s=1e6) is None


def test_a_covariance_with_a_negative_direction_is_refused_unless_noised_locally():
    cov = np.eye(D) * 0.01
    cov[0, 1] = cov[1, 0] = 0.02  # eigenvalues 0.03 and -0.01
    bent = replace(HONEST, cov=cov)

    assert _bounds().reason(_update(bent), now_s=1e6) == "not_psd"
    assert _bounds().reason(_update(bent, privacy="local", noise_std=0.5), now_s=1e6) is None


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(("beyond", "verdict"), [(1e-4, "not_psd"), (1e-7, "not_psd"),
                                                 (-1e-7, None), (-1e-4, None)])
def test_the_psd_check_holds_its_tolerance_to_both_sides(seed: int, beyond: float,
                                                         verdict: str | None):
    # A covariance whose least eigenvalue is the tolerance, less or more by a fraction of it,
    # turned by a random rotation so that no entry shows it.
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((D, D)))
    least = -TOLERANCE * (1 + beyond)
    cov = rotation @ np.diag([least, *np.linspace(0.01, 0.05, D - 1)]) @ rotation.T
    cov = (cov + cov.T) / 2
    bent = replace(HONEST, cov=cov)

    assert _bounds().reason(_update(bent), now_s=1e6) == verdict
    assert (np.linalg.eigvalsh(cov).min() >= -TOLERANCE) == (verdict is None)


def test_an_honest_clipped_release_about_an_extreme_model_passes():
    extreme = ModelSummary(FEATURE_NAMES, 10.0, np.where(np.arange(D) % 2, 1.0, 0.0),
                           np.eye(D) * 0.25)
    clipped = GaussianMechanism(1.0, 1e-5, 4.0).clipped(HONEST, extreme)

    assert _bounds().reason(_update(clipped, privacy="central"), now_s=1e6) is None


def test_the_gateway_counts_and_stores_each_refusal_by_reason():
    store = SQLiteStore(":memory:")
    gateway = _gateway(store)
    assert gateway.round is not None
    huge = replace(_update(), round=gateway.round.number, summary=HONEST.weighted(1e6))

    gateway.handle(topics.update_topic("veh-1"), messages.encode(huge))
    gateway._close_round()

    assert gateway.rejected["too_many_readings"] == 1
    assert store.rejection_counts() == {"too_many_readings": 1}
    assert store.rounds(1)[0].rejected == 1


def test_a_restarted_gateway_counts_a_vehicles_readings_from_its_last_accepted_round():
    store = SQLiteStore(":memory:")
    clock = [1000.0]
    first = _gateway(store, clock)
    first.handle(topics.update_topic("veh-1"),
                 messages.encode(replace(_update(HONEST.weighted(10.0)), round=1)))
    clock[0] += 30.0
    first._close_round()
    clock[0] += 600.0

    again = Gateway(MqttTarget("127.0.0.1", 1), store, readings_per_s=1.0, round_seconds=30.0,
                    clock=lambda: clock[0])

    # 900 readings in the 630 s since round 1 opened: within 2 x 630 + 30.
    assert again.plausibility.reason(_update(HONEST.weighted(900.0)), clock[0]) is None
    assert public_centre(FEATURE_NAMES).n == 0.0


def test_a_spray_of_made_up_vehicle_ids_is_remembered_only_up_to_a_bound(monkeypatch):
    monkeypatch.setattr("gateway.validation.MAX_VEHICLES", 3)
    bounds = Plausibility(readings_per_s=1.0, round_s=30.0)

    for k in range(10):
        bounds.heard(f"veh-{k}", now_s=0.0)

    assert len(bounds.first_heard_s) == 3
    # One past the bound counts as first heard of now: 300 readings need 135 s from now.
    assert bounds.reason(replace(_update(), vehicle_id="veh-9"), now_s=100.0) == (
        "too_many_readings")


def test_an_honest_local_release_with_much_noise_passes():
    mechanism = GaussianMechanism(1.0, 1e-5, 0.5).about(public=True)
    rng = np.random.default_rng(0)
    for k in range(50):
        data = np.clip(rng.normal(0.5, 0.1, (300, D)), 0.0, 1.0)
        summary = mechanism.privatize(ModelSummary.from_array(FEATURE_NAMES, data),
                                      public_centre(FEATURE_NAMES), SeededNoise(k))

        update = _update(summary, privacy="local", noise_std=mechanism.noise_std)
        assert _bounds().reason(update, now_s=1e6) is None


def test_a_first_release_may_not_replace_more_than_a_vehicle_learned_since_the_first_round():
    bounds = _bounds(heard_at_s=1000.0, started_s=0.0)  # first heard of long after it began

    # It adds 10 readings, and says it includes 1,000,000 of a release the gateway never saw.
    wiping = _update(HONEST.weighted(1_000_010.0), privacy="central", replaces=1_000_000.0)
    # 1,500 in the 1,000 s since the first round opened: within 2 x 1,000 + 30.
    honest = _update(HONEST.weighted(1_510.0), privacy="central", replaces=1_500.0)

    assert bounds.reason(wiping, now_s=1000.0) == "too_many_replaced"
    assert bounds.reason(honest, now_s=1000.0) is None


def test_a_restarted_gateway_bounds_replaced_totals_from_its_first_stored_round():
    store = SQLiteStore(":memory:")
    clock = [1000.0]
    _gateway(store, clock)
    clock[0] += 5000.0

    again = Gateway(MqttTarget("127.0.0.1", 1), store, readings_per_s=1.0, round_seconds=30.0,
                    clock=lambda: clock[0])

    assert again.plausibility.started_s == 1000.0


@pytest.mark.parametrize("mechanism", [GaussianMechanism(1.0, 1e-5, 0.5),
                                       LaplaceMechanism(1.0, 1e-5, 0.5)],
                         ids=["gaussian", "laplace"])
def test_a_local_release_carries_the_noise_it_declares_no_more_and_no_less(
        mechanism: Mechanism):
    honest = [_released(mechanism, seed) for seed in range(20)]
    overstated = [_released(mechanism, seed, declared=4.0) for seed in range(20)]
    understated = [_released(mechanism, seed, declared=0.25) for seed in range(20)]

    assert [_bounds().reason(u, now_s=1e6) for u in honest] == [None] * 20
    assert {_bounds().reason(u, now_s=1e6) for u in overstated} == {"noise_mismatch"}
    assert {_bounds().reason(u, now_s=1e6) for u in understated} == {"noise_mismatch"}


def test_a_poisoned_release_cannot_hide_behind_a_huge_declared_noise_and_clip_norm():
    # One mean at 1.5, out of range but within the value checks' margin of 8 x 10 / 2, and
    # an offset of 12.5 whitened units: noise of 10 a coordinate would be 36 to 119 long.
    poisoned = replace(HONEST, mean=np.where(np.arange(D) == 0, 1.5, 0.4))
    hiding = replace(_update(poisoned, privacy="local", noise_std=10.0), clip_norm=1e6)

    assert _bounds().reason(hiding, now_s=1e6) == "noise_mismatch"
    assert _bounds().reason(replace(hiding, privacy="off"), now_s=1e6) == "infeasible"


def test_a_local_release_is_checked_about_the_model_it_names():
    model = GlobalModel(1, 1, 10, HONEST, 0.0)
    bounds = _bounds()
    bounds.published(model)
    about_it = _released(GaussianMechanism(1.0, 1e-5, 0.5), base=model)

    assert bounds.reason(about_it, now_s=1e6) is None
    assert bounds.reason(replace(about_it, base_version=7), now_s=1e6) == "noise_mismatch"


def test_a_release_about_the_model_last_sent_is_checked_however_many_merged_since():
    sent = GlobalModel(1, 1, 10, HONEST, 0.0)
    bounds = _bounds()
    bounds.published(sent, sent=True)
    for version in (2, 3, 4):  # merged, but too close to the sent model to be sent
        bounds.published(replace(sent, version=version))
    about_sent = _released(GaussianMechanism(1.0, 1e-5, 0.5), base=sent)

    assert bounds.reason(about_sent, now_s=1e6) is None
    assert sorted(bounds.models) == [1, 3, 4]


def test_the_gateway_counts_a_release_with_noise_other_than_declared():
    gateway = _gateway(SQLiteStore(":memory:"), readings_per_s=1000.0)
    assert gateway.round is not None
    overstated = _released(GaussianMechanism(1.0, 1e-5, 0.5), declared=4.0)

    gateway.handle(topics.update_topic("veh-1"),
                   messages.encode(replace(overstated, round=gateway.round.number)))

    assert gateway.rejected["noise_mismatch"] == 1
