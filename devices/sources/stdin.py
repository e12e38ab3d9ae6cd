"""Readings from standard input, one JSON object (or ``name=value`` line) per line.

For scripts and quick experiments: ``my-logger | fedfleet device --id veh-1 --source stdin``.
The stream is read without blocking for long, so the agent still stops promptly on Ctrl-C
while no line comes; the end of input ends the source.
"""

from __future__ import annotations

import os
import selectors
import sys
import time
from collections.abc import Callable, Iterable
from typing import BinaryIO

from devices.sources.lines import LineSource

__all__ = ["StdinSource"]


class StdinSource(LineSource):
    """Readings from a stream's lines (standard input by default), until it ends.

    Examples
    --------
    >>> import os
    >>> read_end, write_end = os.pipe()
    >>> _ = os.write(write_end, b'{"ts": 1.0, "coolant_temp_c": 90}\\nhello\\n')
    >>> os.close(write_end)
    >>> source = StdinSource(["coolant_temp_c"], stream=os.fdopen(read_end, "rb"))
    >>> source.read()
    Reading(ts_s=1.0, values={'coolant_temp_c': 90.0})
    >>> source.read(), source.finished, dict(source.rejected)
    (None, True, {'not_a_pair': 1})
    >>> source.close()
    """

    def __init__(self, channels: Iterable[str], *, stream: BinaryIO | None = None,
                 wait_s: float = 0.1, clock: Callable[[], float] = time.time) -> None:
        super().__init__("stdin", channels, clock=clock)
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._fd = self._stream.fileno()
        self._wait_s = wait_s
        self._selector = selectors.DefaultSelector()
        try:
            self._selector.register(self._fd, selectors.EVENT_READ)
        except PermissionError:  # a regular file is always readable: no need to wait
            self._selector.close()
            self._selector = None  # type: ignore[assignment]

    def _pull(self) -> bytes | None:
        if self._selector is not None and not self._selector.select(self._wait_s):
            return b""
        chunk = os.read(self._fd, 65536)
        return chunk or None

    def close(self) -> None:
        if self._selector is not None:
            self._selector.close()
        if self._stream is not sys.stdin.buffer:
            self._stream.close()
