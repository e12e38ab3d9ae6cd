"""A poisoned global model is rolled back: a stored version republished as the newest, pushed
retained through a real Mosquitto, and recorded in the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from paho.mqtt import subscribe

from federation import messages, topics
from federation.features import FEATURE_NAMES
from federation.messages import GlobalModel
from federation.summary import ModelSummary
from federation.transport import MqttTarget, parse_mqtt_url
from gateway.service import Gateway
from gateway.store import SQLiteStore
from tests.processes import Command
from tests.servers import Mosquitto

D = len(FEATURE_NAMES)
HONEST = ModelSummary(FEATURE_NAMES, 3000.0, np.full(D, 0.4), np.eye(D) * 0.01)
POISONED = ModelSummary(FEATURE_NAMES, 9e6, np.full(D, 1.0), np.eye(D) * 0.25)


def _store_with_a_poisoned_model(path: Path) -> None:
    store = SQLiteStore(path)
    store.record_model(GlobalModel(1, 4, 20, HONEST, 100.0))
    store.record_model(GlobalModel(2, 5, 20, POISONED, 130.0))
    store.close()


def _retained_model(url: str) -> GlobalModel:
    target = parse_mqtt_url(url)
    message = subscribe.simple(topics.MODEL_TOPIC, qos=1, hostname=target.host,
                               port=target.port, retained=True)
    return messages.decode(GlobalModel, message.payload)


@pytest.mark.integration
def test_a_rollback_republishes_the_stored_version_as_the_newest_retained(tmp_path):
    _store_with_a_poisoned_model(tmp_path / "gw.db")
    with Mosquitto() as broker:
        gateway = Command("gateway", "--mqtt", broker.url, "--store", "sqlite:///gw.db",
                          "--http-port", "0", "--rollback", "1", cwd=tmp_path)
        try:
            gateway.wait_for(r"model v1 restored as v3", timeout_s=30)
            retained = _retained_model(broker.url)
        finally:
            code = gateway.stop()

    assert code == 0, gateway.output()
    assert retained.version == 3
    assert retained.summary.n == HONEST.n
    assert np.array_equal(retained.summary.mean, HONEST.mean)
    store = SQLiteStore(tmp_path / "gw.db")
    rollbacks = store.rollbacks()
    latest = store.latest_model()
    store.close()
    assert [(r.restored, r.published, r.replaced) for r in rollbacks] == [(1, 3, 2)]
    assert latest is not None and latest.version == 3


def test_asking_again_for_the_same_rollback_changes_nothing(tmp_path):
    _store_with_a_poisoned_model(tmp_path / "gw.db")
    store = SQLiteStore(tmp_path / "gw.db")

    first = Gateway(MqttTarget("127.0.0.1", 1), store).rollback(1)
    again = Gateway(MqttTarget("127.0.0.1", 1), store).rollback(1)

    assert (first.version, again.version) == (3, 3)
    assert len(store.rollbacks()) == 1


@pytest.mark.parametrize(("version", "message"), [
    ("9", "rollback: the store holds no model v9"),
    ("-1", "rollback must be a model version"),
])
def test_a_rollback_to_a_version_not_stored_is_a_usage_error(tmp_path, version, message):
    _store_with_a_poisoned_model(tmp_path / "gw.db")

    gateway = Command("gateway", "--mqtt", "mqtt://127.0.0.1:1", "--store", "sqlite:///gw.db",
                      "--http-port", "0", "--rollback", version, cwd=tmp_path)
    assert gateway.process is not None
    code = gateway.process.wait(30)

    assert code == 2
    assert message in gateway.output()
