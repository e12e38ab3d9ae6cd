"""A compose file checked and run without a Docker engine: ``docker-compose config`` validates
it, and :class:`Stack` runs its services' own scripts and commands as local processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "Stack", "compose_config", "healthy", "local"]

ROOT = Path(__file__).parent.parent


def compose_config(compose_file: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` of ``compose_file`` (in the repository) with ``env_file``."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose not found: install Debian's docker-compose (`make servers`)"
    return subprocess.run([binary, "--env-file", str(env_file), "-f", compose_file, "config"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def local(text: str, swaps: dict[str, str]) -> str:
    """A compose value with container addresses and paths swapped for this machine's."""
    for container, here in swaps.items():
        text = text.replace(container, here)
    return text.replace("$$", "$")


def healthy(command: list[str], env: dict[str, str], timeout_s: float = 15.0) -> bool:
    """Whether ``command`` (a compose health check, run here) succeeds within the timeout."""
    deadline = time.monotonic() + timeout_s
    while subprocess.run(command, env=env, capture_output=True, timeout=10).returncode != 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


class Stack:
    """The compose services run as local processes, with ``swaps`` for their addresses."""

    def __init__(self, compose: dict[str, Any], swaps: dict[str, str], workdir: Path) -> None:
        self.services = compose["services"]
        self.swaps = swaps
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def _shell(self, name: str, **extra: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
        """Run the service's own shell script here; the process and its environment."""
        service = self.services[name]
        env = {**os.environ, "PATH": f"{os.environ['PATH']}:/usr/sbin", "PYTHONPATH": str(ROOT),
               **service.get("environment", {}), **extra}
        with (self.workdir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(["sh", "-c", local(service["command"][0], self.swaps)],
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        return process, env

    def access(self, **extra: str) -> int:
        """Write the broker's setup as the one-shot service does; its exit code."""
        process, _ = self._shell("access", **extra)
        return process.wait(timeout=60)

    def mosquitto(self, name: str = "mosquitto") -> dict[str, str]:
        """Start Mosquitto with the service ``name``'s own script; its environment."""
        process, env = self._shell(name)
        self.processes.append(process)
        return env

    def fedfleet(self, name: str, **extra: str) -> dict[str, str]:
        """Start ``fedfleet`` as the service ``name`` does; its environment."""
        service = self.services[name]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
        env |= {k: local(str(v), self.swaps)
                for k, v in service.get("environment", {}).items() if k not in extra}
        command = [local(arg, self.swaps) for arg in service["command"]]
        with (self.workdir / f"{name}.log").open("wb") as log:  # for a failing test to show
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "fedfleet", *command], cwd=self.workdir, env=env,
                stdout=log, stderr=subprocess.STDOUT))
        return env

    def log(self, name: str) -> str:
        """What the ``fedfleet`` service ``name`` printed so far."""
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def health_check(self, name: str) -> list[str]:
        test = self.services[name]["healthcheck"]["test"]
        if test[0] == "CMD-SHELL":
            return ["sh", "-c", local(test[1], self.swaps)]
        return [sys.executable if test[1] == "python" else test[1],
                *(local(arg, self.swaps) for arg in test[2:])]

    def stop(self) -> list[int]:
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        return [process.returncode for process in self.processes]
