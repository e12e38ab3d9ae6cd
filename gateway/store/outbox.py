"""A bounded on-disk queue of line-protocol points, and the thread that writes it to InfluxDB.

Points are appended to a SQLite file (WAL) and leave it only once the server has
acknowledged their batch, so an outage of the database, or a restart of the gateway, loses
nothing: the writer retries with exponential backoff and the backlog is written when the
server returns. The queue is bounded: past ``max_points`` the oldest points are dropped,
counted and logged. A batch the server refuses as malformed (HTTP 400, 413, 422) is split
until the offending points are isolated; those are dropped, counted and logged.

Writes go through ``influxdb-client``'s synchronous write API (gzip on, one batch per
request); retries live here rather than in the client's batching mode, whose buffer is in
memory and gives a batch up after its last retry.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Outbox", "OutboxStats", "Sender"]

log = logging.getLogger(__name__)

Sender = Callable[[Sequence[str]], None]
"""Writes one batch of line-protocol points, or raises."""

MALFORMED = frozenset({400, 413, 422})
REPORT_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counters of an :class:`Outbox` since it was opened; ``waiting`` is on disk now."""

    queued: int
    written: int
    waiting: int
    dropped_full: int
    dropped_malformed: int
    write_errors: int
    batches: int
    last_error: str


