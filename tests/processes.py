"""What tests and benchmarks of crashes and restarts drive: ``fedfleet`` commands as processes
of their own, an alert load counted end to end, and the gateway's store read from outside."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from federation import messages, topics
from federation.messages import Alert
from federation.transport import MqttTarget, make_client, parse_mqtt_url
from tests.servers import die_with_parent

__all__ = ["AlertLoad", "Command", "open_round", "read_store", "wait_until"]

ROOT = Path(__file__).parent.parent


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


def read_store(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` from the gateway's SQLite store, read while the gateway writes it."""
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:  # a table the gateway has yet to create
            if "no such table" in str(exc):
                return []
            raise


def open_round(db: Path) -> tuple[int, set[str]]:
    """The number of the round open in the store at ``db`` (0: none) and the vehicles whose
    updates it has accepted."""
    rows = read_store(db, "SELECT round FROM open_round")
    number = rows[0][0] if rows else 0
    accepted = read_store(db, "SELECT vehicle_id FROM accepted_updates WHERE round = ?",
                          (number,))
    return number, {vehicle for vehicle, in accepted}


# Every process a Command started: a test that fails midway leaves none behind (conftest.py).
RUNNING: set[subprocess.Popen[str]] = set()


def kill_leftovers() -> None:
    """``kill -9`` whatever a test's commands left running."""
    for process in list(RUNNING):
        if process.poll() is None:
            process.kill()
            process.wait(10)
        RUNNING.discard(process)


class Command:
    """A ``fedfleet`` subcommand in a process of its own, started at once; every line it
    prints is kept with the :func:`time.monotonic` time it arrived.

    :meth:`start` runs it again (after :meth:`kill` or :meth:`stop`) with the same arguments.
    """

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.args, self.cwd, self.env = args, cwd, env or {}
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.process: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fedfleet", *self.args], cwd=self.cwd, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **self.env},
            preexec_fn=die_with_parent)
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        RUNNING.add(self.process)

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def kill(self) -> None:
        """``kill -9``: the process ends at once, with whatever it had not written."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise

    def matching(self, pattern: str, since: float = 0.0) -> list[tuple[float, str]]:
        """The lines matching ``pattern`` (a regular expression) that arrived at ``since`` or
        later, with their times."""
        with self._lock:
            return [(t, line) for t, line in self.lines if t >= since and re.search(pattern, line)]

    def wait_for(self, pattern: str, timeout_s: float, since: float = 0.0) -> float:
        """When the first line matching ``pattern`` arrived (at ``since`` or later)."""
        wait_until(lambda: bool(self.matching(pattern, since)), timeout_s,
                   f"line matching {pattern!r} from fedfleet {self.args[0]}")
        return self.matching(pattern, since)[0][0]

    def output(self) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines)


class AlertLoad:
    """Valid alerts at ``rate_per_s`` from ``vehicles`` made-up vehicles, with QoS 1, on one
    paho client (``limit`` of them at most) to ``url`` (or a target, with its login and TLS):
    what the broker acknowledged is counted per alert.

    While the broker is away paho keeps what was not acknowledged and sends it once the
    client is back (it retries every second). An alert is known by ``(vehicle_id, ts)``:
    each has a reading time of its own.
    """

    def __init__(self, url: str | MqttTarget, rate_per_s: float, vehicles: int = 10,
                 client_id: str = "test-alert-load", limit: int | None = None) -> None:
        target = parse_mqtt_url(url) if isinstance(url, str) else url
        self.rate_per_s, self.vehicles, self.limit = rate_per_s, vehicles, limit
        self.sent: list[tuple[str, float]] = []
        self.acknowledged: set[tuple[str, float]] = set()
        self._pending: dict[int, tuple[str, float]] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = make_client(client_id, target)
        self.client.reconnect_delay_set(1, 1)
        self.client.max_inflight_messages_set(100)
        self.client.on_publish = self._on_publish
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        wait_until(self.client.is_connected, 10, "connection of the alert load")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = self.stopped = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        """Stop publishing; what was published still goes out."""
        self._stop.set()
        self._thread.join(10)
        self.stopped = time.monotonic()

    @property
    def rate_sent_per_s(self) -> float:
        return len(self.sent) / max(self.stopped - self.started, 1e-9)

    def wait_acknowledged(self, timeout_s: float) -> None:
        wait_until(lambda: len(self.acknowledged) == len(self.sent), timeout_s,
                   "acknowledgement of every alert published")

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()

    def _run(self) -> None:
        number, limit = 0, self.limit if self.limit is not None else float("inf")
        while not self._stop.is_set() and number < limit:
            due = min(int((time.monotonic() - self.started) * self.rate_per_s), limit)
            while number < due:
                self._publish(number)
                number += 1
            time.sleep(0.005)

    def _publish(self, number: int) -> None:
        vehicle = f"load-{number % self.vehicles:04d}"
        alert = Alert(vehicle, 1.7e9 + number, 5.0, 4.0, "cooling", (("coolant_temp_c", 5.0),),
                      0)
        key = (vehicle, alert.ts)
        info = self.client.publish(topics.alert_topic(vehicle), messages.encode(alert), qos=1)
        with self._lock:
            self.sent.append(key)
            if info.mid in self._early:  # acknowledged before publish() returned
                self._early.discard(info.mid)
                self.acknowledged.add(key)
            else:
                self._pending[info.mid] = key

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                    props: Any) -> None:
        with self._lock:
            key = self._pending.pop(mid, None)
            if key is None:
                self._early.add(mid)
            else:
                self.acknowledged.add(key)
