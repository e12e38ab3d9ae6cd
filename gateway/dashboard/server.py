"""The dashboard's HTTP server: the page, its figures as JSON, a live stream and ``/healthz``.

The standard library's threading HTTP server is enough for the handful of people who watch a
fleet: one thread per connection, no framework. Every figure is read from the store; a
snapshot of them all is computed at most once per ``refresh_seconds`` however many pages are
open, and pushed to each page as a server-sent event when it changes. The charting library
is Plotly's JavaScript bundle, served from the installed ``plotly`` package.

Routes (``GET`` and ``HEAD``)::

    /                       the page
    /static/<file>          its script and style, and plotly.min.js
    /api/snapshot           every figure at once
    /api/vehicles /api/alerts?limit=N /api/rounds?limit=N /api/model /api/privacy
    /api/traffic /api/rejections
    /api/events             text/event-stream: a "snapshot" event whenever a figure changes
    /healthz                200 when the store answers, 503 when it does not
"""

from __future__ import annotations

import errno
import gzip
import importlib.util
import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from federation.features import VEHICLE_SCHEMA, Schema
from gateway.dashboard import figures
from gateway.store import Store, raw_reading_bytes

__all__ = ["Dashboard", "DashboardError"]

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
MAX_LIMIT = 1000
_STATIC = resources.files("gateway.dashboard") / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}


class DashboardError(RuntimeError):
    """The dashboard could not start (for example, its port is taken)."""


def _plotly_bundle() -> Path | None:
    """``plotly.min.js`` inside the installed ``plotly`` package, found without importing it."""
    spec = importlib.util.find_spec("plotly")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        bundle = Path(folder) / "package_data" / "plotly.min.js"
        if bundle.is_file():
            return bundle
    return None


class _Snapshots:
    """The JSON of every figure, recomputed at most once per ``refresh_seconds``."""

    def __init__(self, store: Store, refresh_seconds: float, reading_bytes: int) -> None:
        self._store = store
        self._reading_bytes = reading_bytes
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._body = b""
        self._at = -float("inf")

    def get(self) -> bytes:
        with self._lock:
            if time.monotonic() - self._at >= self._refresh_seconds:
                self._body = _json(figures.snapshot(self._store, self._reading_bytes))
                self._at = time.monotonic()
            return self._body


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


class _BadRequest(ValueError):
    pass


