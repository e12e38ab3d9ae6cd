"""A fifth of the vehicles poisoning their updates, replayed: the default strategy keeps
detection within 5 % of clean with exact updates and under central privacy, and no global
model leaves the feasible region."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analytics.attacks import ATTACKS, Attack
from analytics.datasets import Dataset, load
from analytics.metrics import detection
from analytics.replay import CLIP_NORM, Run, Schedule, tuning_for
from analytics.vectorized import run_vectorized
from federation.privacy import calibrated
from fedfleet.cli import main
from gateway.strategy import make_strategy

CMAPSS = Path(__file__).parent.parent.parent / "shared" / "datasets" / "cmapss"


@pytest.fixture(scope="module")
def fleet() -> tuple[Dataset, Schedule]:
    dataset = load("sim:60", seed=1)
    return dataset, Schedule.plan(dataset, seed=1)


def _pr_auc(dataset: Dataset, run: Run) -> float:
    streams = dataset.streams
    return float(detection(np.concatenate([s.labels for s in streams]),
                           np.concatenate([run.scores[s.device_id] for s in streams]),
                           np.concatenate([run.alarms[s.device_id] for s in streams]))["pr_auc"]
                 or 0.0)


def _private(dataset: Dataset) -> dict[str, object]:
    tuning = tuning_for(dataset)
    releases = max(tuning.releases_within(len(s) - 1) for s in dataset.streams)
    return {"mechanism": calibrated("gaussian", 1.0, releases, 1e-5, CLIP_NORM),
            "central": True, "budget": 1.0}


@pytest.mark.parametrize("privacy", ["off", "central"])
def test_a_fifth_of_vehicles_attacking_costs_the_default_strategy_under_5_percent(
        fleet, privacy):
    dataset, plan = fleet
    regime, options = ("federated", {}) if privacy == "off" else (
        "federated_dp", _private(dataset))
    options["strategy"] = make_strategy()
    clean = _pr_auc(dataset, run_vectorized(dataset, plan, regime, seed=1, **options))
    devices = [s.device_id for s in dataset.streams]

    for kind in ATTACKS:
        attack = Attack.choose(kind, devices, 0.2, seed=1)
        run = run_vectorized(dataset, plan, regime, seed=1, attack=attack, **options)

        assert len(attack.attackers) == 12
        assert _pr_auc(dataset, run) >= 0.95 * clean, kind
        assert run.infeasible_models == 0
        if kind == "huge-counts":
            assert run.refused["too_many_readings"] > 0


def test_evaluate_attack_reports_clean_against_attacked_for_every_federated_regime(
        tmp_path, capsys):
    out = tmp_path / "report.json"

    code = main(["evaluate", "--dataset", f"cmapss:{CMAPSS}", "--devices", "5", "--epsilon", "1",
                 "--attack", "huge-counts", "--attackers", "0.2", "--out", str(out)])

    assert code == 0
    attack = json.loads(out.read_text())["attack"]
    assert attack["kind"] == "huge-counts" and len(attack["attackers"]) == 1
    assert set(attack["regimes"]) == {"federated", "federated_dp_eps=1"}
    for figures in attack["regimes"].values():
        assert figures["refused"]["too_many_readings"] > 0  # every huge claim is refused
        assert figures["infeasible_models"] == 0
        assert figures["within_margin"] == (figures["ratio"] >= 0.95)
    assert "federated under huge-counts by 1 devices" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--attack", "scaled", "--attackers", "0.5"], "--attackers must be in (0, 0.5)"),
    (["--attack", "scaled", "--attackers", "0"], "--attackers must be in (0, 0.5)"),
])
def test_evaluate_refuses_a_share_of_attackers_that_is_no_minority(args, message, capsys):
    assert main(["evaluate", "--dataset", "sim:3", *args]) == 2
    assert message in capsys.readouterr().err
