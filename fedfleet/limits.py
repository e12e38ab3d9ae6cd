"""What a process needs of the machine for its connections, raised where it may be, or named.

Every MQTT connection is an open file of the process that holds it, and takes a local port:
paho binds each client before it connects (to port 0, any address), so each connection on a
machine holds a port of its own, whichever broker it goes to. Past either limit a fleet's
extra vehicles would fail to connect one by one, each retrying, with an error that names
neither; these checks say so once, before any connects.
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

from fedfleet.config import ConfigError

__all__ = ["SPARE_FILES", "local_ports_for", "most_open_files", "open_files_for"]

# Files a process holds besides its connections: the interpreter's, the selector, logs, the
# ledgers being synced, the store.
SPARE_FILES = 64
PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def open_files_for(connections: int, what: str,
                   instead: str = "spread them over more processes") -> None:
    """Let this process, and those it starts, hold ``connections`` and :data:`SPARE_FILES`
    more open files: raise its soft limit toward the hard one if need be, or raise
    :class:`~fedfleet.config.ConfigError` if the hard limit is too low, suggesting
    ``instead``.

    >>> open_files_for(10, "ten vehicles")  # far below any limit: nothing to do
    """
    want = connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        raise ConfigError(f"{what} need {want} open files and a process here may hold {hard} "
                          f"(ulimit -Hn): raise that limit, or {instead}")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:  # a system that caps it below its hard limit
        raise ConfigError(f"{what} need {want} open files and this process may not hold "
                          f"that many: {exc}") from None


def most_open_files() -> int | None:
    """Raise this process's soft limit of open files to its hard limit (for a broker, which
    cannot know how many will connect); the limit now, ``None`` if there is none.

    >>> (most_open_files() or 1) > 0
    True
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:  # a system may cap it below its hard limit: then it stays
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def local_ports_for(connections: int, what: str, port_range: Path = PORT_RANGE) -> None:
    """Raise :class:`~fedfleet.config.ConfigError` if Linux's ephemeral ports
    (``port_range``) are fewer than ``connections`` and :data:`SPARE_FILES` more; nothing where
    the machine does not say."""
    try:
        low, high = map(int, port_range.read_text().split())
    except (OSError, ValueError):
        return
    want, ports = connections + SPARE_FILES, high - low + 1
    if ports < want:
        raise ConfigError(f"{what} need {want} local ports and {port_range} gives {ports} "
                          f"({low}-{high}): widen it as root (echo 10000 65000 > {port_range}), "
                          "or run them on more machines")
