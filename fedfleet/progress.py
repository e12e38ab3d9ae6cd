"""Live progress a person can follow, and the demo's closing summary."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO

from devices.onboard.detector import prior_weight
from devices.onboard.tuning import VEHICLE
from devices.runners.agent import AgentStatus
from devices.runners.fleet import FleetStatus
from devices.sim.faults import FaultSpec
from devices.sources import SensorSource
from federation.messages import Alert
from gateway.service import RoundClosed

__all__ = ["DeviceProgress", "Progress", "apart"]


@dataclass
class Progress:
    """Prints each closed round and each alert, and tallies them against injected faults.

    ``faults`` maps a vehicle id to its injected fault; ``sim_start_s`` is the simulated
    clock's origin, so alert times print as simulated time since the start. Without it
    (a gateway serving real vehicles) alerts print with their UTC time and no verdict.
    """

    faults: Mapping[str, FaultSpec] = field(default_factory=dict)
    sim_start_s: float | None = None  # None: real vehicles, whose alerts carry wall time
    out: TextIO = sys.stdout
    rounds: list[RoundClosed] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    fleet: FleetStatus | None = None
    _started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: Any) -> None:
        if isinstance(event, RoundClosed):
            self._round(event)
        elif isinstance(event, Alert):
            self._alert(event)
        elif isinstance(event, FleetStatus):
            self._fleet(event)

    def _print(self, line: str) -> None:
        with self._lock:
            print(f"[{time.monotonic() - self._started:7.1f} s] {line}", file=self.out, flush=True)

    def fleet_only(self, event: Any) -> None:
        """Take only fleet status: in the demo, alerts are printed as the gateway gets them."""
        if isinstance(event, FleetStatus):
            self._fleet(event)

    def _fleet(self, status: FleetStatus) -> None:
        self.fleet = status
        behind = (f", {status.lag_s:.0f} s behind the asked speed (lower --speedup)"
                  if status.lag_s >= 1 else "")
        exhausted = (f", {status.exhausted} stopped sharing (privacy budget exhausted)"
                     if status.exhausted else "")
        rejected = (f", {status.rejected} messages rejected" if status.rejected else "")
        self._print(f"fleet: {status.connected}/{status.vehicles} connected, sim "
                    f"{_hms(status.simulated_s)}{behind}, {status.updates_sent} updates sent, "
                    f"{status.alerts_raised} alerts raised{exhausted}{rejected}")

    def _round(self, event: RoundClosed) -> None:
        self.rounds.append(event)
        r = event.record
        dropped = f", {len(r.dropped)} dropped out" if r.dropped else ""
        if event.model is None:
            got = f"quorum not met ({r.accepted} updates{dropped})" if r.accepted or dropped else (
                "no releases")
            self._print(f"round {r.round}: {got}, keeping model v{r.model_version}")
            return
        noise = event.model.noise_std
        worth = prior_weight(1.0, noise, VEHICLE.prior_noise_scale)
        self._print(f"round {r.round}: {r.accepted} merged ({event.online} online, "
                    f"{r.rejected} rejected{dropped}) -> v{r.model_version}, "
                    f"{event.model.summary.n:,.0f} readings, noise {noise:.2g} (weighs "
                    f"{worth:.0%}) | alerts {len(self.alerts)}")
        if rate := _rate(event):  # a line of its own: the round's line stays short
            self._print(f"  {rate}")

    def classify(self, alert: Alert) -> str:
        """``detected`` (a fault after its onset, right subsystem), ``wrong subsystem``
        or ``false alarm`` (no fault, or before its onset)."""
        truth = self.faults.get(alert.vehicle_id)
        start_s = self.sim_start_s or 0.0
        if truth is None or alert.ts - start_s < truth.onset_s:
            return "false alarm"
        return "detected" if truth.subsystem == alert.subsystem else "wrong subsystem"

    def _alert(self, alert: Alert) -> None:
        self.alerts.append(alert)
        sensors = ", ".join(f"{name} z={z:+.1f}" for name, z in alert.sensors)
        if self.sim_start_s is None:  # no simulated clock and no ground truth to compare
            when = datetime.fromtimestamp(alert.ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            self._print(f"ALERT {alert.vehicle_id} {alert.subsystem} at {when}: {sensors}")
            return
        truth = self.faults.get(alert.vehicle_id)
        injected = f"injected {truth.mode.value} at sim {_hms(truth.onset_s)}" if truth else (
            "no fault injected")
        self._print(f"ALERT {alert.vehicle_id} {alert.subsystem} at sim "
                    f"{_hms(alert.ts - self.sim_start_s)}: {sensors} | {injected}: "
                    f"{self.classify(alert)}")

    def summary(self, update_bytes: int | None, model_bytes: int | None) -> str:
        """The closing figures of a run; the sizes are of the messages vehicles send and get
        (the binary forms, when they use them)."""
        merged = [e for e in self.rounds if e.model is not None]
        per_round = sum(e.record.accepted for e in merged) / len(merged) if merged else 0.0
        verdicts = [(a, self.classify(a)) for a in self.alerts]
        detected = {a.vehicle_id for a, v in verdicts if v == "detected"}
        false_alarms = sum(v == "false alarm" for _, v in verdicts)
        return "\n".join([
            f"rounds completed: {len(merged)} merged of {len(self.rounds)} closed, "
            f"{per_round:.1f} vehicles per merged round",
            f"alerts raised: {len(self.alerts)} ({false_alarms} false alarms)",
            f"faults injected: {len(self.faults)}; detected with the right subsystem: "
            f"{len(detected)}",
            *self._timing_summary(verdicts),
            f"update message: {_size(update_bytes)}; global model message (as vehicles get it): "
            f"{_size(model_bytes)}",
            *self._privacy_summary(merged),
        ])

    def _timing_summary(self, verdicts: list[tuple[Alert, str]]) -> list[str]:
        """How soon faults were caught, and what was caught while a vehicle could not yet have
        scored on its own readings alone: what the fleet's model bought."""
        if self.sim_start_s is None:
            return []
        start = self.sim_start_s
        first: dict[str, float] = {}
        for alert, verdict in verdicts:
            if verdict == "detected" and alert.vehicle_id not in first:
                first[alert.vehicle_id] = alert.ts - start - self.faults[alert.vehicle_id].onset_s
        alone_s = VEHICLE.min_readings  # readings once a second: a vehicle alone scores after
        early = [(a, v) for a, v in verdicts if a.ts - start < alone_s]
        lines = [f"alerts in the first {alone_s / 60:.0f} simulated minutes, before a vehicle "
                 f"alone could score: {len(early)} ({sum(v == 'detected' for _, v in early)} "
                 f"on a fault)"]
        if first:
            delays = first.values()
            lines.append(f"first detection after a fault's onset: median "
                         f"{statistics.median(delays) / 60:.0f} simulated minutes "
                         f"(fastest {min(delays) / 60:.0f}, slowest {max(delays) / 60:.0f})")
        return lines

    def _privacy_summary(self, merged: list[RoundClosed]) -> list[str]:
        lines = []
        if merged and merged[-1].model is not None:
            noise = merged[-1].model.noise_std
            lines.append(f"global model privacy noise: {noise:.3g} of its own spread; a "
                         f"vehicle counts it at "
                         f"{prior_weight(1.0, noise, VEHICLE.prior_noise_scale):.0%}")
        if self.fleet is not None and self.fleet.exhausted:
            lines.append(f"vehicles that exhausted their privacy budget: {self.fleet.exhausted}")
        rate = _rate(self.rounds[-1]) if self.rounds else ""
        if rate:
            lines.append(rate)
        return lines


