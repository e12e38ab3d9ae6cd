"""What the tests of gateway workers and bridged regions share: exact updates, the
single-gateway model they must equal, and a vehicle that publishes them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from federation import messages, topics
from federation.features import VEHICLE_SCHEMA
from federation.messages import GlobalModel, RoundOpen, Update
from federation.transport import MqttTarget, make_client
from gateway.rounds import Round
from gateway.strategy import Strategy, make_strategy
from tests import factories

__all__ = ["assert_same_model", "exact", "publish_updates", "single_gateway_model"]


def exact(vehicle: str, round_number: int = 1, seed: int = 0) -> Update:
    return replace(factories.update(vehicle, round_number, seed), privacy="off",
                   mechanism="none", epsilon=0.0, delta=0.0, epsilon_total=0.0)


def single_gateway_model(updates: list[Update], strategy: Strategy | None = None) -> GlobalModel:
    """What one gateway merges of ``updates`` into its first model by ``strategy`` (default:
    the default): the reference."""
    current = Round(RoundOpen(1, 0.0, 1.0, 1, 0), accepted={u.vehicle_id: u for u in updates})
    return current.merge(None, strategy or make_strategy(), VEHICLE_SCHEMA, 0.0)


def publish_updates(target: MqttTarget, updates: list[Update]) -> None:
    client = make_client("vehicles", target)
    client.connect(target.host, target.port)
    client.loop_start()
    try:
        sent = [client.publish(topics.update_topic(u.vehicle_id), messages.encode(u), qos=1)
                for u in updates]
        for info in sent:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def assert_same_model(model: GlobalModel, updates: list[Update],
                      strategy: Strategy | None = None) -> None:
    reference = single_gateway_model(updates, strategy)
    assert model.participants == reference.participants == len(updates)
    assert model.summary.n == reference.summary.n
    np.testing.assert_allclose(model.summary.mean, reference.summary.mean, rtol=1e-12)
    np.testing.assert_allclose(model.summary.cov, reference.summary.cov, rtol=1e-12,
                               atol=1e-15)
