"""Real sensor data through the device agent: a slice of SKAB (a water-pump test rig, labelled
by its authors) replayed from a CSV log and from standard input, with alerts going through a
real Mosquitto to a gateway, checked roughly against the labels."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from analytics.datasets import Stream, load
from devices.onboard.tuning import TEST_RIG
from devices.onboard.vehicle import Vehicle
from devices.runners.agent import DeviceAgent
from devices.sources import SensorSource
from devices.sources.replay import CsvReplay
from devices.sources.stdin import StdinSource
from federation import topics
from federation.features import Schema
from federation.transport import parse_mqtt_url
from gateway.service import Gateway
from tests.servers import Mosquitto
from tests.test_device_agent import _wait_for, running_gateway

pytestmark = pytest.mark.integration

SKAB = Path(__file__).parent.parent.parent / "shared" / "datasets" / "skab"
# The rig preset `fedfleet device --tuning test-rig` runs (its first 400 readings, the
# benchmark's training part, are its baseline and set its threshold), alerting at most once a
# minute per subsystem so that each anomaly raises a few alerts.
RIG = replace(TEST_RIG, cooldown_s=60.0)


@pytest.fixture(scope="module")
def skab() -> tuple[Schema, list[str], list[Stream]]:
    assert SKAB.is_dir(), f"SKAB is expected at {SKAB} (see ../shared/datasets/README.md)"
    dataset = load(f"skab:{SKAB}")
    assert dataset.schema is not None
    return dataset.schema, list(dataset.columns), dataset.streams


def _replay(url: str, vehicle_id: str, source: SensorSource, schema: Schema) -> DeviceAgent:
    """Run the agent on ``source`` to its end, as ``fedfleet device`` does."""
    vehicle = Vehicle(vehicle_id, source, mechanism=None,
                      **RIG.vehicle_kwargs(schema))
    agent = DeviceAgent(parse_mqtt_url(url), vehicle)
    agent.run(threading.Event(), duration_s=120)
    return agent


def _check_against_labels(gateway: Gateway, streams: list[Stream], raised: int) -> None:
    """Most alerts fall on anomalous rows (far above their share), and every device has one."""
    _wait_for(lambda: gateway.received[topics.ALERT] >= raised, 10, "the gateway to get them")
    on_anomaly, total = 0, 0
    for stream in streams:
        label_at = dict(zip(stream.times_s.tolist(), stream.labels.tolist(), strict=True))
        alerts = [a for a in gateway.store.alerts() if a.vehicle_id == stream.device_id]
        labels = [label_at[a.ts] for a in alerts]
        assert 1 in labels, f"{stream.device_id}: no alert during its anomaly ({labels})"
        on_anomaly, total = on_anomaly + sum(labels), total + len(labels)
    share = float(np.mean(np.concatenate([s.labels for s in streams])))
    assert on_anomaly / total >= max(0.5, 1.5 * share), (on_anomaly, total, share)


def test_a_skab_slice_replayed_from_csv_logs_alerts_on_the_anomalies(skab, tmp_path):
    schema, columns, streams = skab
    chosen = streams[:2]  # valve1 experiments 0 and 1
    with Mosquitto() as broker, running_gateway(broker.url, tmp_path / "gw.db",
                                                schema=schema) as gateway:
        raised = 0
        for stream in chosen:
            log = tmp_path / f"{stream.device_id}.csv"
            rows = [",".join(["timestamp", *columns, "label"])]
            rows += [",".join([repr(t), *map(repr, v), str(label)]) for t, v, label in
                     zip(stream.times_s.tolist(), stream.values.tolist(),
                         stream.labels.tolist(), strict=True)]
            log.write_text("\n".join(rows) + "\n")
            agent = _replay(broker.url, stream.device_id,
                            CsvReplay(log, schema.names, speedup=math.inf), schema)
            assert agent.meter.readings == len(stream) and agent.dropped == 0
            raised += agent.vehicle.alerts_raised
        _check_against_labels(gateway, chosen, raised)


def test_a_skab_slice_replayed_on_stdin_alerts_on_the_anomalies(skab, tmp_path):
    schema, columns, streams = skab
    chosen = streams[2:4]  # valve1 experiments 2 and 3
    with Mosquitto() as broker, running_gateway(broker.url, tmp_path / "gw.db",
                                                schema=schema) as gateway:
        raised = 0
        for stream in chosen:
            lines = tmp_path / f"{stream.device_id}.jsonl"
            lines.write_text("".join(
                json.dumps({"ts": t, **dict(zip(columns, v, strict=True))}) + "\n"
                for t, v in zip(stream.times_s.tolist(), stream.values.tolist(), strict=True)))
            with lines.open("rb") as stdin:
                agent = _replay(broker.url, stream.device_id,
                                StdinSource(schema.names, stream=stdin), schema)
            assert agent.meter.readings == len(stream) and agent.dropped == 0
            raised += agent.vehicle.alerts_raised
        _check_against_labels(gateway, chosen, raised)
