"""The embedded store: SQLite in one local file (or ``:memory:``), committed on flush."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from federation import binary, messages
from federation.messages import Alert, GlobalModel, RoundOpen, Status, Update
from gateway.store.base import (
    Budget,
    OpenRound,
    Rollback,
    RoundRecord,
    Store,
    StoreError,
    VehicleRecord,
)
from gateway.store.traffic import Traffic

__all__ = ["SQLiteStore", "sqlite_path"]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (round INTEGER PRIMARY KEY, opened_at REAL, closed_at REAL,
    accepted INTEGER, rejected INTEGER, quorum_met INTEGER, model_version INTEGER,
    dropped TEXT NOT NULL DEFAULT '[]', privacy TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS open_round (round INTEGER PRIMARY KEY, payload TEXT);
CREATE TABLE IF NOT EXISTS accepted_updates (round INTEGER, vehicle_id TEXT, payload TEXT,
    PRIMARY KEY (round, vehicle_id));
CREATE TABLE IF NOT EXISTS models (version INTEGER PRIMARY KEY, round INTEGER,
    participants INTEGER, readings REAL, created_at REAL, payload TEXT);
CREATE TABLE IF NOT EXISTS rollbacks (ts REAL, restored INTEGER, published INTEGER PRIMARY KEY,
    replaced INTEGER);
CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY, vehicle_id TEXT, ts REAL,
    subsystem TEXT, score REAL, threshold REAL, model_version INTEGER, payload TEXT);
CREATE INDEX IF NOT EXISTS alerts_by_vehicle ON alerts (vehicle_id, id);
CREATE TABLE IF NOT EXISTS statuses (vehicle_id TEXT PRIMARY KEY, state TEXT, ts REAL);
CREATE TABLE IF NOT EXISTS budgets (vehicle_id TEXT, round INTEGER, epsilon REAL,
    delta REAL, epsilon_total REAL, PRIMARY KEY (vehicle_id, round));
CREATE INDEX IF NOT EXISTS budgets_by_round ON budgets (round);
CREATE TABLE IF NOT EXISTS rejections (id INTEGER PRIMARY KEY, ts REAL, reason TEXT,
    vehicle_id TEXT, count INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS traffic (kind TEXT PRIMARY KEY, messages INTEGER,
    payload_bytes INTEGER, readings INTEGER, updated_at REAL);
CREATE TABLE IF NOT EXISTS privacy (vehicle_id TEXT PRIMARY KEY, privacy TEXT,
    mechanism TEXT, epsilon_total REAL, epsilon_budget REAL, delta REAL, exhausted INTEGER);
CREATE TABLE IF NOT EXISTS secure_journal (id INTEGER PRIMARY KEY, round INTEGER, kind TEXT,
    vehicle_id TEXT, payload BLOB);
"""

_BUDGETS = """
SELECT p.vehicle_id, p.privacy, p.mechanism, p.epsilon_total, p.epsilon_budget, p.delta,
    (SELECT COUNT(*) FROM budgets b WHERE b.vehicle_id = p.vehicle_id),
    (SELECT COALESCE(MAX(round), 0) FROM budgets b WHERE b.vehicle_id = p.vehicle_id),
    p.exhausted
FROM privacy p ORDER BY p.vehicle_id
"""

_VEHICLES = """
WITH ids AS (SELECT vehicle_id FROM statuses UNION SELECT vehicle_id FROM alerts
             UNION SELECT vehicle_id FROM budgets)
SELECT ids.vehicle_id, COALESCE(s.state, 'unknown'), s.ts,
    (SELECT COUNT(*) FROM alerts a WHERE a.vehicle_id = ids.vehicle_id),
    (SELECT payload FROM alerts a WHERE a.vehicle_id = ids.vehicle_id ORDER BY id DESC LIMIT 1),
    (SELECT COUNT(*) FROM budgets b WHERE b.vehicle_id = ids.vehicle_id),
    COALESCE((SELECT epsilon_total FROM budgets b WHERE b.vehicle_id = ids.vehicle_id
              ORDER BY round DESC LIMIT 1), 0.0)
FROM ids LEFT JOIN statuses s ON s.vehicle_id = ids.vehicle_id ORDER BY ids.vehicle_id
"""


