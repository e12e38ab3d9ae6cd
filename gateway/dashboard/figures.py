"""The dashboard's figures, computed from a :class:`~gateway.store.Store` as plain JSON values.

Every figure comes from the store alone, so the dashboard shows the same thing whichever
backend the gateway writes to, and a restarted gateway shows the fleet's history.

Health of a vehicle, worst first: ``alert`` (it alerted more than once: a fault that persists
alerts again after each cooldown), ``watch`` (one alert), ``ok`` (online, no alert),
``offline`` (its last status said so, or none was seen).

Bytes saved: what streaming every reading would have sent, set against what federation sent.
``raw_bytes`` counts only the readings summarised by accepted updates, each once (a release
repeats its vehicle's last one, which counted already; vehicles do not learn, and so do not
count, readings taken while a fault is suspected), each as one compact JSON
message over the fleet's schema (:func:`~gateway.store.traffic.raw_reading_bytes`);
``sent_bytes`` counts every valid message received from vehicles (refused ones too, such as a
late update; binary or JSON, as they came), each round message and each binary model once per
vehicle online (a model is sent only when it changed enough: :mod:`gateway.downlink`), and
each JSON model once (``model_json``: retained for people and dashboards); payloads that are no
valid message at all (a broken or hostile client) are counted apart, as traffic of kind
``invalid``. Both leave out MQTT and TCP framing, which streaming would pay once per reading.
So the saving is a lower bound.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from gateway.store import INVALID, Store, Traffic, VehicleRecord

__all__ = ["ALERT_LIMIT", "ROUND_LIMIT", "health", "savings", "snapshot"]

ALERT_LIMIT = 50
ROUND_LIMIT = 30
REPEATED_ALERTS = 2


def health(vehicle: VehicleRecord) -> str:
    """``alert``, ``watch``, ``ok`` or ``offline`` (see the module docstring).

    >>> from gateway.store import VehicleRecord
    >>> health(VehicleRecord("veh-1", "online", 1.0, 0, None, 3, 3.0))
    'ok'
    >>> health(VehicleRecord("veh-1", "offline", 1.0, 2, None, 3, 3.0))
    'alert'
    """
    if vehicle.alerts >= REPEATED_ALERTS:
        return "alert"
    if vehicle.alerts:
        return "watch"
    return "ok" if vehicle.state == "online" else "offline"


def savings(traffic: dict[str, Traffic], reading_bytes: int) -> dict[str, Any]:
    """Bytes sent against the bytes of streaming the same readings raw, ``reading_bytes`` each.

    Payloads that were no valid message (traffic kind ``invalid``: hostile or broken clients)
    are shown by kind but are not the fleet's cost.

    >>> figures = savings({"update": Traffic(10, 20_000, 3_000), "status": Traffic(10, 700),
    ...                    "invalid": Traffic(5, 90_000)}, 250)
    >>> figures["raw_bytes"], figures["sent_bytes"], figures["saved_bytes"]
    (750000, 20700, 729300)
    """
    sent = sum(t.payload_bytes for kind, t in traffic.items() if kind != INVALID)
    readings = sum(t.readings for t in traffic.values())
    raw = readings * reading_bytes
    return {
        "by_kind": {kind: _traffic(t) for kind, t in sorted(traffic.items())},
        "readings": readings,
        "raw_reading_bytes": reading_bytes,
        "raw_bytes": raw,
        "sent_bytes": sent,
        "saved_bytes": raw - sent,
        "saved_fraction": (raw - sent) / raw if raw else None,
    }


def _traffic(traffic: Traffic) -> dict[str, int]:
    return {"messages": traffic.messages, "payload_bytes": traffic.payload_bytes,
            "readings": traffic.readings}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _vehicle(vehicle: VehicleRecord) -> dict[str, Any]:
    last = vehicle.last_alert
    return {
        "vehicle_id": vehicle.vehicle_id,
        "state": vehicle.state,
        "health": health(vehicle),
        "status_ts": vehicle.status_ts,
        "alerts": vehicle.alerts,
        "last_alert": None if last is None else {"ts": last.ts, "subsystem": last.subsystem},
        "updates": vehicle.updates,
        "epsilon_spent": _finite(vehicle.epsilon_spent),
    }


def vehicles(store: Store) -> dict[str, Any]:
    """Every vehicle with its health, how many there are of each health, and how many
    vehicles last alerted on each subsystem."""
    found = [_vehicle(v) for v in store.vehicles()]
    counts = Counter(v["health"] for v in found)
    subsystems = Counter(v["last_alert"]["subsystem"] for v in found if v["last_alert"])
    return {
        "vehicles": found,
        "health": {h: counts[h] for h in ("alert", "watch", "ok", "offline")},
        "online": sum(v["state"] == "online" for v in found),
        "by_subsystem": dict(subsystems.most_common()),
    }


def alerts(store: Store, limit: int = ALERT_LIMIT) -> list[dict[str, Any]]:
    """The newest alerts first, each naming its vehicle, subsystem and sensors."""
    return [
        {"vehicle_id": a.vehicle_id, "ts": a.ts, "subsystem": a.subsystem, "score": a.score,
         "threshold": a.threshold, "model_version": a.model_version,
         "sensors": [{"name": name, "z": z} for name, z in a.sensors]}
        for a in store.alerts(limit)
    ]


def rounds(store: Store, limit: int = ROUND_LIMIT) -> list[dict[str, Any]]:
    """The newest rounds first, each with the vehicles whose updates it accepted."""
    participants = store.participants(limit)
    return [
        {"round": r.round, "opened_at": r.opened_at, "closed_at": r.closed_at,
         "accepted": r.accepted, "rejected": r.rejected, "quorum_met": r.quorum_met,
         "model_version": r.model_version, "privacy": r.privacy,
         "participants": participants.get(r.round, [])}
        for r in store.rounds(limit)
    ]


def model(store: Store) -> dict[str, Any] | None:
    """The current global model's version and figures (not its parameters)."""
    latest = store.latest_model()
    if latest is None:
        return None
    return {"version": latest.version, "round": latest.round,
            "participants": latest.participants, "readings": latest.summary.n,
            "created_at": latest.created_at, "noise_std": latest.noise_std}


def privacy(store: Store) -> dict[str, Any]:
    """Each vehicle's epsilon spent, as its latest accepted update reported it, its budget
    (0: none), and the vehicles that stopped sending updates at their budget."""
    budgets = {v: b for v, b in sorted(store.budgets().items()) if b.updates or b.exhausted}
    spent = {v: b.epsilon_total for v, b in budgets.items() if math.isfinite(b.epsilon_total)}
    return {"epsilon_spent": spent, "max_epsilon_spent": max(spent.values(), default=None),
            "epsilon_budget": {v: b.epsilon_budget for v, b in budgets.items()},
            "exhausted": [v for v, b in budgets.items() if b.exhausted]}


def snapshot(store: Store, reading_bytes: int) -> dict[str, Any]:
    """Every figure of the dashboard at once; ``reading_bytes`` as in :func:`savings`."""
    return {
        "fleet": vehicles(store),
        "alerts": alerts(store),
        "rounds": rounds(store),
        "model": model(store),
        "privacy": privacy(store),
        "traffic": savings(store.traffic(), reading_bytes),
        "rejections": dict(sorted(store.rejection_counts().items())),
    }
