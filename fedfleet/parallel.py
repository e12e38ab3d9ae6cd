"""The simulated fleet across processes, so that it uses every core it is given.

Python runs one thread of bytecode at a time, so one fleet process uses one core. With
``--processes N`` the fleet's vehicles are cut into ``N`` contiguous shares; each child process
builds its own share (the same vehicles, faults and ids as in one process) and runs it with
its own MQTT clients and ledgers. The parent only prints: each child sends it its alerts and
status, and the parent prints the fleet's status once every child has reported. SIGTERM or
Ctrl-C stops every child cleanly (each says goodbye as one fleet would); a child that fails
stops the others, and the command exits with 1.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from devices.runners.fleet import FleetStatus
from fedfleet.config import LOG_FORMAT

__all__ = ["combined", "run_parts", "shares"]

log = logging.getLogger("fedfleet")

_STOP_S = 60.0  # how long a child has to say goodbye once told to stop (10,000 vehicles: ~10 s)
_POLL_S = 0.2


def shares(vehicles: int, processes: int) -> list[range]:
    """The vehicle indices of each process: contiguous, disjoint, sizes within one.

    ``processes`` 0 means one per core; never more processes than vehicles.

    >>> shares(5, 2)
    [range(0, 2), range(2, 5)]
    >>> shares(2, 4)
    [range(0, 1), range(1, 2)]
    """
    if processes < 0:
        raise ValueError(f"processes must be 0 (one per core) or more, got {processes}")
    count = min(vehicles, processes or os.cpu_count() or 1)
    bounds = [vehicles * part // count for part in range(count + 1)]
    return [range(low, high) for low, high in itertools.pairwise(bounds)]


def combined(statuses: list[FleetStatus]) -> FleetStatus:
    """The status of a fleet from its parts': counts add up, the slowest part's clock and lag.

    >>> a = FleetStatus(3, 3, 60.0, 0.0, 1, 0)
    >>> combined([a, FleetStatus(2, 2, 58.0, 2.0, 1, 1)])
    FleetStatus(connected=5, vehicles=5, simulated_s=58.0, lag_s=2.0, updates_sent=2, \
alerts_raised=1, exhausted=0, rejected=0)
    """
    return FleetStatus(
        sum(s.connected for s in statuses), sum(s.vehicles for s in statuses),
        min(s.simulated_s for s in statuses), max(s.lag_s for s in statuses),
        sum(s.updates_sent for s in statuses), sum(s.alerts_raised for s in statuses),
        sum(s.exhausted for s in statuses), sum(s.rejected for s in statuses))


# A child's work: (its share, an observer that reaches the parent, its stop event).
Part = Callable[[range, Callable[[Any], None], threading.Event], None]


def run_parts(part: Part, parts: list[range], observer: Callable[[Any], None],
              stop: threading.Event) -> int:
    """Run ``part`` on each share in a process of its own until ``stop`` is set or a child
    fails; the exit code (1 if any child failed)."""
    context = multiprocessing.get_context("spawn")  # no thread or socket of ours is copied
    events: Any = context.Queue()
    log_level = logging.getLogger().getEffectiveLevel()
    children = [context.Process(target=_child, args=(part, share, index, events, log_level),
                                name=f"fleet-{index}") for index, share in enumerate(parts)]
    for child in children:
        child.start()
    failed = _watch(children, parts, events, observer, stop)
    for child in children:
        if child.is_alive():
            child.terminate()  # SIGTERM: the child stops as a fleet stops
    for child in children:
        child.join(_STOP_S)
        if child.is_alive():
            log.error("%s did not stop within %.0f s: killed", child.name, _STOP_S)
            child.kill()
            child.join()
            failed = True
    _last_word(events, len(parts), observer)
    events.close()
    return 1 if failed or any(child.exitcode for child in children) else 0


def _watch(children: Sequence[BaseProcess], parts: list[range], events: Any,
           observer: Callable[[Any], None], stop: threading.Event) -> bool:
    """Pass events on until ``stop``; whether a child failed (and stopped the rest)."""
    latest: dict[int, FleetStatus] = {}
    while not stop.is_set():
        _deliver(events, latest, len(parts), observer, timeout_s=_POLL_S)
        for child, share in zip(children, parts, strict=True):
            if child.exitcode is not None:
                log.error("%s (vehicles %d to %d) ended with exit code %s: stopping the "
                          "others", child.name, share.start, share.stop - 1, child.exitcode)
                return True
    return False


def _deliver(events: Any, latest: dict[int, FleetStatus], parts: int,
             observer: Callable[[Any], None], timeout_s: float = 0.0) -> bool:
    """Pass one event on (a fleet status once every part has sent a new one); whether there
    was one."""
    try:
        index, event = events.get(timeout=timeout_s) if timeout_s else events.get_nowait()
    except queue.Empty:
        return False
    if not isinstance(event, FleetStatus):
        observer(event)
        return True
    latest[index] = event
    if len(latest) == parts:
        observer(combined([latest[i] for i in sorted(latest)]))
        latest.clear()
    return True


def _last_word(events: Any, parts: int, observer: Callable[[Any], None]) -> None:
    """Once the children have ended: pass on their last alerts, then the fleet's status from
    each part's last one (each part's final status, unless a part was killed)."""
    last: dict[int, FleetStatus] = {}
    while True:
        try:
            index, event = events.get_nowait()
        except queue.Empty:
            break
        if isinstance(event, FleetStatus):
            last[index] = event
        else:
            observer(event)
    if len(last) == parts:
        observer(combined([last[i] for i in sorted(last)]))


def _child(part: Part, share: range, index: int, events: Any, log_level: int) -> None:
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        part(share, lambda event: events.put((index, event)), stop)
    except Exception as exc:  # the parent names the process; this says why
        log.error("fleet-%d: %s", index, exc)
        raise SystemExit(1) from None