class SQLiteStore(Store):
    """The embedded store: SQLite in one local file, committed on :meth:`flush`.

    The file is in write-ahead-log mode with full sync: a commit is on disk when
    :meth:`flush` returns (a fraction of a millisecond on a local SSD).

    >>> store = SQLiteStore(":memory:")
    >>> store.record_rejection(0.0, "not_json", "veh-0001")
    >>> store.rejection_counts()
    {'not_json': 1}
    >>> store.close()
    """

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            _migrate(self._db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store at {path}: {exc}") from exc
        self._lock = threading.Lock()

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, params)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def record_open_round(self, info: RoundOpen) -> None:
        with self._lock:
            self._db.execute("DELETE FROM open_round")
            # The updates of closed rounds, left by record_round to keep the close short.
            self._db.execute("DELETE FROM accepted_updates WHERE round < ?", (info.round,))
            self._db.execute("DELETE FROM secure_journal WHERE round < ?", (info.round,))
            self._db.execute("INSERT INTO open_round VALUES (?,?)",
                             (info.round, messages.encode(info).decode()))

    def record_accepted(self, update: Update, payload: bytes | None = None) -> None:
        # JSON as text; the binary form as it came, a BLOB (encoding it as JSON again would
        # cost more than decoding it did).
        kept = payload or messages.encode(update)
        self._write("INSERT OR REPLACE INTO accepted_updates VALUES (?,?,?)",
                    (update.round, update.vehicle_id,
                     kept if binary.is_binary(kept) else kept.decode()))

    def open_round(self) -> OpenRound | None:
        rows = self._read("SELECT round, payload FROM open_round")
        if not rows:
            return None
        number, payload = rows[0]
        info = messages.decode(RoundOpen, payload.encode(), schema=None)
        updates = self._read("SELECT payload FROM accepted_updates WHERE round = ? "
                             "ORDER BY vehicle_id", (number,))
        return OpenRound(info, tuple(
            messages.decode(Update, u if isinstance(u, bytes) else u.encode(), schema=None,
                            features=info.features) for u, in updates))

    def record_secure(self, round_number: int, kind: str, vehicle_id: str | None,
                      payload: bytes) -> None:
        self._write("INSERT INTO secure_journal (round, kind, vehicle_id, payload) "
                    "VALUES (?,?,?,?)", (round_number, kind, vehicle_id, payload))

    def secure_journal(self, round_number: int) -> list[tuple[str, str | None, bytes]]:
        return [(kind, vehicle, bytes(payload)) for kind, vehicle, payload in self._read(
            "SELECT kind, vehicle_id, payload FROM secure_journal WHERE round = ? ORDER BY id",
            (round_number,))]

    def record_round(self, record: RoundRecord) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO rounds VALUES (?,?,?,?,?,?,?,?,?)", (
                record.round, record.opened_at, record.closed_at, record.accepted,
                record.rejected, int(record.quorum_met), record.model_version,
                json.dumps(list(record.dropped)), record.privacy))
            self._db.execute("DELETE FROM open_round WHERE round <= ?", (record.round,))

    def record_model(self, model: GlobalModel) -> None:
        self._write("INSERT OR REPLACE INTO models VALUES (?,?,?,?,?,?)", (
            model.version, model.round, model.participants, model.summary.n,
            model.created_at, messages.encode(model).decode()))

    def record_alert(self, alert: Alert) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO alerts VALUES (NULL,?,?,?,?,?,?,?)", (
                alert.vehicle_id, alert.ts, alert.subsystem, alert.score, alert.threshold,
                alert.model_version, messages.encode(alert).decode()))
            return cursor.rowcount == 1

    def record_status(self, status: Status) -> None:
        self._write("INSERT OR REPLACE INTO statuses VALUES (?,?,?)",
                    (status.vehicle_id, status.state, status.ts))
        # An offline status may be the Last Will, written when the vehicle connected.
        exhausted = "excluded.exhausted" if status.state == "online" else (
            "MAX(exhausted, excluded.exhausted)")
        self._write(
            "INSERT INTO privacy VALUES (?,?,'none',?,?,0,?) ON CONFLICT (vehicle_id) DO UPDATE "
            "SET privacy = excluded.privacy, epsilon_budget = excluded.epsilon_budget, "
            "epsilon_total = MAX(epsilon_total, excluded.epsilon_total), "
            f"exhausted = {exhausted}",
            (status.vehicle_id, status.privacy, status.epsilon_total, status.epsilon_budget,
             int(status.exhausted)))

    def record_budget(self, update: Update) -> None:
        self._write("INSERT OR REPLACE INTO budgets VALUES (?,?,?,?,?)", (
            update.vehicle_id, update.round, update.epsilon, update.delta,
            update.epsilon_total))
        self._write(
            "INSERT INTO privacy VALUES (?,?,?,?,?,?,0) ON CONFLICT (vehicle_id) DO UPDATE "
            "SET privacy = excluded.privacy, mechanism = excluded.mechanism, "
            "epsilon_total = MAX(epsilon_total, excluded.epsilon_total), "
            "epsilon_budget = excluded.epsilon_budget, delta = excluded.delta, exhausted = 0",
            (update.vehicle_id, update.privacy, update.mechanism, update.epsilon_total,
             update.epsilon_budget, update.delta))

    def record_rejection(self, ts: float, reason: str, vehicle_id: str | None,
                         count: int = 1) -> None:
        self._write("INSERT INTO rejections VALUES (NULL,?,?,?,?)",
                    (ts, reason, vehicle_id, count))

    def record_traffic(self, ts: float, kind: str, traffic: Traffic) -> None:
        self._write(
            "INSERT INTO traffic VALUES (?,?,?,?,?) ON CONFLICT (kind) DO UPDATE SET "
            "messages = messages + excluded.messages, "
            "payload_bytes = payload_bytes + excluded.payload_bytes, "
            "readings = readings + excluded.readings, updated_at = excluded.updated_at",
            (kind, traffic.messages, traffic.payload_bytes, traffic.readings, ts))

    def latest_model(self) -> GlobalModel | None:
        rows = self._read("SELECT payload FROM models ORDER BY version DESC LIMIT 1")
        return messages.decode(GlobalModel, rows[0][0].encode(), schema=None) if rows else None

    def model(self, version: int) -> GlobalModel | None:
        rows = self._read("SELECT payload FROM models WHERE version = ?", (version,))
        return messages.decode(GlobalModel, rows[0][0].encode(), schema=None) if rows else None

    def record_rollback(self, rollback: Rollback) -> None:
        self._write("INSERT OR REPLACE INTO rollbacks VALUES (?,?,?,?)",
                    (rollback.ts, rollback.restored, rollback.published, rollback.replaced))

    def rollbacks(self) -> list[Rollback]:
        return [Rollback(*row) for row in
                self._read("SELECT * FROM rollbacks ORDER BY published DESC")]

    def rounds(self, limit: int = 100) -> list[RoundRecord]:
        rows = self._read("SELECT * FROM rounds ORDER BY round DESC LIMIT ?", (limit,))
        return [RoundRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6],
                            tuple(json.loads(r[7])), r[8]) for r in rows]

    def alerts(self, limit: int = 100) -> list[Alert]:
        rows = self._read("SELECT payload FROM alerts ORDER BY id DESC LIMIT ?", (limit,))
        return [messages.decode(Alert, r[0].encode(), schema=None) for r in rows]

    def budgets(self) -> dict[str, Budget]:
        return {
            vehicle: Budget(vehicle, privacy, mechanism, total, budget, delta, updates, last,
                            bool(exhausted))
            for vehicle, privacy, mechanism, total, budget, delta, updates, last, exhausted
            in self._read(_BUDGETS)
        }

    def statuses(self) -> dict[str, str]:
        return dict(self._read("SELECT vehicle_id, state FROM statuses"))  # type: ignore[arg-type]

    def rejection_counts(self) -> dict[str, int]:
        rows = self._read("SELECT reason, SUM(count) FROM rejections GROUP BY reason")
        return {reason: count for reason, count in rows}

    def vehicles(self) -> list[VehicleRecord]:
        return [
            VehicleRecord(vehicle, state, ts, alerts,
                          messages.decode(Alert, last.encode(), schema=None) if last else None,
                          updates, eps)
            for vehicle, state, ts, alerts, last, updates, eps in self._read(_VEHICLES)
        ]

    def participants(self, limit: int = 20) -> dict[int, list[str]]:
        rows = self._read(
            "SELECT round, vehicle_id FROM budgets WHERE round IN (SELECT DISTINCT round "
            "FROM budgets ORDER BY round DESC LIMIT ?) ORDER BY round DESC, vehicle_id", (limit,))
        found: dict[int, list[str]] = {}
        for number, vehicle in rows:
            found.setdefault(number, []).append(vehicle)
        return found

    def traffic(self) -> dict[str, Traffic]:
        rows = self._read("SELECT kind, messages, payload_bytes, readings FROM traffic")
        return {kind: Traffic(m, b, r) for kind, m, b, r in rows}

    def flush(self) -> None:
        with self._lock:
            self._db.commit()

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store written by an earlier version up to date.

    Rejections written one row per message count 1 each; rounds closed before dropouts were
    recorded dropped nobody, and before their privacy mode was, have none; alerts stored
    twice keep their first row, so that a message delivered again is stored once.
    """
    for table, column, declaration in (
            ("rejections", "count", "INTEGER NOT NULL DEFAULT 1"),
            ("rounds", "dropped", "TEXT NOT NULL DEFAULT '[]'"),
            ("rounds", "privacy", "TEXT NOT NULL DEFAULT ''")):
        if column not in [row[1] for row in db.execute(f"PRAGMA table_info({table})")]:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'alerts_once'").fetchall():
        db.execute("DELETE FROM alerts WHERE id NOT IN (SELECT MIN(id) FROM alerts "
                   "GROUP BY vehicle_id, ts, subsystem, score)")
        db.execute("CREATE UNIQUE INDEX alerts_once ON alerts (vehicle_id, ts, subsystem, score)")
    db.commit()


def sqlite_path(url: str) -> str | None:
    """The file (or ``:memory:``) a ``sqlite://`` store URL names; ``None`` for other URLs.

    >>> sqlite_path("sqlite:///fleet.db"), sqlite_path("sqlite:////var/fleet.db")
    ('fleet.db', '/var/fleet.db')
    """
    if not url.startswith("sqlite://"):
        return None
    return url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
