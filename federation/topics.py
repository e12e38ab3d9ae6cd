"""The MQTT topic tree, under ``fleet/v1/``.

>>> update_topic("veh-0007")
'fleet/v1/vehicles/veh-0007/update'
>>> parse_vehicle_topic("fleet/v1/vehicles/veh-0007/alert")
('veh-0007', 'alert')
>>> parse_vehicle_topic("fleet/v1/vehicles/a/b/alert") is None
True
"""

from __future__ import annotations

import re

__all__ = [
    "ALERT",
    "GLOBAL_PREFIX",
    "MODEL_TOPIC",
    "ROOT",
    "ROUND_TOPIC",
    "STATUS",
    "UPDATE",
    "VEHICLE_KINDS",
    "alert_topic",
    "check_vehicle_id",
    "parse_vehicle_topic",
    "status_topic",
    "subscription",
    "update_topic",
]

ROOT = "fleet/v1"
GLOBAL_PREFIX = f"{ROOT}/global/"
ROUND_TOPIC = f"{GLOBAL_PREFIX}round"
MODEL_TOPIC = f"{GLOBAL_PREFIX}model"
UPDATE, ALERT, STATUS = "update", "alert", "status"
VEHICLE_KINDS = (UPDATE, ALERT, STATUS)
_VEHICLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_vehicle_id(vehicle_id: str) -> str:
    """Return ``vehicle_id`` if it is a valid id (1-64 of ``A-Za-z0-9_.-``), else raise.

    >>> check_vehicle_id("veh+1")
    Traceback (most recent call last):
    ...
    ValueError: invalid vehicle id 'veh+1': use 1-64 characters from A-Z a-z 0-9 _ . -
    """
    if not isinstance(vehicle_id, str) or not _VEHICLE_ID.fullmatch(vehicle_id):
        raise ValueError(
            f"invalid vehicle id {vehicle_id!r}: use 1-64 characters from A-Z a-z 0-9 _ . -"
        )
    return vehicle_id


def _vehicle_topic(vehicle_id: str, kind: str) -> str:
    return f"{ROOT}/vehicles/{check_vehicle_id(vehicle_id)}/{kind}"


def update_topic(vehicle_id: str) -> str:
    return _vehicle_topic(vehicle_id, UPDATE)


def alert_topic(vehicle_id: str) -> str:
    return _vehicle_topic(vehicle_id, ALERT)


def status_topic(vehicle_id: str) -> str:
    return _vehicle_topic(vehicle_id, STATUS)


def subscription(kind: str) -> str:
    """The wildcard filter for one kind of vehicle message from every vehicle."""
    return f"{ROOT}/vehicles/+/{kind}"


def parse_vehicle_topic(topic: str) -> tuple[str, str] | None:
    """Split a vehicle topic into ``(vehicle_id, kind)``; ``None`` if it is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{ROOT}/vehicles":
        return None
    if parts[4] not in VEHICLE_KINDS or not _VEHICLE_ID.fullmatch(parts[3]):
        return None
    return parts[3], parts[4]
