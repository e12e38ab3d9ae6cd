"""A fleet asks the machine for the open files and local ports its connections need, up front."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedfleet.config import ConfigError
from fedfleet.limits import SPARE_FILES, local_ports_for
from tests.processes import ROOT
from tests.servers import Mosquitto, free_port


def _limited(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _run(args: list[str], soft: int, hard: int, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, preexec_fn=lambda: _limited(soft, hard),
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_soft_limit_below_the_connections_is_raised_toward_the_hard_one():
    done = _run(["-c", "import resource; from fedfleet.limits import open_files_for; "
                 "open_files_for(1000, 'x'); print(resource.getrlimit(resource.RLIMIT_NOFILE))"],
                soft=256, hard=4096, timeout_s=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"({1000 + SPARE_FILES}, 4096)"


def test_a_fleet_one_process_cannot_hold_exits_2_at_once_naming_the_limit(tmp_path):
    done = _run(["-m", "fedfleet", "fleet", "--vehicles", "2000", "--mqtt",
                 "mqtt://127.0.0.1:9", "--ledger-dir", str(tmp_path)],
                soft=256, hard=512, timeout_s=60)

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"fedfleet fleet: error: 2000 vehicles in one process need {2000 + SPARE_FILES} open "
        "files and a process here may hold 512 (ulimit -Hn): raise that limit, or spread them "
        "over more processes"]


def test_a_demo_one_process_cannot_hold_exits_2_before_it_writes_anything(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fedfleet", "demo", "--vehicles", "2000", "--http-port", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: _limited(256, 512), env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"fedfleet demo: error: 2000 vehicles and their broker in one process need "
        f"{4000 + SPARE_FILES} open files and a process here may hold 512 (ulimit -Hn): raise "
        "that limit, or run fewer vehicles, or the broker, gateway and fleet apart"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_a_fleet_past_the_soft_limit_connects_every_vehicle(mosquitto: Mosquitto, tmp_path):
    fleet = subprocess.Popen(
        [sys.executable, "-m", "fedfleet", "fleet", "--vehicles", "300", "--mqtt", mosquitto.url,
         "--privacy", "off", "--id-prefix", "limits-", "--ledger-dir", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: _limited(128, 4096), env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert fleet.stdout is not None
    lines = []
    try:
        for line in fleet.stdout:  # a status line every 10 s
            lines.append(line)
            if "connected" in line and "fleet:" in line:
                break
    finally:
        fleet.send_signal(signal.SIGTERM)
        rest, _ = fleet.communicate(timeout=60)
    output = "".join(lines) + rest

    assert fleet.returncode == 0, output[-2000:]
    assert "fleet: 300/300 connected" in "".join(lines)
    assert "Too many open files" not in output


def test_fewer_local_ports_than_connections_is_an_error_naming_the_fix(tmp_path: Path):
    ports = tmp_path / "ip_local_port_range"
    ports.write_text("32768\t60999\n")

    local_ports_for(28_000, "a fleet", ports)  # 28,064 of 28,232: fits
    with pytest.raises(ConfigError, match=r"30000 vehicles .* need 30064 local ports and .* "
                                          r"gives 28232 \(32768-60999\): widen it"):
        local_ports_for(30_000, "30000 vehicles on one machine", ports)
    local_ports_for(30_000, "a fleet", tmp_path / "absent")  # a machine that does not say


@pytest.mark.integration
def test_the_embedded_broker_takes_every_open_file_it_may_and_says_how_many(tmp_path):
    broker = subprocess.Popen(
        [sys.executable, "-m", "fedfleet", "broker", "--port", str(free_port())], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: _limited(256, 4096), env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert broker.stdout is not None
    try:
        first = broker.stdout.readline()
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.communicate(timeout=60)

    assert f"for up to about {4096 - SPARE_FILES} connections" in first
    assert broker.returncode == 0
