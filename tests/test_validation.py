"""Validation refuses what no honest vehicle can send: too many readings, values outside the
scaled range, covariances that are not positive semi-definite."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from federation import messages, topics
from federation.features import FEATURE_NAMES
from federation.messages import Update
from federation.privacy import GaussianMechanism, SeededNoise, public_centre
from federation.summary import ModelSummary
from federation.transport import MqttTarget
from gateway.service import Gateway
from gateway.store import SQLiteStore
from gateway.validation import Plausibility

D = len(FEATURE_NAMES)
HONEST = ModelSummary(FEATURE_NAMES, 300.0, np.full(D, 0.4), np.eye(D) * 0.01)


def _update(summary: ModelSummary = HONEST, privacy: str = "off", replaces: float = 0.0,
            noise_std: float = 0.0) -> Update:
    return Update("veh-1", 1, 0, summary, 0.0, 0.0, 0.0, 0.0, noise_std, privacy=privacy,
                  replaces_readings=replaces)


def _bounds(heard_at_s: float = 0.0) -> Plausibility:
    bounds = Plausibility(readings_per_s=1.0, round_s=30.0)
    bounds.heard("veh-1", heard_at_s)
    return bounds


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


def test_a_locally_noised_mean_may_leave_the_range_by_its_noise_and_no_further():
    noisy = replace(HONEST, mean=np.full(D, 1.5))

    assert _bounds().reason(_update(noisy, "local", noise_std=0.2), now_s=1e6) is None
    assert _bounds().reason(_update(noisy, "local", noise_std=0.05), now_s=1e6) == "infeasible"


def test_an_honest_clipped_release_about_an_extreme_model_passes():
    extreme = ModelSummary(FEATURE_NAMES, 10.0, np.where(np.arange(D) % 2, 1.0, 0.0),
                           np.eye(D) * 0.25)
    clipped = GaussianMechanism(1.0, 1e-5, 4.0).clipped(HONEST, extreme)

    assert _bounds().reason(_update(clipped, privacy="central"), now_s=1e6) is None


def test_the_gateway_counts_and_stores_each_refusal_by_reason():
    store = SQLiteStore(":memory:")
    gateway = Gateway(MqttTarget("127.0.0.1", 1), store, readings_per_s=1.0)
    gateway._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    gateway._open_round()
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
    first = Gateway(MqttTarget("127.0.0.1", 1), store, readings_per_s=1.0, round_seconds=30.0,
                    clock=lambda: clock[0])
    first._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    first._open_round()
    assert first.round is not None
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
