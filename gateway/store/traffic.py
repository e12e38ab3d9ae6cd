"""Traffic arithmetic: messages and bytes by kind, and what streaming one reading would cost.

The gateway counts what vehicles send (:class:`Traffic`); the dashboard and the InfluxDB
store set it against :func:`raw_reading_bytes`, the size of one reading streamed raw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from federation.features import VEHICLE_SCHEMA, Schema

__all__ = ["INVALID", "Traffic", "raw_reading_bytes"]

INVALID = "invalid"  # the traffic kind of payloads that are no valid message of the protocol


@dataclass(frozen=True, slots=True)
class Traffic:
    """Messages of one kind and their payload bytes; ``readings`` that accepted updates summarised.

    >>> Traffic(2, 300, 60) + Traffic(1, 100)
    Traffic(messages=3, payload_bytes=400, readings=60)
    """

    messages: int
    payload_bytes: int
    readings: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.messages + other.messages, self.payload_bytes + other.payload_bytes,
                       self.readings + other.readings)


def raw_reading_bytes(schema: Schema = VEHICLE_SCHEMA) -> int:
    """One reading as a streaming client would publish it: compact JSON, two decimals.

    >>> raw_reading_bytes()
    266
    """
    reading = {
        "v": 1, "vehicle_id": "veh-0001", "ts": 1_700_000_000.0,
        "values": {f.name: round((f.low + f.high) / 2 + 0.123, 2) for f in schema.features},
    }
    return len(json.dumps(reading, separators=(",", ":")))
