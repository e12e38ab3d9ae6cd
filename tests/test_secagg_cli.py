"""``--privacy secagg`` from the command line: a gateway and a fleet, each a process of its
own, on a real Mosquitto; the store records the rounds as secure and ``fedfleet privacy``
says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT, Command, read_store
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

VEHICLES = 6
BUDGET = ("--privacy", "secagg", "--epsilon-budget", "8")


def test_a_gateway_and_a_fleet_run_secure_rounds_that_fedfleet_privacy_reports(tmp_path: Path):
    with Mosquitto() as broker:
        gateway = Command("gateway", "--mqtt", broker.url, "--round-seconds", "3",
                          "--target-updates", str(VEHICLES), "--store", "sqlite:///gw.db",
                          *BUDGET, cwd=tmp_path)
        gateway.wait_for("round 1 open|round 1", 20)
        fleet = Command("fleet", "--mqtt", broker.url, "--vehicles", str(VEHICLES),
                        "--speedup", "60", "--ledger-dir", "ledgers", *BUDGET, cwd=tmp_path,
                        env={"FEDFLEET_FIRST_RELEASE_READINGS": "60"})
        try:
            gateway.wait_for(rf"round \d+: {VEHICLES} merged", 40)
        finally:
            fleet.stop()
            gateway.stop()

    report = subprocess.run(
        [sys.executable, "-m", "fedfleet", "privacy", "--store", "sqlite:///gw.db"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    merged = read_store(tmp_path / "gw.db", "SELECT privacy, accepted FROM rounds "
                        "WHERE quorum_met = 1")
    assert merged and all(row == ("secagg", VEHICLES) for row in merged)
    assert report.returncode == 0, report.stderr
    assert "secagg" in report.stdout.split("rounds by privacy:")[1]
    assert report.stdout.count(" secagg ") >= VEHICLES  # each vehicle's row says so