class Outbox:
    """Points on disk until a :data:`Sender` has written them, in batches, in order.

    Parameters
    ----------
    path
        The SQLite file of the queue (created if missing; a backlog in it is sent first).
    send
        Writes one batch; raises on failure (anything with an HTTP ``status`` attribute in
        :data:`MALFORMED` means the batch itself is at fault).
    batch_size
        Points per request.
    max_points
        The bound of the queue; past it the oldest points are dropped and counted.
    flush_interval_s
        How long a partial batch may wait for more points.
    retry_interval_s, max_retry_interval_s
        The first wait after a failed write, doubled after each further failure up to the cap.

    Examples
    --------
    >>> sent = []
    >>> outbox = Outbox(":memory:", sent.extend, batch_size=2, flush_interval_s=0.01)
    >>> outbox.put(["m v=1i 1", "m v=2i 2", "m v=3i 3"])
    >>> outbox.drain(timeout_s=5)
    True
    >>> sent, outbox.stats().written, outbox.stats().batches
    (['m v=1i 1', 'm v=2i 2', 'm v=3i 3'], 3, 2)
    >>> outbox.close()
    """

    def __init__(self, path: str | Path, send: Sender, *, batch_size: int = 5000,
                 max_points: int = 1_000_000, flush_interval_s: float = 1.0,
                 retry_interval_s: float = 1.0, max_retry_interval_s: float = 30.0) -> None:
        if batch_size < 1 or max_points < batch_size:
            raise ValueError("batch_size must be >= 1 and max_points >= batch_size")
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                               "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, "
                               "line TEXT NOT NULL);")
        self._send = send
        self.batch_size = batch_size
        self.max_points = max_points
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._max_retry_interval_s = max_retry_interval_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._idle = threading.Event()
        self._failing = threading.Event()  # the last write failed
        self._stopping = threading.Event()
        self._waiting: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self._counts = dict.fromkeys(
            ("queued", "written", "dropped_full", "dropped_malformed", "write_errors",
             "batches"), 0)
        self._last_error = ""
        if self._waiting:
            log.info("outbox %s: %d points from an earlier run wait to be written",
                     path, self._waiting)
        self._thread = threading.Thread(target=self._run, name="influx-writer", daemon=True)
        self._thread.start()

    def put(self, lines: Sequence[str]) -> None:
        """Queue points (never blocks on the server); drop the oldest past the bound."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO outbox (line) VALUES (?)", ((x,) for x in lines))
            self._waiting += len(lines)
            self._counts["queued"] += len(lines)
            excess = self._waiting - self.max_points
            if excess > 0:
                self._db.execute("DELETE FROM outbox WHERE id IN "
                                 "(SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,))
                self._waiting -= excess
                self._counts["dropped_full"] += excess
                log.error("outbox full (%d points): dropped the %d oldest", self.max_points,
                          excess)
            self._db.execute("COMMIT")
            self._idle.clear()
        if self._waiting >= self.batch_size:
            self._wake.set()

    def stats(self) -> OutboxStats:
        with self._lock:
            return OutboxStats(waiting=self._waiting, last_error=self._last_error,
                               **self._counts)

    def drain(self, timeout_s: float) -> bool:
        """Ask for everything queued to be written now; ``True`` once nothing waits."""
        self._urgent.set()
        self._wake.set()
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what the server takes within ``timeout_s``, unless a write fails: then, or
        at the timeout, stop; what is left stays on disk for the next start."""
        if not self._stopping.is_set():
            deadline = time.monotonic() + timeout_s
            self.drain(timeout_s=0)
            while not (self._idle.is_set() or self._failing.is_set()):
                if time.monotonic() > deadline:
                    break
                self._idle.wait(0.05)
            drained = self._idle.is_set()
            self._stopping.set()
            self._wake.set()
            self._thread.join(timeout_s)
            if not drained:
                log.warning("%d points could not be written yet; they stay in the outbox "
                            "and are sent at the next start", self._waiting)
            if not self._thread.is_alive():  # else a request outlived the timeout: leave it
                with self._lock:
                    self._db.close()

    # --- the writer thread ----------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        failing_since = last_report = 0.0
        while not self._stopping.is_set():
            try:
                wrote = self._step()
            except Exception as exc:  # the server is away or refuses: keep the points, retry
                now = time.monotonic()
                failing_since = failing_since or now
                failures += 1
                self._failing.set()
                with self._lock:
                    self._counts["write_errors"] += 1
                    self._last_error = _describe(exc)
                if failures == 1 or now - last_report >= REPORT_EVERY_S:
                    last_report = now
                    log.error("cannot write to InfluxDB for %.0f s (%s); %d points wait on "
                              "disk", now - failing_since, self._last_error, self._waiting)
                delay = min(self._retry_interval_s * 2 ** (failures - 1),
                            self._max_retry_interval_s)
                self._stopping.wait(_retry_after(exc) or delay)
                continue
            if wrote:
                self._failing.clear()
                if failures:
                    log.info("InfluxDB writes again after %d failed attempts in %.0f s",
                             failures, time.monotonic() - failing_since)
                    failures, failing_since = 0, 0.0

    def _step(self) -> bool:
        """Write the oldest batch, or wait for points; whether a batch was written."""
        batch = self._oldest()
        if not batch:
            with self._lock:  # a put() since _oldest() means not idle after all
                if self._waiting == 0:
                    self._urgent.clear()
                    self._idle.set()
            self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            return False
        if len(batch) < self.batch_size and not self._urgent.is_set():
            self._wake.wait(self._flush_interval_s)  # let a partial batch fill up
            self._wake.clear()
            batch = self._oldest()
        self._write(batch)
        return True

    def _oldest(self) -> list[tuple[int, str]]:
        with self._lock:
            return self._db.execute("SELECT id, line FROM outbox ORDER BY id LIMIT ?",
                                    (self.batch_size,)).fetchall()

    def _write(self, batch: list[tuple[int, str]]) -> None:
        """Send ``batch``; split a malformed one until its bad points are isolated."""
        try:
            self._send([line for _, line in batch])
        except Exception as exc:
            if getattr(exc, "status", None) not in MALFORMED:
                raise
            if len(batch) > 1:
                half = len(batch) // 2
                self._write(batch[:half])
                self._write(batch[half:])
                return
            log.error("InfluxDB refused a point, dropped: %s (%s)", batch[0][1][:200],
                      _describe(exc))
            self._forget(batch, "dropped_malformed")
            return
        self._forget(batch, "written")

    def _forget(self, batch: list[tuple[int, str]], outcome: str) -> None:
        with self._lock:
            # The batch is the oldest rows: all rows between its ends are its own, less any
            # that a full queue dropped meanwhile.
            gone = self._db.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?",
                                    (batch[0][0], batch[-1][0])).rowcount
            self._waiting -= gone
            self._counts[outcome] += len(batch)
            self._counts["batches"] += outcome == "written"


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status is not None:
        body = getattr(exc, "body", b"") or b""
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
        return f"HTTP {status} {getattr(exc, 'reason', '')}: {text.strip()[:200]}".strip()
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _retry_after(exc: BaseException) -> float | None:
    """The server's own ``Retry-After`` in seconds, when it sent one (429, 503)."""
    headers = getattr(exc, "headers", None) or {}
    try:
        return min(float(headers.get("Retry-After", "")), 300.0)
    except (TypeError, ValueError):
        return None
