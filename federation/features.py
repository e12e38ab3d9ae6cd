"""Feature schemas: which channels a fleet measures, their fleet-wide limits and roles.

A :class:`Schema` is part of the contract. Every device of a fleet scales a reading into
``[0, 1]`` with the *same* limits before learning, so that model summaries from different
devices describe the same space, merge exactly, and have a bounded sensitivity for
differential privacy. A feature is either an *operating condition* (engine speed, load, an
operating setting: it explains the other channels but is no fault indicator) or a *health
sensor* that watches a subsystem.

A fleet agrees on one schema out of band (the built-in :data:`VEHICLE_SCHEMA`, or a JSON
file given to the gateway and to every device); messages carry its :attr:`Schema.digest`,
so a device or gateway configured with other features or other limits is refused at once.
Limits must be public knowledge (a datasheet, or data the operator already owns), never a
statistic of the private readings being federated. :meth:`Schema.infer` derives them from
such data files.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "HEALTH_FEATURES",
    "MAX_FEATURES",
    "VEHICLE_SCHEMA",
    "Feature",
    "Schema",
    "SchemaError",
    "load_schema",
]

# A model message carries d + d^2 numbers; this keeps it well under the payload limit.
MAX_FEATURES = 40


def _is_name(value: object) -> bool:
    """1-64 printable characters without surrounding spaces (CSV headers such as
    ``Volume Flow RateRMS`` are valid names)."""
    return (isinstance(value, str) and 1 <= len(value) <= 64 and value.isprintable()
            and value == value.strip())


class SchemaError(ValueError):
    """A schema (or schema file) that cannot be used, with what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Feature:
    """One channel: its name (with unit), fleet-wide limits and the subsystem it watches.

    ``subsystem`` is ``None`` for an operating condition, and names the watched subsystem
    for a health sensor.

    >>> Feature("coolant_temp_c", 40.0, 130.0, "cooling").scale(85.0)
    0.5
    """

    name: str
    low: float
    high: float
    subsystem: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", float(self.low))  # 0 and 0.0 make the same digest
        object.__setattr__(self, "high", float(self.high))
        if not _is_name(self.name):
            raise SchemaError(f"feature name {self.name!r}: need 1-64 printable characters")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise SchemaError(f"feature {self.name}: need finite low < high, "
                              f"got [{self.low}, {self.high}]")
        if self.subsystem is not None and not _is_name(self.subsystem):
            raise SchemaError(f"feature {self.name}: subsystem {self.subsystem!r} is not a name")

    @property
    def is_health(self) -> bool:
        """Whether this channel is a fault indicator (rather than an operating condition)."""
        return self.subsystem is not None

    def scale(self, value: float) -> float:
        """Map a physical value into [0, 1], clipping at the fleet-wide limits."""
        unit = (value - self.low) / (self.high - self.low)
        return min(1.0, max(0.0, unit))


