"""docs/PROTOCOL.md is enough: mosquitto_pub and mosquitto_sub alone act as a vehicle."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from federation import messages, topics
from federation.messages import GlobalModel, RoundOpen
from federation.transport import parse_mqtt_url
from gateway.service import Gateway
from gateway.store import SQLiteStore
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

DOC = (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text()
UPDATE_EXAMPLE = json.loads(re.search(r"```json update\n(.*?)\n```", DOC, re.S).group(1))


def _client(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: install Debian's mosquitto-clients (make test does)"
    return path


def _sub(server: Mosquitto, topic: str) -> bytes:
    return subprocess.run(
        [_client("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(server.port), "-C", "1",
         "-W", "10", "-t", topic], capture_output=True, check=True, timeout=15).stdout.strip()


def test_a_vehicle_made_of_mosquitto_pub_takes_part_in_a_round(tmp_path):
    with Mosquitto() as server:
        store = SQLiteStore(tmp_path / "gw.db")
        gateway = Gateway(parse_mqtt_url(server.url), store, round_seconds=2, min_updates=1)
        stop = threading.Event()
        thread = threading.Thread(target=gateway.run, args=(stop,))
        thread.start()
        try:
            open_round = messages.decode(RoundOpen, _sub(server, topics.ROUND_TOPIC))
            update = tmp_path / "update.json"
            update.write_text(json.dumps({**UPDATE_EXAMPLE, "round": open_round.round,
                                          "base_version": open_round.model_version}))
            subprocess.run(
                [_client("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(server.port), "-q", "1",
                 "-t", topics.update_topic(UPDATE_EXAMPLE["vehicle_id"]), "-f", str(update)],
                check=True, timeout=15)
            model = messages.decode(GlobalModel, _sub(server, topics.MODEL_TOPIC))
        finally:
            stop.set()
            thread.join(timeout=20)
            store.close()

    assert model.round == open_round.round
    assert model.participants == 1
    # One central release is noised for one vehicle alone: it counts for a few of its readings.
    assert 0 < model.summary.n < 0.01 * UPDATE_EXAMPLE["state"]["n"]
    assert model.noise_std > 1.0
    assert gateway.rejected == {}
