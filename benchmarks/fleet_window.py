"""Measuring a running fleet, for :mod:`benchmarks.scale` and :mod:`benchmarks.scale_regions`:
when its connections settle, its status lines, the CPU of process trees and of the machine,
and what the gateway's store says was received, accepted and refused."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import psutil

from tests.processes import Command, open_round, read_store, wait_until

SETTLED_LINES = 3  # status lines (10 s apart) with one count of connections: settled
MIN_CONNECTED = 0.99  # of the fleet, for a measurement at all

STATUS = re.compile(r"fleet: (\d+)/(\d+) connected, sim (\d+):(\d\d):(\d\d).*?(\d+) updates sent")


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants."""
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def cpu_s(processes: list[psutil.Process]) -> float:
    """CPU seconds (user + system) the processes have used, those gone left out."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def busy_s() -> float:
    """CPU seconds the whole machine has been busy, every core and process."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def status_lines(fleet: Command, since: float) -> list[tuple[float, int, int, int, int]]:
    """The fleet's status lines since ``since``: (time, connected, vehicles, simulated s, sent)."""
    found = []
    for at, line in fleet.matching(STATUS.pattern, since):
        match = STATUS.search(line)
        assert match is not None
        connected, vehicles, hours, minutes, seconds, sent = map(int, match.groups())
        found.append((at, connected, vehicles, hours * 3600 + minutes * 60 + seconds, sent))
    return found


def connected_at(fleet: Command, vehicles: int, timeout_s: float) -> tuple[float, int, int]:
    """When the fleet's connections settled, its simulated seconds then, and how many are
    connected: every vehicle, or the same count for :data:`SETTLED_LINES` status lines in a
    row (the broker may hold too few files for the last few); ``TimeoutError`` past
    ``timeout_s``, or if fewer than :data:`MIN_CONNECTED` of the fleet settled."""
    def settled() -> tuple[float, int, int] | None:
        lines = status_lines(fleet, 0.0)
        for index, (at, connected, _, simulated_s, _) in enumerate(lines):
            if connected == vehicles:
                return at, simulated_s, connected
            stretch = lines[index:index + SETTLED_LINES]
            if len(stretch) == SETTLED_LINES and {line[1] for line in stretch} == {connected}:
                at, _, _, simulated_s, _ = stretch[-1]  # seen settled only now
                return at, simulated_s, connected
        return None
    wait_until(lambda: settled() is not None, timeout_s, f"{vehicles} vehicles to connect")
    at, simulated_s, connected = settled() or (0.0, 0, 0)
    if connected < MIN_CONNECTED * vehicles:
        raise TimeoutError(f"only {connected} of {vehicles} vehicles connected")
    return at, simulated_s, connected


def settle(db: Path, quiet_s: float = 3.0, timeout_s: float = 120.0) -> None:
    """Wait until the gateway has accepted nothing new for ``quiet_s``: its backlog is done."""
    def accepted() -> int:
        return int(read_store(db, "SELECT COUNT(*) FROM accepted_updates")[0][0])
    last, since, end = accepted(), time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() - since < quiet_s and time.monotonic() < end:
        time.sleep(0.5)
        if (now := accepted()) != last:
            last, since = now, time.monotonic()


def release_env(readings: int | None) -> dict[str, str]:
    """The fleet's environment for a private release every ``readings`` learned readings,
    within a budget that never runs out (none: the tuning's schedule)."""
    if readings is None:
        return {}
    return {"FEDFLEET_FIRST_RELEASE_READINGS": str(readings), "FEDFLEET_RELEASE_GROWTH": "1",
            "FEDFLEET_RELEASES": "200", "FEDFLEET_EPSILON_BUDGET": "1000"}


def costs(vehicles: int, readings: float, cpu_s: dict[str, float], wall_s: float,
           busy_s: float, rss_bytes: int) -> dict[str, float]:
    """A row's costs: the fleet's CPU a reading, each part's cores, the fleet's memory."""
    return {
        "fleet_us": 1e6 * cpu_s["fleet"] / max(readings, 1),
        "fleet_cores": cpu_s["fleet"] / wall_s,
        "rss_kib": rss_bytes / 1024 / vehicles, "rss_mib": rss_bytes / 2**20,
        "mosquitto_cores": cpu_s["mosquitto"] / wall_s,
        "gateway_cores": cpu_s["gateway"] / wall_s,
        "others_cores": (busy_s - sum(cpu_s.values())) / wall_s,
    }


def outcome(db: Path) -> dict[str, Any]:
    """From the gateway's store: updates received, accepted by a round, and refused by reason."""
    received = read_store(db, "SELECT messages FROM traffic WHERE kind = 'update'")
    accepted = read_store(db, "SELECT COALESCE(SUM(accepted), 0) FROM rounds")[0][0] + len(
        open_round(db)[1])
    rejected = dict(read_store(db, "SELECT reason, SUM(count) FROM rejections GROUP BY reason"))
    return {"received": received[0][0] if received else 0, "accepted": accepted,
            "rejected": rejected}


def pid(command: Command) -> int:
    assert command.process is not None
    return command.process.pid
