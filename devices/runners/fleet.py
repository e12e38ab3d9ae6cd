"""The fleet runner: many vehicles in one process and one thread, each its own MQTT client.

Simulated time advances at ``speedup`` simulated seconds per wall second; every vehicle reads,
scores and learns one reading per simulated second. A pass steps every vehicle once; the
ledgers of the vehicles that released in it are synced together, by one group commit, before
any of the pass's updates is published. When the machine cannot
keep up, simulated time slows down instead of piling up work, and :attr:`Fleet.lag_s` says by
how many wall seconds it has fallen behind.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from devices.onboard.ledger import GroupCommit, LedgerError, PrivacyLedger
from devices.onboard.running import RunningStack
from devices.onboard.vehicle import Outgoing, Vehicle
from devices.runners.mux import ClientMux
from devices.sim.lanes import fleet_lanes
from federation.messages import Alert
from federation.privacy import Mechanism
from federation.rejections import RejectionLog
from federation.transport import MqttTarget, make_client

__all__ = ["Fleet", "FleetStatus", "simulated_vehicles"]

log = logging.getLogger(__name__)

# Work done between two looks at the network, so the fleet stays responsive.
_MAX_STEPS_PER_SLICE = 2
_STATUS_EVERY_S = 10.0
_GOODBYE_S = 5.0  # at shutdown, how long to wait for the broker to acknowledge what is sent
CONNECT_TIMEOUT_S = 10.0  # how long the first connections may take before the fleet gives up


@dataclass(frozen=True, slots=True)
class FleetStatus:
    """How the fleet is doing, reported to the observer every ten seconds."""

    connected: int
    vehicles: int
    simulated_s: float
    lag_s: float
    updates_sent: int
    alerts_raised: int
    exhausted: int = 0
    rejected: int = 0


def simulated_vehicles(
    count: int,
    seed: int,
    mechanism: Mechanism | None,
    *,
    fault_fraction: float = 0.2,
    start_ts_s: float | None = None,
    ledger_for: Callable[[str], PrivacyLedger | None] | None = None,
    id_prefix: str = "",
    indices: range | None = None,
    **vehicle_kwargs: Any,
) -> list[Vehicle]:
    """``count`` simulated vehicles with faults planned from ``seed``; ``ledger_for`` gives
    each vehicle id its privacy ledger (default: in memory, no budget). ``seed`` plans the
    simulation only: privacy noise stays secure unless ``noise`` is passed. ``id_prefix``
    goes before every id (``veh-0000`` becomes ``depot2-veh-0000``), so that fleets sharing
    a broker have ids, client ids and ledgers of their own. ``indices`` builds only those
    vehicles of the ``count`` (a process's share: the same vehicles as in the whole fleet).
    Their simulator steps them together, on arrays (:mod:`devices.sim.lanes`), and their
    detectors learn together (:class:`~devices.onboard.running.RunningStack`).

    >>> [v.vehicle_id for v in simulated_vehicles(2, 0, None, id_prefix="depot2-")]
    ['depot2-veh-0000', 'depot2-veh-0001']
    """
    start = time.time() if start_ts_s is None else start_ts_s
    sources = fleet_lanes(count, seed, fault_fraction=fault_fraction, start_ts_s=start,
                          indices=indices)
    ids = [f"{id_prefix}{source.vehicle_id}" for source in sources]
    vehicles = [
        Vehicle(vehicle_id, source, mechanism=mechanism,
                ledger=ledger_for(vehicle_id) if ledger_for else None, **vehicle_kwargs)
        for vehicle_id, source in zip(ids, sources, strict=True)
    ]
    if vehicles:  # each learns in its lane of one stack: a pass learns in one call
        stack = RunningStack(vehicles[0].schema.names, len(vehicles))
        for index, vehicle in enumerate(vehicles):
            vehicle.detector.learn_in(stack.lane(index))
    return vehicles


class Fleet:
    """Runs vehicles against a broker, one MQTT client each, all on the calling thread.

    Parameters
    ----------
    target
        The broker.
    vehicles
        The vehicles to run; each gets client id ``fedfleet-{vehicle_id}`` and a Last Will
        that marks it offline.
    speedup
        Simulated seconds per wall second.
    observer
        Called with every :class:`~federation.messages.Alert` a vehicle raises, and with a
        :class:`FleetStatus` every ten seconds and once more when the fleet has stopped.
    logins
        Each vehicle's own target (its login) by vehicle id; ``target`` for the others.

    Alerts and updates go out with QoS 1: while the broker is away they wait in each
    client's queue and go out once it is back; at shutdown the fleet waits up to 5 s for the
    broker to acknowledge everything it sent.

    :meth:`run` first waits up to ``connect_timeout_s`` for the broker to answer every
    vehicle, and raises :class:`ConnectionError` in one line if none answered or the broker
    refused any (retrying cannot help a wrong login). A broker lost later is retried; each
    distinct refusal after the start is logged once and counted in :attr:`refusals`.
    """

    def __init__(
        self,
        target: MqttTarget,
        vehicles: Sequence[Vehicle],
        *,
        speedup: float = 60.0,
        observer: Callable[[Alert | FleetStatus], None] | None = None,
        logins: Mapping[str, MqttTarget] | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        if speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        self.vehicles = list(vehicles)
        self.speedup = speedup
        self.observer = observer or (lambda alert: None)
        self.steps = 0
        self.lag_s = 0.0
        self._target = target
        self._logins = logins or {}
        self._mux = ClientMux()
        self._clients: dict[str, mqtt.Client] = {}
        self._unacknowledged: set[tuple[str, int]] = set()  # (vehicle id, packet id)
        self._connect_timeout_s = connect_timeout_s
        self._answered: set[str] = set()  # vehicles the broker accepted or refused
        self._starting = True
        self._refused: dict[str, str] = {}  # vehicle id -> why, while the fleet starts
        self.refusals: Counter[str] = Counter()  # refusals after the start, by reason
        self._failures_logged: set[str] = set()
        self.rejections = RejectionLog(log)
        self.ledgers = GroupCommit()  # the ledgers written in a pass, synced together
        for vehicle in self.vehicles:  # a message sent to every vehicle is logged once
            vehicle.rejections = self.rejections
            vehicle.ledger.group = self.ledgers

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Connect every vehicle and run until ``stop`` is set or ``duration_s`` passes."""
        try:
            for vehicle in self.vehicles:
                self._connect(vehicle)
            self._await_broker(stop)
        except BaseException:
            self._shut_down()
            raise
        started = time.monotonic()
        deadline = math.inf if duration_s is None else started + duration_s
        next_status = started + _STATUS_EVERY_S
        backlog_limit = max(_MAX_STEPS_PER_SLICE, int(self.speedup))  # a wall second's work
        try:
            while not stop.is_set() and (now := time.monotonic()) < deadline:
                if now >= next_status:
                    next_status += _STATUS_EVERY_S
                    self._log_new_failures()
                    self.observer(self.status())
                due = int((now - started) * self.speedup) - self.steps
                if due > backlog_limit:  # give the excess up: simulated time slows down
                    excess_s = (due - backlog_limit) / self.speedup
                    started += excess_s
                    self.lag_s += excess_s
                    due = backlog_limit
                for _ in range(min(max(due, 0), _MAX_STEPS_PER_SLICE)):
                    self._step_all()
                self._mux.poll(0.0 if due > _MAX_STEPS_PER_SLICE else 0.01)
        finally:
            self._shut_down()
            self.observer(self.status())  # the last word: what was sent in all

    def status(self) -> FleetStatus:
        return FleetStatus(
            self._mux.connected(), len(self.vehicles), float(self.steps), self.lag_s,
            sum(v.updates_sent for v in self.vehicles), sum(v.alerts_raised for v in self.vehicles),
            sum(v.exhausted for v in self.vehicles), sum(self.rejections.counts.values()),
        )

    def _await_broker(self, stop: threading.Event) -> None:
        """Poll until the broker has answered every vehicle; raise if it answered none in
        time, or refused any."""
        end = time.monotonic() + self._connect_timeout_s
        while (len(self._answered) < len(self.vehicles) and not stop.is_set()
               and time.monotonic() < end):
            self._mux.poll(0.01)
        if self._refused:
            first, why = next(iter(self._refused.items()))
            who = first if len(self._refused) == 1 else (
                f"{len(self._refused)} of {len(self.vehicles)} vehicles ({first} first)")
            raise ConnectionError(f"the broker refused {who}: {why}")
        if not self._answered and not stop.is_set():
            where = f"{self._target.host}:{self._target.port}"
            raise ConnectionError(f"no MQTT broker answered at {where} within "
                                  f"{self._connect_timeout_s:g} s")
        self._starting = False

    def _log_new_failures(self) -> None:
        """Log each distinct reason a connection failed once, however many vehicles hit it."""
        for reason in self._mux.failures.keys() - self._failures_logged:
            self._failures_logged.add(reason)
            log.warning("cannot reach the broker at %s; vehicles retry every %g s (logged "
                        "once)", reason, self._mux.max_backoff_s)

    def _connect(self, vehicle: Vehicle) -> None:
        will = vehicle.status("offline")
        target = self._logins.get(vehicle.vehicle_id, self._target)
        client = make_client(f"fedfleet-{vehicle.vehicle_id}", target,
                             will=(will.topic, will.payload))
        client.user_data_set(vehicle)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._clients[vehicle.vehicle_id] = client
        self._mux.add(client, target.host, target.port)

    def _on_connect(self, client: mqtt.Client, vehicle: Vehicle, flags: Any, rc: Any,
                    props: Any) -> None:
        self._answered.add(vehicle.vehicle_id)
        if rc.is_failure:
            self._refuse(vehicle.vehicle_id, str(rc))
            return
        client.subscribe(vehicle.subscriptions())
        self._send(client, vehicle.status("online"))

    def _refuse(self, vehicle_id: str, why: str) -> None:
        if self._starting:
            self._refused.setdefault(vehicle_id, why)
            return
        self.refusals[why] += 1
        if self.refusals[why] == 1:
            log.error("the broker refused %s: %s (further refusals for this reason are "
                      "counted, not logged)", vehicle_id, why)

    def _on_message(self, client: mqtt.Client, vehicle: Vehicle, msg: mqtt.MQTTMessage) -> None:
        vehicle.on_message(msg.topic, bytes(msg.payload))

    def _step_all(self) -> None:
        """One pass: step every vehicle, sending alerts at once; then sync the ledgers of the
        pass and only then publish its updates."""
        self.steps += 1
        updates: list[tuple[Vehicle, Outgoing]] = []
        for vehicle in self.vehicles:
            for out in vehicle.step():
                if out.paid_for:
                    updates.append((vehicle, out))
                    continue
                self._send(self._clients[vehicle.vehicle_id], out)
                if isinstance(out.message, Alert):
                    self.observer(out.message)
        if updates:
            self._publish_paid_for(updates)

    def _publish_paid_for(self, updates: list[tuple[Vehicle, Outgoing]]) -> None:
        """Publish ``updates`` once what they cost is on disk; if it cannot be, none of them,
        and their vehicles send no more (fail closed)."""
        try:
            self.ledgers.commit()
        except LedgerError as exc:
            for vehicle, _ in updates:
                vehicle.stop_updates(exc)
            return
        for vehicle, out in updates:
            self._send(self._clients[vehicle.vehicle_id], out)

    def _send(self, client: mqtt.Client, out: Outgoing) -> None:
        info = client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish on %s failed: %s", out.topic, mqtt.error_string(info.rc))
        elif out.qos:  # without a connection paho keeps it for the reconnect
            self._unacknowledged.add((client.user_data_get().vehicle_id, info.mid))

    def _on_publish(self, client: mqtt.Client, vehicle: Vehicle, mid: int, rc: Any,
                    props: Any) -> None:
        self._unacknowledged.discard((vehicle.vehicle_id, mid))

    def unacknowledged(self) -> int:
        """QoS 1 messages sent that the broker has yet to acknowledge."""
        return len(self._unacknowledged)

    def _shut_down(self) -> None:
        """Say goodbye: publish each vehicle offline (retained), wait for the broker to
        acknowledge everything sent, then disconnect cleanly."""
        for vehicle in self.vehicles:
            client = self._clients.get(vehicle.vehicle_id)
            if client is not None and client.is_connected():
                self._send(client, vehicle.status("offline"))
        end = time.monotonic() + _GOODBYE_S
        while self.unacknowledged() and time.monotonic() < end:
            self._mux.poll(0.01)
        if self.unacknowledged():
            log.warning("%d messages were never acknowledged by the broker and are lost",
                        self.unacknowledged())
        self._mux.flush(1.0)
        self._mux.close()
