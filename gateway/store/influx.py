"""The InfluxDB 2 store: every record becomes points (see :mod:`gateway.store.schema`) in a bucket.

Points are queued in a bounded on-disk outbox (:mod:`gateway.store.outbox`) and written in gzip
batches by a thread of their own, so the gateway never waits for the database and an outage
loses nothing. The store also keeps everything in a local SQLite file, exactly as the
embedded store does: the gateway resumes from it after a restart, and the fleet views read
it, so they work the same whichever backend is configured and while InfluxDB is away.

The URL::

    influx://HOST:PORT/BUCKET?org=ORG    (influxs:// for HTTPS)
    influx:///BUCKET                      (the server from INFLUXDB_V2_URL)

Organisation and token come from ``INFLUXDB_V2_ORG`` and ``INFLUXDB_V2_TOKEN`` (the
variables of InfluxDB's own clients) unless the URL names an ``org``; the token only ever
from the environment, so it shows in no process list. Query options: ``batch_size``
(points per request, default 5000), ``max_points`` (the outbox bound, default 1,000,000),
``local`` (the SQLite file, default ``fedfleet-data/influx-BUCKET.db``; its outbox sits
beside it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from influxdb_client import InfluxDBClient, Point
from influxdb_client.client.write_api import SYNCHRONOUS

from federation.features import VEHICLE_SCHEMA, Schema
from federation.messages import Alert, GlobalModel, Status, Update
from gateway.store import schema as points
from gateway.store.base import RoundRecord
from gateway.store.outbox import Outbox, OutboxStats
from gateway.store.sqlite import SQLiteStore
from gateway.store.traffic import Traffic, raw_reading_bytes

__all__ = ["InfluxSettings", "InfluxStore"]

_OPTIONS = ("org", "batch_size", "max_points", "local")


@dataclass(frozen=True, slots=True)
class InfluxSettings:
    """Where and how to write: the server, organisation, token, bucket and local files.

    Examples
    --------
    >>> env = {"INFLUXDB_V2_ORG": "acme", "INFLUXDB_V2_TOKEN": "secret"}
    >>> s = InfluxSettings.from_url("influx://db.local:8086/fleet?batch_size=500", env)
    >>> s.server_url, s.org, s.bucket, s.batch_size, str(s.local_path)
    ('http://db.local:8086', 'acme', 'fleet', 500, 'fedfleet-data/influx-fleet.db')
    >>> InfluxSettings.from_url("influx:///fleet", env)
    Traceback (most recent call last):
    ...
    ValueError: influx:///fleet names no server: add HOST:PORT or set INFLUXDB_V2_URL
    """

    server_url: str
    org: str
    token: str
    bucket: str
    local_path: Path
    batch_size: int = 5000
    max_points: int = 1_000_000

    @property
    def outbox_path(self) -> Path:
        return self.local_path.with_suffix(".outbox.db")

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str] | None = None) -> InfluxSettings:
        """Parse an ``influx://`` or ``influxs://`` store URL; ``ValueError`` says what is
        wrong."""
        environ = os.environ if environ is None else environ
        parts = urlsplit(url)
        if parts.scheme not in ("influx", "influxs"):
            raise ValueError(f"not an InfluxDB store URL: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = sorted(set(query) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"{url}: unknown option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(_OPTIONS)}")
        scheme = "https" if parts.scheme == "influxs" else "http"
        server = f"{scheme}://{parts.netloc}" if parts.netloc else environ.get(
            "INFLUXDB_V2_URL", "")
        if not server:
            raise ValueError(f"{url} names no server: add HOST:PORT or set INFLUXDB_V2_URL")
        bucket = parts.path.strip("/") or "fedfleet"
        org = query.get("org") or environ.get("INFLUXDB_V2_ORG", "")
        token = environ.get("INFLUXDB_V2_TOKEN", "")
        if not org or not token:
            raise ValueError(f"{url}: set INFLUXDB_V2_TOKEN and the organisation "
                             f"(INFLUXDB_V2_ORG or ?org=)")
        local = Path(query.get("local") or f"fedfleet-data/influx-{bucket}.db")
        try:
            sizes = {k: int(query[k]) for k in ("batch_size", "max_points") if k in query}
        except ValueError:
            raise ValueError(f"{url}: batch_size and max_points must be integers") from None
        return cls(server.rstrip("/"), org, token, bucket, local, **sizes)


class InfluxStore(SQLiteStore):
    """Writes every record to an InfluxDB 2 bucket, and keeps it locally to read and resume.

    Parameters
    ----------
    settings
        The server, credentials, bucket and local files.
    schema
        The fleet's features: what one raw reading weighs, to set traffic against.
    clock
        Stamps the points of what vehicles send (alerts, statuses, updates) with the time
        the gateway received them: a vehicle's clock may run in simulated time.
    retry_interval_s
        The first wait after a failed write; it doubles up to 30 s while the server is away.

    Examples
    --------
    Nothing waits for the server: records are on disk at once, and written when it answers.

    >>> import tempfile
    >>> local = Path(tempfile.mkdtemp()) / "fleet.db"
    >>> env = {"INFLUXDB_V2_ORG": "acme", "INFLUXDB_V2_TOKEN": "t"}
    >>> store = InfluxStore(InfluxSettings.from_url(
    ...     f"influx://127.0.0.1:9/fleet?local={local}", env))
    >>> store.record_rejection(0.0, "not_json", None)
    >>> store.rejection_counts(), store.outbox_stats().queued
    ({'not_json': 1}, 1)
    >>> store.close(timeout_s=0.1)
    """

    def __init__(self, settings: InfluxSettings, *, schema: Schema = VEHICLE_SCHEMA,
                 clock: Callable[[], float] = time.time, retry_interval_s: float = 1.0) -> None:
        super().__init__(settings.local_path)
        self.settings = settings
        self._reading_bytes = raw_reading_bytes(schema)
        self._clock = clock
        self._last_s = 0.0
        self._client = InfluxDBClient(url=settings.server_url, token=settings.token,
                                      org=settings.org, enable_gzip=True, timeout=10_000)
        write_api = self._client.write_api(write_options=SYNCHRONOUS)

        def send(lines: Sequence[str]) -> None:
            # Line protocol from gateway.store.schema, timed in nanoseconds: the API's default.
            write_api.write(settings.bucket, settings.org, record=list(lines))

        self.outbox = Outbox(settings.outbox_path, send, batch_size=settings.batch_size,
                             max_points=settings.max_points, retry_interval_s=retry_interval_s)

    def _stamp(self, ts_s: float | None = None) -> float:
        """``ts_s`` (default: now), moved past the previous stamp so no point overwrites
        another of its series."""
        self._last_s = max(self._clock() if ts_s is None else ts_s, self._last_s + 1e-6)
        return self._last_s

    def _queue(self, *new: Point) -> None:
        self.outbox.put([point.to_line_protocol() for point in new])

    def outbox_stats(self) -> OutboxStats:
        return self.outbox.stats()

    def record_round(self, record: RoundRecord) -> None:
        super().record_round(record)
        self._queue(points.round_point(record))

    def record_model(self, model: GlobalModel) -> None:
        super().record_model(model)
        self._queue(points.model_point(model))

    def record_alert(self, alert: Alert) -> bool:
        new = super().record_alert(alert)
        if new:  # an alert delivered again is one point, not two
            self._queue(points.alert_point(alert, self._stamp()))
        return new

    def record_status(self, status: Status) -> None:
        super().record_status(status)
        self._queue(points.status_point(status, self._stamp()))

    def record_budget(self, update: Update) -> None:
        super().record_budget(update)
        received = self._stamp()
        self._queue(points.participation_point(update, received),
                    points.privacy_point(update, received))

    def record_rejection(self, ts: float, reason: str, vehicle_id: str | None,
                         count: int = 1) -> None:
        super().record_rejection(ts, reason, vehicle_id, count)
        self._queue(points.rejection_point(self._stamp(ts), reason, count))

    def record_traffic(self, ts: float, kind: str, traffic: Traffic) -> None:
        super().record_traffic(ts, kind, traffic)
        self._queue(points.traffic_point(ts, kind, traffic, self._reading_bytes))

    def drain(self, timeout_s: float) -> bool:
        """Write everything queued now; ``True`` once the server has taken it all."""
        return self.outbox.drain(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit locally, write what the server takes within ``timeout_s``, and close."""
        super().close()
        self.outbox.close(timeout_s)
        self._client.close()
