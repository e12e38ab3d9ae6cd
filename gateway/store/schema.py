"""The time-series schema: every measurement, tag and field the gateway writes to InfluxDB.

This module is the one definition of the schema. ``docs/STORAGE.md`` documents it, the
Grafana dashboards query it, and tests check both against :data:`MEASUREMENTS`.

Following InfluxDB's schema advice, tags hold only bounded values that queries group by
(a vehicle of the fleet, a subsystem, a rejection reason, a message kind, the fleet's feature
schema); everything else is a field, and each field always has the type declared here
(``int`` or ``float``: numbers only, so every field is also readable by servers that keep no
strings). Units are in the names. Fields named after the fleet's features (the model's state,
an alert's sensors) form families with a declared prefix: ``mean__<feature>``.

>>> rejection_point(1700000000.25, "not_json").to_line_protocol()
'rejection,reason=not_json count=1i 1700000000250000000'
>>> MEASUREMENTS["model"].field_type("mean__coolant_temp_c").__name__
'float'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations_with_replacement
from types import MappingProxyType

import numpy as np
from influxdb_client import Point, WritePrecision

from federation.features import Schema
from federation.messages import Alert, GlobalModel, Status, Update
from federation.summary import ModelSummary
from gateway.store.base import RoundRecord
from gateway.store.traffic import Traffic

__all__ = [
    "MEASUREMENTS",
    "Measurement",
    "alert_point",
    "model_from_fields",
    "model_point",
    "participation_point",
    "privacy_point",
    "rejection_point",
    "round_point",
    "status_point",
    "traffic_point",
]

US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measurement: what a point means, its tags, and the type of each of its fields.

    Examples
    --------
    >>> MEASUREMENTS["status"].tags
    ('vehicle_id',)
    >>> MEASUREMENTS["status"].fields["online"].__name__
    'int'
    """

    name: str
    meaning: str
    tags: tuple[str, ...]
    fields: Mapping[str, type]
    families: Mapping[str, type] = field(default_factory=lambda: MappingProxyType({}))

    def field_type(self, key: str) -> type:
        """The declared type of field ``key``, itself or by its family; ``KeyError`` if
        neither."""
        if key in self.fields:
            return self.fields[key]
        for prefix, kind in self.families.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                return kind
        raise KeyError(f"{self.name} declares no field {key!r}")


def _mean_field(feature: str) -> str:
    return f"mean__{feature}"


def _cov_field(first: str, second: str) -> str:
    return f"cov__{first}__{second}"


def _z_field(sensor: str) -> str:
    return f"z__{sensor}"


def _measurement(name: str, meaning: str, tags: tuple[str, ...], fields: dict[str, type],
                 families: dict[str, type] | None = None) -> tuple[str, Measurement]:
    return name, Measurement(name, meaning, tags, MappingProxyType(fields),
                             MappingProxyType(families or {}))


MEASUREMENTS: Mapping[str, Measurement] = MappingProxyType(dict([
    _measurement("round", "one closed round, at its close, tagged with how its releases "
                 "were protected (secagg, central, local, off, several joined by +, or none)",
                 ("privacy",), {
        "round": int, "duration_s": float, "accepted_updates": int, "rejected_updates": int,
        "quorum_met": int, "model_version": int}),
    _measurement("model", "one global model version, at its creation; its full state is the "
                 "mean and covariance of each feature (scaled to [0, 1] by the schema's "
                 "limits), so any version can be rebuilt", ("schema_digest",), {
        "version": int, "round": int, "participants": int, "readings": float,
        "noise_std": float}, {"mean__": float, "cov__": float}),
    _measurement("alert", "one maintenance alert, when the gateway accepted it, with the "
                 "z-score of each sensor the vehicle chose to report",
                 ("vehicle_id", "subsystem"), {
        "score": float, "threshold": float, "model_version": int, "vehicle_ts_s": float},
        {"z__": float}),
    _measurement("status", "a vehicle came online (1) or went offline (0); exhausted (1) once "
                 "it stopped sending updates at its privacy budget", ("vehicle_id",), {
        "online": int, "vehicle_ts_s": float, "exhausted": int}),
    _measurement("participation", "a vehicle's update accepted into a round", ("vehicle_id",), {
        "round": int, "base_version": int, "readings": float, "noise_std": float}),
    _measurement("privacy", "the privacy a vehicle spent on an accepted update, in total, and "
                 "its budget (0: none)", ("vehicle_id",), {
        "epsilon_round": float, "delta_round": float, "epsilon_spent": float,
        "epsilon_budget": float}),
    _measurement("rejection", "messages rejected for one reason since the last point",
                 ("reason",), {"count": int}),
    _measurement("traffic", "messages and payload bytes since the previous point, by kind; "
                 "readings summarised by accepted updates, and the bytes streaming them "
                 "raw would have taken", ("kind",), {
        "messages": int, "payload_bytes": int, "readings": int, "raw_stream_bytes": int}),
]))