@dataclass(frozen=True)
class Schema:
    """The ordered features a fleet's devices measure and federate.

    Parameters
    ----------
    name
        A label for people (``"vehicle"``, ``"cmapss-fd001"``); not part of the digest.
    features
        The channels, in the order of every mean vector and covariance matrix.

    Examples
    --------
    >>> schema = Schema("pump", (Feature("flow_l_min", 0, 40),
    ...                          Feature("bearing_temp_c", 0, 120, "bearings")))
    >>> schema.names, schema.health
    (('flow_l_min', 'bearing_temp_c'), ('bearing_temp_c',))
    >>> schema.scale({"flow_l_min": 10.0, "bearing_temp_c": 200.0, "colour": 3.0})
    {'flow_l_min': 0.25, 'bearing_temp_c': 1.0}
    >>> Schema.from_dict(schema.to_dict()) == schema
    True
    """

    name: str
    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.features) <= MAX_FEATURES:
            raise SchemaError(f"schema {self.name}: need 1 to {MAX_FEATURES} features, "
                              f"got {len(self.features)}")
        if len(set(self.names)) != len(self.names):
            raise SchemaError(f"schema {self.name}: feature names must be unique")
        if not self.health:
            raise SchemaError(f"schema {self.name}: at least one feature must be a health "
                              "sensor (have a subsystem)")

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @cached_property
    def health(self) -> tuple[str, ...]:
        """The health sensors' names, in schema order."""
        return tuple(f.name for f in self.features if f.is_health)

    @cached_property
    def health_index(self) -> np.ndarray:
        """Positions of the health sensors in :attr:`names`."""
        return np.array([i for i, f in enumerate(self.features) if f.is_health])

    @cached_property
    def subsystems(self) -> dict[str, tuple[str, ...]]:
        """Each watched subsystem and its health sensors, in schema order."""
        groups: dict[str, tuple[str, ...]] = {}
        for f in self.features:
            if f.subsystem is not None:
                groups[f.subsystem] = (*groups.get(f.subsystem, ()), f.name)
        return groups

    @cached_property
    def digest(self) -> str:
        """A short fingerprint of the names, limits and roles: equal digests merge."""
        canon = json.dumps([[f.name, f.low, f.high, f.subsystem] for f in self.features])
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    @cached_property
    def _by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    def __len__(self) -> int:
        return len(self.features)

    def feature(self, name: str) -> Feature:
        """Look a feature up by name; ``KeyError`` if the schema has none of that name."""
        return self._by_name[name]

    @cached_property
    def _ranges(self) -> dict[str, tuple[float, float]]:
        return {f.name: (f.low, f.high - f.low) for f in self.features}

    def scale(self, values: Mapping[str, float]) -> dict[str, float]:
        """Scale the known features of a physical reading into [0, 1] as
        :meth:`Feature.scale` does (NaN to 0); drop unknown keys."""
        out, ranges = {}, self._ranges
        for name, value in values.items():  # every reading of every vehicle: no calls
            if (bounds := ranges.get(name)) is not None:
                unit = (value - bounds[0]) / bounds[1]
                out[name] = unit if 0.0 <= unit <= 1.0 else 1.0 if unit > 1.0 else 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form read by :meth:`from_dict` and :func:`load_schema`."""
        return {"name": self.name, "digest": self.digest, "features": [
            {"name": f.name, "low": f.low, "high": f.high, "subsystem": f.subsystem}
            for f in self.features]}

    @classmethod
    def from_dict(cls, obj: Any) -> Schema:
        """Build a schema from :meth:`to_dict`'s form; :class:`SchemaError` if malformed."""
        try:
            features = tuple(
                Feature(str(f["name"]), float(f["low"]), float(f["high"]), f.get("subsystem"))
                for f in obj["features"])
            schema = cls(str(obj.get("name", "custom")), features)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, SchemaError):
                raise
            raise SchemaError(f"not a schema: {type(exc).__name__}: {exc}") from None
        if "digest" in obj and obj["digest"] != schema.digest:
            raise SchemaError(f"schema {schema.name}: digest {obj['digest']!r} does not match "
                              f"its features ({schema.digest}); was the file edited?")
        return schema

    @classmethod
    def infer(
        cls,
        name: str,
        columns: Mapping[str, Sequence[float] | np.ndarray],
        *,
        conditions: Iterable[str] = (),
        subsystems: Mapping[str, str] | None = None,
        margin: float = 0.1,
    ) -> Schema:
        """A schema whose limits span the given data, widened by ``margin`` of each range.

        Columns in ``conditions`` become operating conditions; every other column is a
        health sensor watching ``subsystems[column]``, by default one subsystem named after
        the schema: sensors of one machine that wear together are judged together (see
        :class:`devices.onboard.detector.FleetGaussian`). Constant or non-finite columns carry
        nothing and are left out.

        >>> schema = Schema.infer("pump", {"setting": [0, 10], "temp": [20, 30], "id": [1, 1]},
        ...                       conditions=["setting"])
        >>> [(f.name, f.low, f.high, f.subsystem) for f in schema.features]
        [('setting', -1.0, 11.0, None), ('temp', 19.0, 31.0, 'pump')]
        """
        conditions, subsystems = set(conditions), dict(subsystems or {})
        unknown = (conditions | set(subsystems)) - set(columns)
        if unknown:
            raise SchemaError(f"schema {name}: no column named {sorted(unknown)}")
        features = []
        for column, raw in columns.items():
            values = np.asarray(raw, dtype=float)
            values = values[np.isfinite(values)]
            if values.size == 0 or values.min() == values.max():
                continue
            low, high = float(values.min()), float(values.max())
            pad = margin * (high - low)
            role = None if column in conditions else subsystems.get(column, name)
            features.append(Feature(column, low - pad, high + pad, role))
        return cls(name, tuple(features))


def load_schema(path: str | Path) -> Schema:
    """Read a schema file written from :meth:`Schema.to_dict` (JSON)."""
    try:
        obj = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SchemaError(f"cannot read schema file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"schema file {path} is not valid JSON: {exc}") from None
    try:
        return Schema.from_dict(obj)
    except SchemaError as exc:
        raise SchemaError(f"schema file {path}: {exc}") from None


VEHICLE_SCHEMA = Schema("vehicle", (
    Feature("engine_rpm", 0.0, 6000.0),
    Feature("vehicle_speed_kmh", 0.0, 160.0),
    Feature("engine_load_pct", 0.0, 100.0),
    Feature("ambient_temp_c", -30.0, 50.0),
    Feature("coolant_temp_c", 40.0, 130.0, "cooling"),
    Feature("oil_pressure_kpa", 0.0, 600.0, "lubrication"),
    Feature("battery_v", 10.0, 15.5, "charging"),
    Feature("vibration_rms_g", 0.0, 2.0, "bearings"),
    Feature("intake_temp_c", -30.0, 90.0, "intake"),
))
"""The default schema: the nine OBD-style channels of a road vehicle."""

FEATURES: tuple[Feature, ...] = VEHICLE_SCHEMA.features
FEATURE_NAMES: tuple[str, ...] = VEHICLE_SCHEMA.names
HEALTH_FEATURES: tuple[str, ...] = VEHICLE_SCHEMA.health