def _limit(query: dict[str, list[str]], default: int) -> int:
    values = query.get("limit", [str(default)])
    try:
        limit = int(values[-1])
    except ValueError:
        raise _BadRequest(f"limit must be an integer, got {values[-1]!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _BadRequest(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that never finishes its request does not hold a thread for ever

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            self._route(url.path, parse_qs(url.query))
        except _BadRequest as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a failing store must not take the server down
            log.exception("dashboard: %s failed", url.path)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)[:200]})

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        store = self.server.store
        apis: dict[str, Callable[[], Any]] = {
            "/api/vehicles": lambda: figures.vehicles(store),
            "/api/alerts": lambda: figures.alerts(store, _limit(query, figures.ALERT_LIMIT)),
            "/api/rounds": lambda: figures.rounds(store, _limit(query, figures.ROUND_LIMIT)),
            "/api/model": lambda: figures.model(store),
            "/api/privacy": lambda: figures.privacy(store),
            "/api/traffic": lambda: figures.savings(store.traffic(), self.server.reading_bytes),
            "/api/rejections": lambda: store.rejection_counts(),
        }
        if path in apis:
            self._send_json(HTTPStatus.OK, apis[path]())
        elif path == "/api/snapshot":
            self._send(HTTPStatus.OK, self.server.snapshots.get(), "application/json")
        elif path == "/api/events":
            self._stream()
        elif path == "/healthz":
            self._health()
        elif path == "/":
            self._static("index.html")
        elif path.startswith("/static/"):
            self._static(path.removeprefix("/static/"))
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path[:100]}"})

    def _send(self, status: HTTPStatus, body: bytes, kind: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {"Cache-Control": "no-cache"}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: HTTPStatus, value: Any) -> None:
        self._send(status, _json(value), "application/json")

    def _health(self) -> None:
        try:
            self.server.store.rounds(1)
        except Exception as exc:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "failing",
                                                             "error": str(exc)[:200]})
            return
        self._send_json(HTTPStatus.OK, {"status": "ok",
                                        "store": type(self.server.store).__name__})

    def _static(self, name: str) -> None:
        if name == "plotly.min.js":
            return self._plotly()
        suffix = Path(name).suffix
        resource = _STATIC / name
        if "/" in name or suffix not in _TYPES or not resource.is_file():
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such file: {name[:100]}"})
            return
        self._send(HTTPStatus.OK, resource.read_bytes(), _TYPES[suffix])

    def _plotly(self) -> None:
        body = self.server.plotly_gzip()
        if body is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "the plotly package is not installed"})
            return
        headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
        else:
            body = gzip.decompress(body)
        self._send(HTTPStatus.OK, body, _TYPES[".js"], headers)

    def _stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        stopping, snapshots = self.server.stopping, self.server.snapshots
        sent, quiet_since = b"", time.monotonic()
        while not stopping.is_set():
            try:
                body = snapshots.get()
            except Exception as exc:  # the page keeps its figures and the stream goes on
                log.warning("dashboard: cannot read the store: %s", exc)
                body = sent
            if body != sent:
                self.wfile.write(b"event: snapshot\ndata: " + body + b"\n\n")
                sent, quiet_since = body, time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                self.wfile.write(b": keepalive\n\n")  # also finds out that a page has gone
                quiet_since = time.monotonic()
            self.wfile.flush()
            stopping.wait(self.server.refresh_seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: Store, refresh_seconds: float,
                 schema: Schema) -> None:
        super().__init__(address, _Handler)
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.reading_bytes = raw_reading_bytes(schema)
        self.snapshots = _Snapshots(store, refresh_seconds, self.reading_bytes)
        self.stopping = threading.Event()
        self._plotly: bytes | None = None
        self._plotly_lock = threading.Lock()

    def plotly_gzip(self) -> bytes | None:
        """The Plotly bundle, gzipped once (about a third of its 4.8 MB) on first request."""
        with self._plotly_lock:
            if self._plotly is None and (bundle := _plotly_bundle()) is not None:
                self._plotly = gzip.compress(bundle.read_bytes(), compresslevel=6)
            return self._plotly


class Dashboard:
    """The web dashboard of a store, served on a thread of its own until :meth:`stop`.

    Parameters
    ----------
    store
        Where the figures come from: the store the gateway writes.
    host, port
        Where to listen; port 0 takes any free port (see :attr:`url`).
    refresh_seconds
        How often the live stream looks for changed figures.
    schema
        The fleet's features: what one raw reading would weigh, for the bytes saved.

    Examples
    --------
    >>> import json, urllib.request
    >>> from gateway.store import SQLiteStore
    >>> with Dashboard(SQLiteStore(":memory:"), port=0) as dashboard:
    ...     with urllib.request.urlopen(dashboard.url + "api/vehicles", timeout=5) as reply:
    ...         json.load(reply)
    {'vehicles': [], 'health': {'alert': 0, 'watch': 0, 'ok': 0, 'offline': 0}, 'online': 0, \
'by_subsystem': {}}
    """

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 8080,
                 refresh_seconds: float = 1.0, schema: Schema = VEHICLE_SCHEMA) -> None:
        if refresh_seconds <= 0:
            raise ValueError("refresh_seconds must be > 0")
        try:
            self._server = _Server((host, port), store, refresh_seconds, schema)
        except OSError as exc:
            taken = exc.errno == errno.EADDRINUSE
            why = f"port {port} is already in use" if taken else exc.strerror or str(exc)
            raise DashboardError(
                f"cannot serve the dashboard on http://{host}:{port}/: {why}; choose another "
                "port with --http-port, or 0 to run without the dashboard") from None
        if _plotly_bundle() is None:
            log.error("the plotly package is not installed: the dashboard has no charts")
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name="dashboard")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> Dashboard:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving: live streams end, the listening socket closes."""
        self._server.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout_s)
        self._server.server_close()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
