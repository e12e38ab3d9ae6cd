"""Two real Mosquitto brokers, a region's bridged to the top one: the region gateway's partial
goes up, the global model comes down, retained."""

from __future__ import annotations

import os
import pwd
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation import messages, topics
from federation.messages import GlobalModel
from federation.transport import MqttTarget, make_client, parse_mqtt_url
from fedfleet.cli import main
from gateway.coordinator import Coordinator
from gateway.service import RoundClosed
from gateway.store import SQLiteStore
from gateway.worker import Worker
from tests.processes import wait_until
from tests.scaleout import assert_same_model, exact, publish_updates
from tests.servers import HOST, Mosquitto, free_port

ROUND_S = 5.0  # long enough for a loaded machine to start every part and publish


@pytest.fixture
def brokers(tmp_path: Path, capsys: pytest.CaptureFixture[str]
            ) -> Iterator[tuple[Mosquitto, Mosquitto]]:
    """The top broker, and the region's, set up with what `fedfleet broker-bridge` prints."""
    with Mosquitto() as top:
        assert main(["broker-bridge", "--region", "north", "--upstream", top.url]) == 0
        port = free_port()
        conf = tmp_path / "region.conf"
        user = pwd.getpwuid(os.geteuid()).pw_name
        conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\nuser {user}\n"
                        + capsys.readouterr().out)
        with Mosquitto(port, conf=conf) as region:
            yield top, region


def retained_model(target: MqttTarget, wait_s: float = 0.5) -> GlobalModel | None:
    """The model a vehicle joining ``target`` now receives retained, if any."""
    got: list[GlobalModel] = []
    client = make_client("late-vehicle", target)
    client.on_message = lambda c, u, msg: got.append(
        messages.decode(GlobalModel, msg.payload)) if msg.retain else None
    client.connect(target.host, target.port)
    client.subscribe(topics.MODEL_TOPIC, 1)
    client.loop_start()
    time.sleep(wait_s)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None


def test_a_region_gateway_behind_a_bridge_and_the_top_gateway_merge_one_fleet(brokers):
    top, region = brokers
    top_target, region_target = parse_mqtt_url(top.url), parse_mqtt_url(region.url)
    closed: list[RoundClosed] = []
    stop = threading.Event()
    hub = Coordinator(top_target, SQLiteStore(":memory:"), workers=1, round_seconds=ROUND_S,
                      partial_grace_s=5.0,
                      observer=lambda e: closed.append(e) if isinstance(e, RoundClosed) else None)
    north = Worker(region_target, "north", group=None, round_seconds=ROUND_S)
    threads = [threading.Thread(target=part.run, args=(stop,), daemon=True)
               for part in (hub, north)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: north.round is not None, 10, "the round, down the bridge")
        in_region = [exact(f"north-{i:03d}", seed=i) for i in range(20)]
        at_top = [exact(f"top-{i:03d}", seed=100 + i) for i in range(20)]

        publish_updates(region_target, in_region)
        publish_updates(top_target, at_top)
        wait_until(lambda: bool(closed), 3 * ROUND_S + 5, "the round's close")
        # Retained on the region broker: a vehicle joining there gets it at once.
        wait_until(lambda: retained_model(region_target) is not None, 5, "the region's model")
        region_model = retained_model(region_target)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

    model = closed[0].model
    assert model is not None
    assert_same_model(model, in_region + at_top)
    assert region_model is not None
    assert (region_model.version, region_model.summary.n) == (1, model.summary.n)
