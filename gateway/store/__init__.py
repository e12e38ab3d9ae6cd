"""Where the gateway keeps rounds, models, alerts, statuses, budgets and rejections.

:class:`Store` is the interface every backend implements, over the records of
:mod:`~gateway.store.base`; :class:`SQLiteStore` is the embedded default (one local file, or
``:memory:``); :mod:`~gateway.store.influx` adds InfluxDB 2 (its points defined in
:mod:`~gateway.store.schema`, written through :mod:`~gateway.store.outbox`).
:func:`open_store` picks a backend from a URL such as ``sqlite:///fedfleet-data/fedfleet.db``.
"""

from __future__ import annotations

from federation.features import VEHICLE_SCHEMA, Schema
from gateway.store.base import (
    Budget,
    OpenRound,
    Rollback,
    RoundRecord,
    Store,
    StoreError,
    VehicleRecord,
)
from gateway.store.sqlite import SQLiteStore, sqlite_path
from gateway.store.traffic import INVALID, Traffic, raw_reading_bytes

__all__ = [
    "INVALID",
    "Budget",
    "OpenRound",
    "Rollback",
    "RoundRecord",
    "SQLiteStore",
    "Store",
    "StoreError",
    "Traffic",
    "VehicleRecord",
    "open_store",
    "raw_reading_bytes",
    "sqlite_path",
]


def open_store(url: str, schema: Schema = VEHICLE_SCHEMA) -> Store:
    """Open the store a URL names: ``sqlite:///relative.db``, ``sqlite:////abs.db``,
    ``sqlite://:memory:``, or InfluxDB 2 with ``influx://HOST:PORT/BUCKET`` (see
    :mod:`gateway.store.influx`). ``schema`` is the fleet's, which the InfluxDB store needs to
    weigh raw readings.

    >>> open_store("redis://x")
    Traceback (most recent call last):
    ...
    ValueError: unsupported store URL 'redis://x': use sqlite:///PATH or influx://HOST:PORT/BUCKET
    """
    path = sqlite_path(url)
    if path is not None:
        return SQLiteStore(path)
    if url.startswith(("influx://", "influxs://")):
        from gateway.store.influx import InfluxSettings, InfluxStore

        return InfluxStore(InfluxSettings.from_url(url), schema=schema)
    raise ValueError(
        f"unsupported store URL {url!r}: use sqlite:///PATH or influx://HOST:PORT/BUCKET")
