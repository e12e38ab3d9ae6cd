"""The evaluation harness on small slices of the shared datasets: loaders, metrics, regimes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from analytics.datasets import Dataset, DatasetError, Stream, load, simulated_faults
from analytics.metrics import detection, lead_time
from analytics.replay import Run, Schedule, run_online
from analytics.report import _cold_start, _wins, evaluate
from analytics.skab import outlier_protocol
from devices.onboard.tuning import TEST_RIG, VEHICLE
from devices.sim.simulator import SimulatedVehicle
from federation.features import Schema
from fedfleet.cli import main

DATA = Path(__file__).parent.parent.parent / "shared" / "datasets"
CMAPSS, SKAB = DATA / "cmapss", DATA / "skab"


# Metrics


@pytest.mark.parametrize(("seed", "decimals"), [(0, 12), (1, 12), (2, 1), (3, 0)])
def test_metrics_match_scikit_learn_on_random_cases(seed, decimals):
    rng = np.random.default_rng(seed)
    labels = rng.random(200) < 0.3
    scores = np.round(labels * rng.random(200) + rng.random(200), decimals)  # ties when rounded
    alarms = scores > 1.0

    metrics = detection(labels, scores, alarms)

    precision, recall, f1, _ = precision_recall_fscore_support(labels, alarms, average="binary")
    assert metrics["roc_auc"] == round(roc_auc_score(labels, scores), 3)
    assert metrics["pr_auc"] == round(average_precision_score(labels, scores), 3)
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (
        round(precision, 3), round(recall, 3), round(f1, 3))


def test_metrics_on_a_hand_made_case():
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    scores = np.array([0, 0, 0, 0, 0, 0, 0, 5, 6, 9])
    alarms = scores > 5.5

    metrics = detection(labels, scores, alarms)

    assert metrics["roc_auc"] == 1.0 and metrics["pr_auc"] == 1.0
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0
    assert metrics["false_alarms_per_1000"] == 0.0
    worse = detection(labels, scores, scores > 4)
    assert worse["false_alarms_per_1000"] == 125.0  # 1 of 8 normal rows
    assert worse["precision"] == 0.667


def test_a_ranking_metric_is_undefined_with_one_class_only():
    metrics = detection(np.zeros(5), np.arange(5.0), np.zeros(5))

    assert metrics["roc_auc"] is None and metrics["pr_auc"] is None
    assert metrics["false_alarms_per_1000"] == 0.0


def test_lead_time_counts_from_the_first_alarm_on_a_faulty_row():
    times = np.arange(100.0, 110.0)
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    early_false_alarm = np.array([1, 0, 0, 0, 0, 0, 1, 1, 0, 0])

    assert lead_time(times, labels, early_false_alarm, failure_s=109.0) == 3.0
    assert lead_time(times, labels, np.zeros(10), failure_s=109.0) is None


# Datasets: labels on the right rows


def test_cmapss_labels_the_last_window_cycles_of_each_engine():
    fleet = load(f"cmapss:{CMAPSS}", window=30, limit=3)

    raw = np.loadtxt(CMAPSS / "train_FD001.txt")
    first = fleet.streams[0]
    engine_1 = raw[raw[:, 0] == 1]
    assert first.device_id == "fd001-engine-001" and len(first) == len(engine_1) == 192
    assert first.labels[-30:].all() and not first.labels[:-30].any()
    assert first.failure_s == 192.0 and first.times_s[0] == 1.0
    assert fleet.time_unit == "cycles" and "s1" not in fleet.columns  # constant in FD001
    column = fleet.columns.index("s2")
    assert first.values[0, column] == engine_1[0, 6]  # s2 is the 7th raw column
    assert fleet.schema.feature("setting1").subsystem is None  # an operating condition
    assert len(load(f"cmapss:{CMAPSS}", window=10, limit=1).streams[0].labels.nonzero()[0]) == 10


def test_skab_labels_follow_the_anomaly_column_row_for_row():
    fleet = load(f"skab:{SKAB}", limit=2)

    raw = np.genfromtxt(SKAB / "valve1" / "1.csv", delimiter=";", names=True)
    stream = fleet.streams[1]
    assert stream.device_id == "valve1-1"
    assert stream.labels.tolist() == raw["anomaly"].astype(int).tolist()
    assert "Volume_Flow_RateRMS" in fleet.columns and "changepoint" not in fleet.columns
    assert fleet.reference is not None and len(fleet.reference) == 9405  # anomaly-free run


def test_the_rigs_warming_is_an_operating_condition_not_a_symptom():
    fleet = load(f"skab:{SKAB}", limit=2)  # valve1-0 and valve1-1
    as_health = replace(fleet, schema=Schema(fleet.schema.name, tuple(
        replace(f, subsystem=f.subsystem or "skab") for f in fleet.schema.features)))
    schedule = Schedule.plan(fleet, seed=0)

    runs = {name: run_online(data, schedule, "local", seed=0)
            for name, data in (("conditions", fleet), ("health", as_health))}

    assert fleet.schema.health == ("Accelerometer1RMS", "Accelerometer2RMS", "Current",
                                   "Pressure", "Voltage", "Volume_Flow_RateRMS")
    f1 = {name: outlier_protocol(fleet, run)["f1"] for name, run in runs.items()}
    assert f1["conditions"] > 0.8 > 0.6 > f1["health"], f1
    # As health sensors, valve1-1's warming over its training part sets its threshold above
    # most of its anomaly.
    missed = {name: outlier_protocol(fleet, run, prefix="valve1-1")["mar_pct"]
              for name, run in runs.items()}
    assert missed["conditions"] < 10 < 75 < missed["health"], missed


def test_simulated_streams_are_the_simulated_vehicles_readings():
    fleet = load("sim:10", seed=3, duration_s=400, late_fraction=0.4)
    plan = simulated_faults([s.device_id for s in fleet.streams], seed=3, duration_s=400,
                            late_fraction=0.4)

    for stream in fleet.streams:
        vehicle = SimulatedVehicle(stream.device_id, 3, plan.get(stream.device_id))
        readings = [vehicle.read() for _ in range(400)]
        np.testing.assert_array_equal(stream.times_s, [r.ts_s for r in readings])
        np.testing.assert_allclose(stream.values, [[r.values[c] for c in fleet.columns]
                                                   for r in readings], rtol=1e-12, atol=1e-12)
    assert sum(s.failure_s is not None for s in fleet.streams) == len(plan) >= 3


def test_simulated_labels_start_at_the_fault_onset():
    fleet = load("sim:5", seed=3, duration_s=3000, late_fraction=0)

    faulty = [s for s in fleet.streams if s.failure_s is not None]
    assert len(faulty) == 1
    onset = faulty[0].times_s[np.argmax(faulty[0].labels)]
    assert 900 <= onset <= 2700 and faulty[0].labels[int(onset):].all()


def test_half_the_simulated_late_devices_have_a_fault_in_their_cold_start_window():
    fleet = load("sim:20", seed=4, duration_s=3000, late_fraction=0.2, cold_fraction=0.1)
    plan = Schedule.plan(fleet, seed=4, late_fraction=0.2)
    window = 300  # a tenth of each late device's 3,000 readings

    late = [s.labels[:window] for s in fleet.streams if s.device_id in plan.late]
    began = [labels.any() and not labels[0] and labels[-1] for labels in late]
    arrived = [labels.all() for labels in late]
    assert len(late) == 4 and sum(began) == 1 and sum(arrived) == 1
    assert not any(s.labels[:window].any() for s in fleet.streams if s.device_id not in plan.late)


def test_cold_start_sets_apart_devices_that_arrive_with_an_anomaly():
    labels = {"arrived": [1] * 10, "began": [0] * 4 + [1] * 6, "healthy": [0] * 10,
              "old": [0] * 10}
    streams = [Stream(device, np.arange(10.0), np.zeros((10, 1)), np.array(rows, np.int8))
               for device, rows in labels.items()]
    fleet = Dataset("hand", ("x",), streams, ())
    # Federated ranks the arrived device's rows above the healthy ones, local ranks nothing.
    scores = {"arrived": [2.0] * 10, "began": [0.0] * 10, "healthy": [1.0] * 10,
              "old": [0.0] * 10}
    runs = {name: Run(name, {d: np.array(v) * (name == "federated") for d, v in scores.items()},
                      {d: np.zeros(10, bool) for d in scores})
            for name in ("federated", "local")}
    schedule = Schedule((0, 1, 2, 3), {d: 0 for d in labels}, 1, 0,
                        frozenset({"arrived", "began", "healthy"}))

    cold = _cold_start(fleet, runs, schedule, fraction=1.0)

    assert cold["devices"] == ["arrived", "began", "healthy"]
    arrived, began = (cold["by_onset"][kind] for kind in
                      ("arrived_with_anomaly", "anomaly_began_in_window"))
    assert arrived["devices"] == ["arrived"] and began["devices"] == ["began"]
    assert arrived["federated"]["pr_auc"] == 1.0 and arrived["local"]["pr_auc"] == 0.5
    assert arrived["pr_auc_ratio"] == 2.0
    # Its 6 anomalous rows score 0: below the healthy device's 10, tied with its own 4 normal.
    assert began["federated"]["roc_auc"] == round(0.5 * 6 * 4 / (6 * 14), 3)
    assert began["local"]["pr_auc"] == 0.3  # the share of anomalous rows, 6 of 20


def test_csv_folders_load_through_the_generic_reader(tmp_path):
    for name, shift in (("a", 0.0), ("b", 1.0)):
        rows = "\n".join(f"{t};{20 + shift + t % 3};{int(t > 5)}" for t in range(8))
        (tmp_path / f"{name}.csv").write_text(f"t;temp c;y\n{rows}\n")

    fleet = load(f"csv:{tmp_path}", time_col="t", label_col="y", sep=";")

    assert [s.device_id for s in fleet.streams] == ["a", "b"]
    assert fleet.columns == ("temp_c",)
    assert fleet.streams[1].labels.tolist() == [0] * 6 + [1] * 2


@pytest.mark.parametrize(
    ("source", "message"),
    [("sim:x", "whole number"), ("cmapss:/nowhere", "not a folder"), ("kaggle:x", "unknown kind"),
     ("sim", "expected KIND:ARG")],
)
def test_a_bad_source_is_refused_with_a_reason(source, message):
    with pytest.raises(DatasetError, match=message):
        load(source)


# Regimes


@pytest.fixture(scope="module")
def cmapss_report():
    fleet = load(f"cmapss:{CMAPSS}", limit=6)
    return fleet, *evaluate(fleet, epsilons=[1.0, 8.0], seed=1, round_rows=20, late_fraction=0.2)


def test_every_regime_scores_every_row_of_the_same_streams(cmapss_report):
    fleet, report, runs = cmapss_report

    assert set(report["regimes"]) == {"local", "federated", "centralized", "federated_dp_eps=1",
                                      "federated_dp_eps=8", "batch_reference"}
    for metrics in report["regimes"].values():
        assert metrics["rows"] == fleet.rows == report["rows"]
        assert metrics["anomalous"] == 6 * 30
        assert metrics["lead_time"]["devices"] == 6
    for run in runs.values():
        assert {k: len(v) for k, v in run.scores.items()} == {
            s.device_id: len(s) for s in fleet.streams}
    assert set(report["per_device"]) == {s.device_id for s in fleet.streams}
    assert report["regimes"]["federated"]["rounds"] > 5
    assert report["regimes"]["local"]["rounds"] == 0


def test_privacy_noise_spends_no_more_than_the_budget(cmapss_report):
    _, report, _ = cmapss_report

    assert 0 < report["regimes"]["federated_dp_eps=1"]["epsilon_spent"] <= 1.0
    assert 1.0 < report["regimes"]["federated_dp_eps=8"]["epsilon_spent"] <= 8.0
    assert report["regimes"]["federated"]["epsilon_spent"] == 0.0


def test_the_report_has_the_documented_shape_and_is_json(cmapss_report):
    _, report, _ = cmapss_report

    assert {"dataset", "devices", "rows", "regimes", "per_device", "cold_start"} <= set(report)
    assert report["devices"] == 6
    assert len(report["cold_start"]["devices"]) == 1
    for metric in ("pr_auc", "f1", "false_alarms_per_1000", "lead_time"):
        versus = report["federated_vs_local"][metric]
        assert versus["devices_compared"] == 6
        assert versus["better"] + versus["equal"] + versus["worse"] == 6
    ties = report["federated_vs_local"]["pr_auc"]["ties"]
    assert ties["lead_time"]["devices_compared"] == report["federated_vs_local"]["pr_auc"]["equal"]
    json.dumps(report)


def test_skab_protocol_scores_the_test_parts_only_and_gives_the_ranking_ceiling():
    labels = np.array([1] * 5 + [0] * 400 + [0, 0, 1, 1, 1])
    stream = Stream("other-2", np.arange(410.0), np.zeros((410, 1)), labels)
    scores = np.r_[np.zeros(400), [0.1, 0.4, 0.3, 0.5, 0.6, 0.7, 0.78, 0.8, 0.85, 0.95]]
    run = Run("local", {"other-2": scores}, {"other-2": scores > 0.75})

    protocol = outlier_protocol(Dataset("skab:x", ("a",), [stream]), run, prefix="other")

    assert protocol["rows"] == 10 and protocol["mar_pct"] == 0.0  # 5 training-part anomalies
    assert protocol["far_pct"] == round(100 / 7, 2)
    assert protocol["best_f1"] == 1.0 > protocol["f1"] == round(6 / 7, 3)
    assert outlier_protocol(Dataset("skab:x", ("a",), [stream]), run, prefix="!other") == {
        "rows": 0}


def test_per_device_comparisons_count_fewer_false_alarms_as_better():
    per_device = {d: {"federated": {"anomalous": 1, "pr_auc": 1.0, "false_alarms_per_1000": f},
                      "local": {"anomalous": 1, "pr_auc": p, "false_alarms_per_1000": 5.0}}
                  for d, f, p in (("a", 1.0, 1.0), ("b", 9.0, 1.0), ("c", 5.0, 0.5))}

    versus = _wins(per_device, "federated", "local")

    assert (versus["false_alarms_per_1000"]["better"], versus["false_alarms_per_1000"]["worse"],
            versus["false_alarms_per_1000"]["equal"]) == (1, 1, 1)
    assert versus["pr_auc"]["better"] == 1 and versus["pr_auc"]["equal"] == 2
    assert versus["pr_auc"]["ties"]["false_alarms_per_1000"]["devices_compared"] == 2
    assert "lead_time" not in versus


def test_centralized_learns_one_model_from_every_device():
    fleet = load("sim:3", seed=2, duration_s=1500)
    plan = Schedule.plan(fleet, seed=2, late_fraction=0)

    pooled = run_online(fleet, plan, "centralized", seed=2)
    alone = run_online(fleet, plan, "local", seed=2)

    # 4,500 pooled readings pass the detector's warm-up; 1,500 per device do not.
    assert all(scores.any() for scores in pooled.scores.values())
    assert not any(scores.any() for scores in alone.scores.values())


def test_a_late_device_starts_with_the_fleets_model():
    fleet = load("sim:4", seed=5, duration_s=2400)
    plan = Schedule.plan(fleet, seed=5, late_fraction=0.25)
    (late,) = plan.late

    federated = run_online(fleet, plan, "federated", seed=5)
    local = run_online(fleet, plan, "local", seed=5)

    assert federated.scores[late][:60].any()
    assert not local.scores[late].any()
    assert federated.model is not None and 0 < federated.model.version < federated.rounds
    assert local.model is None


# The command


def test_evaluate_writes_the_report_and_the_picture(tmp_path, capsys):
    out, plot = tmp_path / "report.json", tmp_path / "report.png"

    code = main(["evaluate", "--dataset", f"skab:{SKAB}", "--devices", "3", "--epsilon", "5",
                 "--out", str(out), "--plot", str(plot), "--seed", "3", "--tuning", "vehicle",
                 "--prior-readings", "50"])

    assert code == 0
    report = json.loads(out.read_text())
    assert report["dataset"] == f"skab:{SKAB}" and report["devices"] == 3
    protocol = report["skab_protocol"]["federated"]
    assert set(protocol) == {"f1", "far_pct", "mar_pct", "rows", "best_f1", "valve1", "held_out"}
    assert protocol["best_f1"] >= protocol["f1"]
    assert protocol["valve1"]["rows"] == protocol["rows"] and protocol["held_out"] == {"rows": 0}
    assert report["settings"]["tuning"]["threshold"] == VEHICLE.threshold != TEST_RIG.threshold
    assert report["settings"]["tuning"]["prior_readings"] == 50
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr()
    assert "federated_dp_eps=5" in printed.out and "batch_reference" in printed.out
    assert "rows (100 %)" in printed.err


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--dataset", "sim:0"], "sim:N needs a whole number N >= 1"),
     (["--dataset", "sim:3", "--window", "0"], "--window must be at least 1"),
     (["--dataset", "sim:3", "--cold-fraction", "0"], "--cold-fraction must be in (0, 1]"),
     (["--dataset", "sim:3", "--prior-readings", "-1"], "--prior-readings must be a number"),
     (["--dataset", "sim:3", "--privacy", "secagg", "--secagg-dropout", "1"],
      "--secagg-dropout must be in [0, 1)"),
     (["--dataset", "sim:3", "--secagg-dropout", "0.1"], "--secagg-dropout needs --privacy secagg"),
     (["--dataset", "sim:3", "--out", "/nowhere/r.json"], "folder /nowhere does not exist")],
)
def test_evaluate_usage_errors_exit_2_with_a_message(args, message, capsys):
    assert main(["evaluate", *args]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_reports_a_malformed_csv_folder_without_a_traceback(tmp_path, capsys):
    (tmp_path / "car.csv").write_text("timestamp,temp\n0,1\n")

    assert main(["evaluate", "--dataset", f"csv:{tmp_path}"]) == 2
    assert "no label column 'label'" in capsys.readouterr().err
