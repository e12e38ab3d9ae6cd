"""Half the fleet killed mid-round: the round closes on its deadline and quorum, says who
dropped out, and the model never goes backwards. Two fleets share the broker under id
prefixes of their own."""

from __future__ import annotations

import time

import pytest

from tests.processes import Command, read_store, wait_until
from tests.servers import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROUND_SECONDS = 4.0
HALF = 3


def _fleet(broker: Mosquitto, prefix: str, speedup: float, cwd) -> Command:
    return Command("fleet", "--mqtt", broker.url, "--vehicles", str(HALF), "--speedup",
                   str(speedup), "--privacy", "off", "--fault-fraction", "0", "--id-prefix",
                   prefix, cwd=cwd)


def test_half_the_fleet_killed_mid_round_is_recorded_as_dropped_and_the_model_holds(tmp_path):
    db = tmp_path / "gw.db"
    killed_ids = [f"killed-veh-{i:04d}" for i in range(HALF)]
    with Mosquitto() as broker:
        gateway = Command("gateway", "--mqtt", broker.url, "--round-seconds", str(ROUND_SECONDS),
                          "--min-updates", str(HALF), "--target-updates", str(2 * HALF),
                          "--store", "sqlite:///gw.db", "--http-port", "0", cwd=tmp_path)
        stays = _fleet(broker, "stays-", 60, tmp_path)
        try:
            wait_until(lambda: bool(read_store(db, "SELECT version FROM models")), 30,
                       "a first global model")
            # 30 readings at 5 a second: none of these sends an update before it is killed.
            killed = _fleet(broker, "killed-", 5, tmp_path)
            wait_until(lambda: len(read_store(
                db, "SELECT vehicle_id FROM statuses WHERE state = 'online' AND vehicle_id "
                    "LIKE 'killed-%'")) == HALF, 15, "the second fleet online")
            time.sleep(0.5)
            killed.kill()
            killed_at = time.time()
            wait_until(lambda: len(read_store(db, "SELECT round FROM rounds WHERE closed_at > ?",
                                              (killed_at,))) >= 3, 30,
                       "three rounds closed after the kill")
        finally:
            stays.stop()
            code = gateway.stop()
        takeovers = broker.log_path.read_text().count("already connected")

    rounds = read_store(db, "SELECT round, opened_at, closed_at, accepted, quorum_met, dropped "
                            "FROM rounds ORDER BY round")
    during = next(r for r in rounds if r[1] <= killed_at <= r[2])
    after = [r for r in rounds if r[1] > killed_at]
    models = read_store(db, "SELECT version, readings FROM models ORDER BY version")
    assert code == 0, gateway.output()
    assert during[5] == f'["{killed_ids[0]}", "{killed_ids[1]}", "{killed_ids[2]}"]'
    assert during[3:5] == (HALF, 1)  # the quorum, from the half that stayed
    assert ROUND_SECONDS <= during[2] - during[1] < ROUND_SECONDS + 1  # on its deadline
    assert [(r[3], r[4], r[5]) for r in after] == [(HALF, 1, "[]")] * len(after)
    assert [m[0] for m in models] == list(range(1, len(models) + 1))
    assert [m[1] for m in models] == sorted(m[1] for m in models)  # readings never go back
    assert takeovers == 0  # two fleets, one broker: no id in common