def _rate(event: RoundClosed) -> str:
    if event.alert_rate is None:
        return ""
    est = event.alert_rate.estimate
    day = date(1970, 1, 1) + timedelta(days=event.alert_rate.day)
    shown = min(max(est.rate, 0.0), 1.0)  # the unbiased estimate can fall outside [0, 1]
    return (f"fleet alert rate on {day.isoformat()}, estimated from {est.answers} randomized "
            f"answers: {shown:.0%} ({est.confidence:.0%} interval {est.low:.0%} to "
            f"{est.high:.0%})")


@dataclass
class DeviceProgress:
    """Prints a device agent's alerts as it raises them, and its status every ten seconds."""

    vehicle_id: str
    out: TextIO = sys.stdout
    _started: float = field(default_factory=time.monotonic)

    def __call__(self, event: Any) -> None:
        if isinstance(event, Alert):
            sensors = ", ".join(f"{name} z={z:+.1f}" for name, z in event.sensors)
            score, threshold = apart(event.score, event.threshold)
            self._print(f"ALERT {event.subsystem}: {sensors} (score {score} over threshold "
                        f"{threshold}, model v{event.model_version})")
        elif isinstance(event, AgentStatus):
            self._print(self._status(event))

    def _print(self, line: str) -> None:
        print(f"[{time.monotonic() - self._started:7.1f} s] {line}", file=self.out, flush=True)

    def _status(self, s: AgentStatus, link: str = "") -> str:
        link = link or ("connected" if s.connected else "broker away")
        return (f"{self.vehicle_id} {link}: {s.readings} readings ({s.readings_per_s:.1f}/s, "
                f"{s.incomplete_readings} incomplete), {s.alerts_raised} alerts "
                f"({s.alerts_delivered} delivered, {s.queued} waiting, {s.dropped} dropped), "
                f"{s.updates_sent} updates ({s.updates_delivered} delivered), "
                f"model v{s.model_version}")

    def summary(self, status: AgentStatus, source: SensorSource) -> str:
        """The closing figures of a run."""
        counted = ", ".join(f"{k}: {v}" for k, v in source.counters().items()) or "none"
        elapsed_s = time.monotonic() - self._started
        return (f"{status.readings} readings in {elapsed_s:.1f} s "
                f"({status.readings / max(elapsed_s, 1e-9):.1f}/s); "
                f"{self._status(status, 'finished')}\n"
                f"source counters: {counted}")


def apart(score: float, threshold: float) -> tuple[str, str]:
    """A score and its threshold with as many decimals (1 to 4) as tell them apart.

    >>> apart(4.03, 4.0), apart(8.5, 6.0)
    (('4.03', '4.00'), ('8.5', '6.0'))
    """
    digits = 1
    while digits < 4 and f"{score:.{digits}f}" == f"{threshold:.{digits}f}":
        digits += 1
    return f"{score:.{digits}f}", f"{threshold:.{digits}f}"


def _hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _size(message_bytes: int | None) -> str:
    """A message's size, or that none was sent (federation off, or no round merged)."""
    return "none sent" if message_bytes is None else f"{message_bytes} bytes"
