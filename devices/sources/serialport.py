"""Readings from a serial port: a microcontroller or sensor board printing one line each.

The port is anything pyserial opens: a device (``/dev/ttyUSB0``, ``COM3``) or one of its URLs
(``socket://host:port``, ``rfc2217://…``, ``loop://``). Lines follow :mod:`devices.sources.lines`. A
port that goes away (a board unplugged or reset) is reopened with backoff; readings resume
when it is back. pyserial is imported only when a serial source is opened (extra ``serial``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from devices.sources.base import SourceError, import_optional
from devices.sources.lines import LineSource

__all__ = ["SerialSource"]

log = logging.getLogger(__name__)


class SerialSource(LineSource):
    """Readings from a serial port's lines; never finishes, reopens a lost port with backoff.

    Parameters
    ----------
    port
        A pyserial port name or URL.
    channels
        The feature names the fleet's schema knows.
    baudrate
        Line speed (ignored by ``socket://`` and ``loop://``).
    wait_s
        The longest a :meth:`read` waits for bytes.

    Examples
    --------
    >>> source = SerialSource("loop://", ["battery_v", "coolant_temp_c"])
    >>> _ = source.port.write(b"battery_v=14.1 coolant_temp_c=88\\r\\nboot v2.1\\r\\n")
    >>> source.read().values
    {'battery_v': 14.1, 'coolant_temp_c': 88.0}
    >>> source.read() is None, dict(source.rejected)
    (True, {'not_a_pair': 1})
    >>> source.close()
    """

    def __init__(self, port: str, channels: Iterable[str], *, baudrate: int = 9600,
                 wait_s: float = 0.1, clock: Callable[[], float] = time.time,
                 max_backoff_s: float = 30.0) -> None:
        super().__init__(f"serial://{port}", channels, clock=clock)
        self._serial = import_optional("serial", "serial", "serial://")
        self._url, self._baudrate, self._wait_s = port, baudrate, wait_s
        self._max_backoff_s = max_backoff_s
        self._backoff_s = 0.5
        self._retry_at = 0.0
        self.reconnects = 0
        try:
            self.port: Any = self._open()
        except (self._serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(f"cannot open serial port {port!r}: {exc}") from None

    def counters(self) -> dict[str, int]:
        return super().counters() | ({"reopened": self.reconnects} if self.reconnects else {})

    def _open(self) -> Any:
        return self._serial.serial_for_url(self._url, baudrate=self._baudrate,
                                           timeout=self._wait_s)

    def _pull(self) -> bytes | None:
        if self.port is None and not self._reopen():
            return b""
        try:
            chunk: bytes = self.port.read(self.port.in_waiting or 1)
            return chunk + self.port.read(self.port.in_waiting) if chunk else chunk
        except (self._serial.SerialException, OSError) as exc:
            log.warning("%s: lost the port (%s); reopening with backoff", self.name, exc)
            self._drop_port()
            return b""

    def _reopen(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            time.sleep(min(self._wait_s, self._retry_at - now))
            return False
        try:
            self.port = self._open()
        except (self._serial.SerialException, OSError) as exc:
            self._retry_at = time.monotonic() + self._backoff_s
            log.warning("%s: cannot reopen (%s); next try in %.1f s", self.name, exc,
                        self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, self._max_backoff_s)
            return False
        log.info("%s: port open again", self.name)
        self.reconnects += 1
        self._backoff_s = 0.5
        return True

    def _drop_port(self) -> None:
        with contextlib.suppress(self._serial.SerialException, OSError):
            self.port.close()
        self.port = None
        self._retry_at = time.monotonic() + self._backoff_s

    def close(self) -> None:
        if self.port is not None:
            self.port.close()
            self.port = None
