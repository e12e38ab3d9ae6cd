"""Real servers that integration tests start themselves: Mosquitto, victoria-metrics, and an
ELM327 adapter with a car behind it (the PyPI package ``ELM327-emulator``)."""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

__all__ = ["Elm327Emulator", "Mosquitto", "ServerError", "VictoriaMetrics", "free_port",
           "mosquitto_binary"]

HOST = "127.0.0.1"
_INSTALL_HINT = ("install Debian's mosquitto package: the README's test command (`make test`) "
                 "does it, or run `sudo apt-get install mosquitto mosquitto-clients`")


# Linux's prctl, resolved here and not in the child: between fork and exec a child of a
# threaded process may only call what is loaded already.
_PRCTL = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``subprocess.Popen(preexec_fn=...)``: Linux sends the child SIGTERM when the process
    that started it dies, ``kill -9`` included, so that a test run or a benchmark killed midway
    leaves no broker, gateway or fleet behind. Nothing where there is no prctl."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerError(RuntimeError):
    """A test server is missing, or did not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def mosquitto_binary(name: str = "mosquitto") -> str:
    """The path of a program from Debian's mosquitto package; :class:`ServerError` if missing."""
    # Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH.
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        raise ServerError(f"{name} not found on PATH or in /usr/sbin; {_INSTALL_HINT}")
    return found


class _Server:
    """A server process on 127.0.0.1 and a free port, with its files in a temp dir."""

    name = "server"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix=f"fedfleet-{self.name}-"))
        self.log_path = self._dir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (a benchmark reads its CPU time)."""
        return self._process.pid if self._process is not None else None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and return once it answers."""
        with self.log_path.open("ab") as log:  # startup errors go to stderr
            # In its own dir: a server may drop files where it runs (the emulator's elm.log).
            self._process = subprocess.Popen(self._command(), stdout=log, stderr=log,
                                             cwd=self._dir, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self._process.poll() is not None:
                self._fail(f"exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                self._fail(f"not ready after {timeout_s:g} s")
            time.sleep(0.02)

    def _fail(self, what: str) -> NoReturn:
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        raise ServerError(f"{self.name} on port {self.port} {what}; {self.log_path} ends:\n{tail}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the server, and kill it if it has not exited within ``timeout_s``."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout_s)
        self._process = None

    def restart(self, timeout_s: float = 10.0) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class Mosquitto(_Server):
    """A Mosquitto broker on 127.0.0.1 and a free port, with its files in a temp dir.

    By default it admits anonymous clients and keeps nothing across restarts; ``persistent``
    keeps retained messages, sessions and their queued messages across a :meth:`restart`, as
    the configuration ``fedfleet broker-setup`` writes does. ``options`` add or replace
    ``mosquitto.conf`` settings (for example ``acl_file``). ``conf`` runs a given
    ``mosquitto.conf`` instead (such as ``fedfleet broker-setup`` writes), whose listener on
    127.0.0.1 is ``port``, TLS if ``tls``; its log goes to the temp dir too.
    """

    name = "mosquitto"

    def __init__(self, port: int | None = None, options: Mapping[str, str] | None = None,
                 conf: Path | None = None, tls: bool = False, persistent: bool = False) -> None:
        super().__init__(port)
        self._conf_path = self._dir / "mosquitto.conf"
        self.tls = tls
        kept = {"persistence": "true", "persistence_location": f"{self._dir}/"}
        text = self._config({**(kept if persistent else {}), **(options or {})}) if (
            conf is None) else f"{conf.read_text()}\nlog_dest file {self.log_path}\n"
        self._conf_path.write_text(text)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self.port}"

    def _config(self, options: Mapping[str, str]) -> str:
        settings = {
            "allow_anonymous": "true",
            "persistence": "false",
            # As root, Mosquitto would switch to the "mosquitto" user, who cannot read the
            # temp dir; as anyone else this setting is ignored.
            "user": pwd.getpwuid(os.geteuid()).pw_name,
            "log_dest": f"file {self.log_path}",
            "log_type": "all",
            **options,
        }
        lines = [f"listener {self.port} {HOST}", *(f"{k} {v}" for k, v in settings.items())]
        return "\n".join(lines) + "\n"

    def _command(self) -> list[str]:
        self.log_path.write_bytes(b"")  # "running" must come from this start
        return [mosquitto_binary(), "-c", str(self._conf_path)]

    def _ready(self) -> bool:
        # Another process may hold the port: only the log says that Mosquitto is listening.
        if b" running" not in self.log_path.read_bytes():
            return False
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False


class VictoriaMetrics(_Server):
    """Debian's victoria-metrics on 127.0.0.1 and a free port: it takes the InfluxDB v2 write
    API (``/api/v2/write``) and gives points back through ``/api/v1/export``.

    Its data stays in the temp dir across :meth:`restart`.
    """

    name = "victoria-metrics"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        binary = shutil.which("victoria-metrics")
        if binary is None:
            raise ServerError("victoria-metrics not found on PATH; install Debian's "
                              "victoria-metrics package (`make test` does it)")
        return [binary, f"-httpListenAddr={HOST}:{self.port}",
                f"-storageDataPath={self._dir / 'data'}", "-retentionPeriod=100y",
                "-loggerOutput=stderr"]

    def _get(self, path: str, timeout_s: float = 5.0) -> bytes:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout_s) as response:
            return bytes(response.read())

    def _ready(self) -> bool:
        try:
            return self._get("/health", timeout_s=0.5) == b"OK"
        except OSError:
            return False

    def export(self, match: str = '{__name__=~".+"}') -> list[dict[str, Any]]:
        """Every series matching ``match``, with all its samples, once they are searchable."""
        self._get("/internal/force_flush")
        query = urllib.parse.urlencode({"match[]": match})
        body = self._get(f"/api/v1/export?{query}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def samples(self, match: str = '{__name__=~".+"}') -> int:
        """How many samples the series matching ``match`` hold in all."""
        return sum(len(series["values"]) for series in self.export(match))


class Elm327Emulator(_Server):
    """ELM327-emulator's ``car`` scenario in batch mode, listening on 127.0.0.1 and a port.

    A client reaches it as ``socket://127.0.0.1:PORT``; it serves one client at a time, and
    waits for the next when a client hangs up.
    """

    name = "elm327"

    @property
    def url(self) -> str:
        return f"socket://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "elm", "-s", "car", "-n", str(self.port),
                "-b", str(self._dir / "batch.log")]

    def _ready(self) -> bool:
        try:  # the emulator goes back to waiting once this probe hangs up
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """Kill the emulator at once, as a pulled adapter vanishes."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None