def _point(name: str, ts_s: float, tags: Mapping[str, str],
           fields: Mapping[str, float | int]) -> Point:
    """A point of a declared measurement, each field converted to its declared type."""
    spec = MEASUREMENTS[name]
    # Float seconds near now resolve ~0.2 us: microseconds are exact, nanoseconds noise.
    point = Point(name).time(round(ts_s * US_PER_S) * 1000, WritePrecision.NS)
    for tag in spec.tags:
        point.tag(tag, tags[tag])
    for key, value in fields.items():
        point.field(key, spec.field_type(key)(value))
    return point


def round_point(record: RoundRecord) -> Point:
    return _point("round", record.closed_at, {"privacy": record.privacy or "none"}, {
        "round": record.round, "duration_s": record.closed_at - record.opened_at,
        "accepted_updates": record.accepted, "rejected_updates": record.rejected,
        "quorum_met": record.quorum_met, "model_version": record.model_version})


def model_point(model: GlobalModel) -> Point:
    summary = model.summary
    state = {_mean_field(f): m for f, m in zip(summary.features, summary.mean, strict=True)}
    state.update((_cov_field(a, b), summary.cov[i, j]) for (i, a), (j, b) in
                 combinations_with_replacement(enumerate(summary.features), 2))
    return _point("model", model.created_at, {"schema_digest": model.schema_digest}, {
        "version": model.version, "round": model.round, "participants": model.participants,
        "readings": summary.n, "noise_std": model.noise_std, **state})


def model_from_fields(fields: Mapping[str, float], created_at: float,
                      schema: Schema) -> GlobalModel:
    """Rebuild a :class:`GlobalModel` of ``schema`` from the fields of one ``model`` point."""
    names = schema.names
    mean = np.array([fields[_mean_field(f)] for f in names])
    cov = np.empty((len(names), len(names)))
    for (i, a), (j, b) in combinations_with_replacement(enumerate(names), 2):
        cov[i, j] = cov[j, i] = fields[_cov_field(a, b)]
    summary = ModelSummary(names, float(fields["readings"]), mean, cov)
    return GlobalModel(int(fields["version"]), int(fields["round"]),
                       int(fields["participants"]), summary, created_at,
                       float(fields["noise_std"]), schema.digest)


def alert_point(alert: Alert, received_s: float) -> Point:
    return _point("alert", received_s, {
        "vehicle_id": alert.vehicle_id, "subsystem": alert.subsystem}, {
        "score": alert.score, "threshold": alert.threshold,
        "model_version": alert.model_version, "vehicle_ts_s": alert.ts,
        **{_z_field(sensor): z for sensor, z in alert.sensors}})


def status_point(status: Status, received_s: float) -> Point:
    return _point("status", received_s, {"vehicle_id": status.vehicle_id}, {
        "online": status.state == "online", "vehicle_ts_s": status.ts,
        "exhausted": status.exhausted})


def participation_point(update: Update, received_s: float) -> Point:
    return _point("participation", received_s, {"vehicle_id": update.vehicle_id}, {
        "round": update.round, "base_version": update.base_version,
        "readings": update.summary.n, "noise_std": update.noise_std})


def privacy_point(update: Update, received_s: float) -> Point:
    return _point("privacy", received_s, {"vehicle_id": update.vehicle_id}, {
        "epsilon_round": update.epsilon, "delta_round": update.delta,
        "epsilon_spent": update.epsilon_total, "epsilon_budget": update.epsilon_budget})


def rejection_point(ts_s: float, reason: str, count: int = 1) -> Point:
    return _point("rejection", ts_s, {"reason": reason}, {"count": count})


def traffic_point(ts_s: float, kind: str, traffic: Traffic, reading_bytes: int) -> Point:
    """``reading_bytes``: one raw reading as streaming would send it
    (:func:`gateway.store.traffic.raw_reading_bytes` of the fleet's schema)."""
    return _point("traffic", ts_s, {"kind": kind}, {
        "messages": traffic.messages, "payload_bytes": traffic.payload_bytes,
        "readings": traffic.readings, "raw_stream_bytes": traffic.readings * reading_bytes})
