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
    "FORWARDED",
    "GATEWAY_PREFIX",
    "GLOBAL_PREFIX",
    "LEASE_TOPIC",
    "MODEL_BINARY_TOPIC",
    "MODEL_TOPIC",
    "PARTIALS",
    "ROOT",
    "ROUND_TOPIC",
    "SECAGG",
    "SECAGG_ROUND_TOPIC",
    "STATUS",
    "UPDATE",
    "VEHICLE_KINDS",
    "alert_topic",
    "check_vehicle_id",
    "forwarded_topic",
    "parse_forwarded_topic",
    "parse_secagg_topic",
    "parse_vehicle_topic",
    "partial_topic",
    "secagg_reply_topic",
    "secagg_topic",
    "shared",
    "status_topic",
    "subscription",
    "update_topic",
]

ROOT = "fleet/v1"
GLOBAL_PREFIX = f"{ROOT}/global/"
ROUND_TOPIC = f"{GLOBAL_PREFIX}round"
MODEL_TOPIC = f"{GLOBAL_PREFIX}model"
MODEL_BINARY_TOPIC = f"{MODEL_TOPIC}/binary"  # the same model, in federation.binary's form
# Secure rounds (docs/PROTOCOL.md): the announcement (retained), each vehicle's phase
# messages up, and the gateway's answers down to each vehicle on a topic of its own.
SECAGG = "secagg"
SECAGG_ROUND_TOPIC = f"{GLOBAL_PREFIX}{SECAGG}"
# What gateway workers and region gateways send the coordinator (docs/PROTOCOL.md).
GATEWAY_PREFIX = f"{ROOT}/gateway/"
PARTIALS = f"{GATEWAY_PREFIX}partial/+"
FORWARDED = f"{GATEWAY_PREFIX}forwarded/+"
LEASE_TOPIC = f"{GATEWAY_PREFIX}lease"  # which coordinator acts, retained (gateway/lease.py)
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


def shared(group: str, topic_filter: str) -> str:
    """``topic_filter`` as a shared subscription of ``group``: the broker hands each message
    to one member of the group (MQTT 5, and Mosquitto for 3.1.1 clients too).

    >>> shared("gateways", subscription(UPDATE))
    '$share/gateways/fleet/v1/vehicles/+/update'
    """
    return f"$share/{check_vehicle_id(group)}/{topic_filter}"


def partial_topic(worker_id: str) -> str:
    """Where the worker or region gateway ``worker_id`` publishes its partial aggregates."""
    return f"{GATEWAY_PREFIX}partial/{check_vehicle_id(worker_id)}"


def forwarded_topic(vehicle_id: str) -> str:
    """Where a worker forwards ``vehicle_id``'s validated update that no partial can hold.

    >>> parse_forwarded_topic(forwarded_topic("veh-0007"))
    'veh-0007'
    """
    return f"{GATEWAY_PREFIX}forwarded/{check_vehicle_id(vehicle_id)}"


def parse_forwarded_topic(topic: str) -> str | None:
    """The vehicle id of a forwarded update's topic; ``None`` if it is not one."""
    prefix = f"{GATEWAY_PREFIX}forwarded/"
    vehicle = topic[len(prefix):] if topic.startswith(prefix) else ""
    return vehicle if _VEHICLE_ID.fullmatch(vehicle) else None


def secagg_topic(vehicle_id: str) -> str:
    """Where ``vehicle_id`` sends its messages of a secure round's phases.

    >>> parse_secagg_topic(secagg_topic("veh-0007"))
    'veh-0007'
    """
    return _vehicle_topic(vehicle_id, SECAGG)


def parse_secagg_topic(topic: str) -> str | None:
    """The vehicle id of a secure round's uplink topic; ``None`` if it is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{ROOT}/vehicles" or parts[4] != SECAGG:
        return None
    return parts[3] if _VEHICLE_ID.fullmatch(parts[3]) else None


def secagg_reply_topic(vehicle_id: str) -> str:
    """Where the gateway answers ``vehicle_id`` in a secure round (roster, relayed shares,
    unmask request): a topic only that vehicle reads.

    >>> secagg_reply_topic("veh-0007")
    'fleet/v1/secagg/veh-0007'
    """
    return f"{ROOT}/{SECAGG}/{check_vehicle_id(vehicle_id)}"
