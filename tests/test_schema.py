"""Feature schemas: construction from data, the schema file, and a fleet on a schema of its own."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from devices.onboard.detector import FleetGaussian, make_pipeline
from devices.onboard.vehicle import Vehicle
from devices.sources import Reading, SensorSource
from federation import messages, topics
from federation.features import VEHICLE_SCHEMA, Feature, Schema, SchemaError, load_schema
from federation.messages import MessageError, RoundOpen, Update
from federation.transport import MqttTarget
from gateway.service import Gateway
from gateway.store import SQLiteStore
from tests import factories

DATASETS = Path(__file__).parent.parent.parent / "shared" / "datasets"
PUMP = Schema("pump", (Feature("flow_l_min", 0, 40), Feature("load_pct", 0, 100),
                       Feature("bearing_temp_c", 0, 120, "bearings")))


def test_the_vehicle_schema_keeps_its_documented_digest():
    assert VEHICLE_SCHEMA.digest == "7ac48caba8e04a59"
    assert len(VEHICLE_SCHEMA) == 9 and len(VEHICLE_SCHEMA.health) == 5


def test_a_cmapss_schema_keeps_the_varying_settings_and_sensors():
    rows = np.loadtxt(DATASETS / "cmapss" / "train_FD001.txt")
    names = ["setting1", "setting2", "setting3"] + [f"s{i}" for i in range(1, 22)]
    columns = dict(zip(names, rows[:, 2:].T, strict=True))
    constant = {"setting3", "s1", "s5", "s10", "s16", "s18", "s19"}  # in FD001; s6 nearly

    schema = Schema.infer("cmapss-fd001", columns, conditions=["setting1", "setting2", "setting3"])

    assert schema.names == tuple(n for n in names if n not in constant)
    assert schema.health == schema.names[2:] and len(schema.health) == 15
    first = schema.scale(dict(zip(names, rows[0, 2:], strict=True)))
    assert all(0.0 < v < 1.0 for v in first.values())


def test_a_skab_schema_comes_from_a_csv_header_with_spaces_in_names():
    with open(DATASETS / "skab" / "valve1" / "0.csv") as handle:
        table = list(csv.DictReader(handle, delimiter=";"))
    sensors = [name for name in table[0] if name not in ("datetime", "anomaly", "changepoint")]

    schema = Schema.infer("skab", {name: [float(r[name]) for r in table] for name in sensors})

    assert schema.names == tuple(sensors) and len(schema.health) == 8
    assert "Volume Flow RateRMS" in schema.names


def test_a_schema_file_round_trips_and_an_edited_one_is_refused(tmp_path):
    path = tmp_path / "pump.json"
    path.write_text(json.dumps(PUMP.to_dict()))
    assert load_schema(path) == PUMP

    edited = PUMP.to_dict()
    edited["features"][2]["high"] = 150.0
    path.write_text(json.dumps(edited))
    with pytest.raises(SchemaError, match="digest"):
        load_schema(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"features": [{"name": "a", "low": 0, "high": 1}]}', "health sensor"),
        ('{"features": [{"name": "a", "low": 1, "high": 1, "subsystem": "x"}]}', "low < high"),
        ('{"features": [{"name": "a", "low": 0, "high": 1, "subsystem": "x"},'
         ' {"name": "a", "low": 0, "high": 2, "subsystem": "y"}]}', "unique"),
        ('{"features": [{"low": 0, "high": 1}]}', "not a schema"),
        ('[1, 2]', "not a schema"),
    ],
)
def test_a_malformed_schema_file_gets_a_clear_error(tmp_path, content, message):
    path = tmp_path / "schema.json"
    path.write_text(content)

    with pytest.raises(SchemaError, match=message):
        load_schema(path)


def test_a_missing_schema_file_gets_a_clear_error(tmp_path):
    with pytest.raises(SchemaError, match="cannot read schema file"):
        load_schema(tmp_path / "absent.json")


def test_the_detector_runs_on_any_schema_and_names_the_drifting_sensor():
    rng = np.random.default_rng(3)
    pipeline = make_pipeline(FleetGaussian(PUMP, refresh_every=1, min_readings=200))

    def reading(extra_c: float = 0.0) -> dict[str, float]:
        load = rng.uniform(0, 100)
        return {"flow_l_min": 20 + rng.normal(0, 1), "load_pct": load,
                "bearing_temp_c": 40 + 0.5 * load + rng.normal(0, 1) + extra_c}
    for _ in range(600):
        pipeline.learn_one(reading())

    healthy, hot = pipeline.score_one(reading()), pipeline.score_one(reading(extra_c=15.0))

    assert healthy < 4 < hot
    assert list(pipeline["FleetGaussian"].residuals()) == ["bearing_temp_c"]


class PumpLog(SensorSource):
    def __init__(self) -> None:
        self.rng, self.t = np.random.default_rng(0), 0.0

    def read(self) -> Reading:
        self.t += 1.0
        return Reading(self.t, {"flow_l_min": 20 + self.rng.normal(), "load_pct": 50.0,
                                "bearing_temp_c": 60 + self.rng.normal()})


def _gateway(schema: Schema) -> Gateway:
    return Gateway(MqttTarget("127.0.0.1", 1883), SQLiteStore(":memory:"), schema=schema,
                   clock=lambda: 0.0)


def _pump_update(round_info: RoundOpen) -> bytes:
    vehicle = Vehicle("pump-1", PumpLog(), detector=FleetGaussian(PUMP), mechanism=None,
                      clock=lambda: 0.0)
    vehicle.on_message(topics.ROUND_TOPIC, messages.encode(round_info))
    sent = [out for _ in range(40) for out in vehicle.step()]
    return sent[0].payload


def test_a_gateway_on_a_custom_schema_merges_updates_from_devices_on_the_same_schema():
    gateway = _gateway(PUMP)
    gateway._open_round()
    assert gateway.round is not None

    gateway.handle(topics.update_topic("pump-1"), _pump_update(gateway.round.info))

    assert list(gateway.round.accepted) == ["pump-1"]
    assert gateway.round.info.schema_digest == PUMP.digest
    assert gateway._merge(gateway.round).summary.features == PUMP.names


def test_a_gateway_rejects_updates_on_the_same_names_with_other_limits():
    other = Schema("pump", (*PUMP.features[:2], Feature("bearing_temp_c", 0, 200, "bearings")))
    gateway = _gateway(other)
    gateway._open_round()
    assert gateway.round is not None
    round_info = RoundOpen(1, 0.0, 100.0, 1, 0, PUMP.names, PUMP.digest)

    gateway.handle(topics.update_topic("pump-1"), _pump_update(round_info))

    assert gateway.rejected == {"wrong_features": 1}
    assert gateway.round.accepted == {}


def test_a_device_on_another_schema_refuses_the_fleets_round():
    vehicle = Vehicle("pump-1", PumpLog(), detector=FleetGaussian(PUMP), mechanism=None,
                      clock=lambda: 0.0)

    vehicle.on_message(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, 0.0, 100.0, 1, 0)))

    assert vehicle.round is None
    assert vehicle.rejected == {"wrong_features": 1}


def test_a_message_without_a_digest_is_taken_for_the_fleets_schema_if_its_names_match():
    obj = json.loads(messages.encode(Update("veh-1", 1, 0, factories.summary(), 0, 0, 0, 0.0)))
    del obj["schema_digest"]

    update = messages.decode(Update, json.dumps(obj).encode())

    assert update.schema_digest == VEHICLE_SCHEMA.digest
    with pytest.raises(MessageError, match="features must be exactly"):
        messages.decode(Update, json.dumps(obj).encode(), PUMP)



def test_a_reading_scales_as_each_of_its_features_would_clipping_at_the_limits():
    values = [-1e308, -3.0, 0.0, 55.5, 1e9, float("inf"), float("-inf"), float("nan"), 7.0]
    reading = dict(zip(VEHICLE_SCHEMA.names, values, strict=True)) | {"unknown": 1.0}

    scaled = VEHICLE_SCHEMA.scale(reading)

    assert scaled == {name: VEHICLE_SCHEMA.feature(name).scale(value)
                      for name, value in reading.items() if name != "unknown"}
    assert all(0.0 <= value <= 1.0 for value in scaled.values())
