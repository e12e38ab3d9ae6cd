"""Real servers that integration tests start themselves: a free port and Mosquitto."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import NoReturn

__all__ = ["Mosquitto", "ServerError", "free_port", "mosquitto_binary"]

HOST = "127.0.0.1"
_INSTALL_HINT = ("install Debian's mosquitto package: the README's test command (`make test`) "
                 "does it, or run `sudo apt-get install mosquitto mosquitto-clients`")


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


class Mosquitto:
    """A Mosquitto broker on 127.0.0.1 and a free port, with its files in a temp dir.

    By default it admits anonymous clients and keeps nothing across restarts; ``options``
    add or replace ``mosquitto.conf`` settings (for example ``acl_file``).
    """

    def __init__(self, port: int | None = None, options: Mapping[str, str] | None = None) -> None:
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="fedfleet-mosquitto-"))
        self.log_path = self._dir / "mosquitto.log"
        self._conf_path = self._dir / "mosquitto.conf"
        self._conf_path.write_text(self._config(options or {}))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

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

    def start(self, timeout_s: float = 10.0) -> None:
        """Start ``mosquitto -c`` and return once it accepts connections."""
        with self.log_path.open("wb") as log:  # startup errors go to stderr, not to log_dest
            self._process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self._conf_path)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while not self._listening():
            if self._process.poll() is not None:
                self._fail(f"exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                self._fail(f"not listening after {timeout_s:g} s")
            time.sleep(0.02)

    def _listening(self) -> bool:
        # Another process may hold the port: only the log says that Mosquitto is listening.
        if b" running" not in self.log_path.read_bytes():
            return False
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _fail(self, what: str) -> NoReturn:
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        raise ServerError(f"mosquitto on port {self.port} {what}; {self.log_path} ends:\n{tail}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker, and kill it if it has not exited within ``timeout_s``."""
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
        """Stop and start again on the same port; with persistence off, state is lost."""
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
