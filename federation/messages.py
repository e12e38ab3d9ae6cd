"""Typed, versioned messages and their one codec.

Every payload is a UTF-8 JSON object with ``"v": 1``. :func:`decode` validates a payload
completely before anything is built from it and raises :class:`MessageError` with a short
``reason`` (used as a counter label) for anything malformed, oversized, wrongly typed,
non-finite or out of range.

Exceptions::

    ValueError
    └── MessageError          (reason: too_large, not_json, not_object, bad_version,
                               missing_field, wrong_type, out_of_range, not_finite,
                               wrong_features, bad_shape, bad_binary, malformed)

:func:`decode` raises nothing else, whatever the bytes: integers are bounded as they are
parsed (a 400-digit number is ``out_of_range``, never a float overflow), and any failure of
the checks themselves is reported as ``malformed``.

>>> status = Status(vehicle_id="veh-0001", state="online", ts=1700000000.0)
>>> encode(status)[:65]
b'{"v":1,"vehicle_id":"veh-0001","state":"online","ts":1700000000.0'
>>> decode(Status, encode(status)) == status
True
>>> decode(Status, b'{"v":1,"vehicle_id":"veh-0001","state":"online","ts":0}').privacy
'off'
>>> decode(Status, b'{"v":1,"vehicle_id":"veh-0001","state":"asleep","ts":0}')
Traceback (most recent call last):
...
federation.messages.MessageError: out_of_range: state must be one of ('online', 'offline')
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

from federation import binary
from federation.features import MAX_FEATURES, VEHICLE_SCHEMA, Feature, Schema, SchemaError
from federation.summary import ModelSummary
from federation.topics import check_vehicle_id

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PRIVACY_MODES",
    "VEHICLE_PRIVACY_MODES",
    "VERSION",
    "Alert",
    "AlertReport",
    "GlobalModel",
    "Lease",
    "Message",
    "MessageError",
    "Partial",
    "RoundOpen",
    "Status",
    "Update",
    "decode",
    "encode",
    "encode_binary",
    "load_object",
]

VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
# A partial lists the vehicles it holds: 100,000 ids of up to 64 characters, with room.
MAX_PARTIAL_BYTES = 8 * 1024 * 1024
MAX_PARTIAL_VEHICLES = 100_000
MAX_READINGS_PER_UPDATE = 10_000_000
MAX_ABS_VALUE = 1e6
# Integers with more digits than this are refused as they are parsed: no field needs more,
# and a longer one would overflow a float or reach Python's integer-conversion limit.
MAX_INT_DIGITS = 18
PRIVACY_MODES = ("local", "central", "off")  # an update's
# A vehicle's, in its status: secure aggregation releases by no update (federation/secagg/).
VEHICLE_PRIVACY_MODES = (*PRIVACY_MODES, "secagg")
_MECHANISMS = ("gaussian", "laplace", "none")


class MessageError(ValueError):
    """A payload that is not a valid message; ``reason`` names the kind of fault."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    try:
        value = obj[key]
    except KeyError:
        raise MessageError("missing_field", f"{key!r} is required") from None
    if value.__class__ is bool or not isinstance(value, kind):  # bool has no subclasses
        raise MessageError("wrong_type", f"{key!r} must be {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _int(obj: dict[str, Any], key: str, low: int = 0, high: int = 2**53) -> int:
    value = _get(obj, key, int)
    if not low <= value <= high:
        raise MessageError("out_of_range", f"{key!r} must be in [{low}, {high}], got {value}")
    return int(value)


def _num(obj: dict[str, Any], key: str, low: float = -MAX_ABS_VALUE, high: float = 1e12) -> float:
    """``obj[key]``, a number within ``[low, high]`` (both finite)."""
    value = obj.get(key)
    if value.__class__ is not float:  # a float, as most are, is taken as it is
        value = float(_get(obj, key, (int, float)))
    if not low <= value <= high:  # NaN and infinity fail this too, then the first test below
        if not math.isfinite(value):
            raise MessageError("not_finite", f"{key!r} must be finite")
        raise MessageError("out_of_range", f"{key!r} must be in [{low}, {high}], got {value}")
    return value


def _optional(obj: dict[str, Any], key: str, default: Any, parse: Callable[..., Any],
              *args: Any) -> Any:
    """``parse(obj, key, *args)`` when ``key`` is present, else ``default``."""
    return parse(obj, key, *args) if key in obj else default


def _bool(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise MessageError("wrong_type", f"{key!r} must be true or false")
    return value


def _choice(obj: dict[str, Any], key: str, options: tuple[str, ...]) -> str:
    value = _get(obj, key, str)
    if value not in options:
        raise MessageError("out_of_range", f"{key} must be one of {options}")
    return str(value)


def _vehicle(obj: dict[str, Any]) -> str:
    return _id(_get(obj, "vehicle_id", str))


def _id(value: str) -> str:
    try:
        return check_vehicle_id(value)
    except ValueError as exc:
        raise MessageError("out_of_range", str(exc)) from None


def _sensor(obj: Any, schema: Schema | None) -> tuple[str, float]:
    if not isinstance(obj, dict):
        raise MessageError("wrong_type", "each of 'sensors' must be an object")
    if schema is None:
        return _name(_get(obj, "name", str)), _num(obj, "z")
    return _choice(obj, "name", schema.names), _num(obj, "z")


def _name(value: str) -> str:
    try:
        return Feature(value, 0.0, 1.0).name
    except SchemaError as exc:
        raise MessageError("out_of_range", str(exc)) from None


def _features(obj: dict[str, Any], schema: Schema | None) -> tuple[tuple[str, ...], str]:
    """The message's feature names and schema digest, checked against the fleet's schema.

    A message without a digest (an older or hand-written client) is taken to mean the
    fleet's schema if its names match. With ``schema=None`` only the form is checked.
    """
    names = tuple(_get(obj, "features", list))
    # The fleet's own names are strings: only other names are looked at one by one.
    if (schema is None or names != schema.names) and not all(
            isinstance(name, str) for name in names):
        raise MessageError("wrong_type", "'features' must be a list of names")
    digest = obj.get("schema_digest", schema.digest if schema else "")
    if not isinstance(digest, str) or len(digest) > 64:
        raise MessageError("wrong_type", "'schema_digest' must be a string of up to 64 chars")
    if schema is None:
        if not 1 <= len(names) <= MAX_FEATURES or len(set(names)) != len(names):
            raise MessageError("wrong_features", f"need 1 to {MAX_FEATURES} distinct features")
        return tuple(_name(name) for name in names), digest
    if names != schema.names:
        raise MessageError("wrong_features", f"features must be exactly {list(schema.names)}")
    if digest != schema.digest:
        raise MessageError("wrong_features", f"schema {digest!r} is not the fleet's schema "
                           f"{schema.digest!r}: same names, other limits or roles")
    return names, digest


def _array(value: Any, shape: tuple[int, ...], key: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise MessageError("wrong_type", f"{key!r} must hold only numbers") from None
    if array.shape != shape:
        raise MessageError("bad_shape", f"{key!r} must have shape {shape}, got {array.shape}")
    # One reduction on the way every valid message takes: NaN and infinity fail it too.
    if not np.abs(array).max(initial=0.0) <= MAX_ABS_VALUE:
        if not np.isfinite(array).all():
            raise MessageError("not_finite", f"{key!r} must be finite")
        raise MessageError("out_of_range", f"{key!r} values must be within ±{MAX_ABS_VALUE:g}")
    return array


def _summary(obj: dict[str, Any], schema: Schema | None) -> tuple[ModelSummary, str]:
    features, digest = _features(obj, schema)
    state = _get(obj, "state", dict)
    d = len(features)
    n = _num(state, "n", 0, MAX_READINGS_PER_UPDATE * 1e6)
    # Lists from JSON; arrays from the binary form (federation.binary), never from JSON.
    mean = _array(_get(state, "mean", (list, np.ndarray)), (d,), "mean")
    given = _get(state, "cov", (list, np.ndarray))
    cov = _array(given, (d, d), "cov")
    # The binary form carries the upper triangle alone, so its array is symmetric as built;
    # JSON's lists are checked with np.allclose's test, written out (a fifth of its cost).
    if not isinstance(given, np.ndarray) and (
            np.abs(cov - cov.T) > 1e-12 + 1e-9 * np.abs(cov.T)).any():
        raise MessageError("bad_shape", "'cov' must be symmetric")
    return ModelSummary(features, n, mean, cov), digest


def _summary_fields(summary: ModelSummary) -> dict[str, Any]:
    return {"features": list(summary.features), "state": summary.to_state()}


@dataclass(frozen=True, slots=True)
class Status:
    """A vehicle's presence; retained, and also its Last Will (``state="offline"``).

    It also says how the vehicle protects its updates (``privacy``), what it has spent of its
    budget, and whether it has stopped publishing updates because its budget is
    ``exhausted``. The privacy fields are optional on the wire.
    """

    vehicle_id: str
    state: str
    ts: float
    privacy: str = "off"
    epsilon_total: float = 0.0
    epsilon_budget: float = 0.0
    exhausted: bool = False

    @classmethod
    def _parse(cls, obj: dict[str, Any], schema: Schema | None) -> Status:
        return cls(
            _vehicle(obj), _choice(obj, "state", ("online", "offline")), _num(obj, "ts"),
            _optional(obj, "privacy", "off", _choice, VEHICLE_PRIVACY_MODES),
            _optional(obj, "epsilon_total", 0.0, _num, 0),
            _optional(obj, "epsilon_budget", 0.0, _num, 0),
            _optional(obj, "exhausted", False, _bool),
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """A maintenance alert: the subsystem and the sensors (with z-scores) that drove it."""

    vehicle_id: str
    ts: float
    score: float
    threshold: float
    subsystem: str
    sensors: tuple[tuple[str, float], ...]
    model_version: int

    @classmethod
    def _parse(cls, obj: dict[str, Any], schema: Schema | None) -> Alert:
        sensors = _get(obj, "sensors", list)
        most = len(schema) if schema else MAX_FEATURES
        if not 1 <= len(sensors) <= most:
            raise MessageError("out_of_range", f"'sensors' must name 1 to {most} sensors")
        return cls(
            _vehicle(obj), _num(obj, "ts"), _num(obj, "score"), _num(obj, "threshold"),
            _get(obj, "subsystem", str)[:32], tuple(_sensor(s, schema) for s in sensors),
            _int(obj, "model_version"),
        )

    def _fields(self) -> dict[str, Any]:
        return {"sensors": [{"name": n, "z": z} for n, z in self.sensors]}


@dataclass(frozen=True, slots=True)
class RoundOpen:
    """The open round: what the gateway collects now, and until when (unix seconds)."""

    round: int
    opened_at: float
    deadline: float
    min_updates: int
    model_version: int
    features: tuple[str, ...] = VEHICLE_SCHEMA.names
    schema_digest: str = VEHICLE_SCHEMA.digest

    @classmethod
    def _parse(cls, obj: dict[str, Any], schema: Schema | None) -> RoundOpen:
        features, digest = _features(obj, schema)
        return cls(
            _int(obj, "round", 1), _num(obj, "opened_at"), _num(obj, "deadline"),
            _int(obj, "min_updates", 1), _int(obj, "model_version"), features, digest,
        )


@dataclass(frozen=True, slots=True)
class GlobalModel:
    """The federated model: retained on the model topic, one version per merged round."""

    version: int
    round: int
    participants: int
    summary: ModelSummary
    created_at: float
    noise_std: float = 0.0
    schema_digest: str = VEHICLE_SCHEMA.digest

    @classmethod
    def _parse(cls, obj: dict[str, Any], schema: Schema | None) -> GlobalModel:
        version, round_number = _int(obj, "version"), _int(obj, "round")
        participants = _int(obj, "participants")
        summary, digest = _summary(obj, schema)
        return cls(version, round_number, participants, summary, _num(obj, "created_at"),
                   _num(obj, "noise_std", 0), digest)

    def _fields(self) -> dict[str, Any]:
        return _summary_fields(self.summary)


@dataclass(frozen=True, slots=True)
class AlertReport:
    """A randomized-response answer to "did this vehicle raise an alert on ``day``?" (days of
    its reading clock since the epoch), and the epsilon of one answer."""

    day: int
    answer: bool
    epsilon: float

    @classmethod
    def _parse(cls, obj: Any) -> AlertReport:
        if not isinstance(obj, dict):
            raise MessageError("wrong_type", "'alert_report' must be an object")
        return cls(_int(obj, "day"), _bool(obj, "answer"), _num(obj, "epsilon", 1e-6, 50))


@dataclass(frozen=True, slots=True)
class Update:
    """A vehicle's model summary for one round, and the privacy it spent on it.

    ``privacy`` says how the summary is protected: ``"local"`` (clipped and noised by the
    vehicle with ``mechanism``), ``"central"`` (clipped only: the gateway must noise the
    aggregate with ``mechanism`` at ``epsilon``, ``delta`` and ``clip_norm``) or ``"off"``
    (exact). ``epsilon_total`` is the vehicle's composed total after this update, out of
    ``epsilon_budget``. A private update summarises everything the vehicle has learned, and
    ``replaces_readings`` says how many readings of its previous release it includes again
    (the gateway counts them once). The fields after ``noise_std`` are optional on the wire.
    """

    vehicle_id: str
    round: int
    base_version: int
    summary: ModelSummary
    epsilon: float
    delta: float
    epsilon_total: float
    sent_at: float
    noise_std: float = 0.0
    schema_digest: str = VEHICLE_SCHEMA.digest
    privacy: str = "local"
    mechanism: str = "gaussian"
    clip_norm: float = 0.0
    epsilon_budget: float = 0.0
    alert_report: AlertReport | None = None
    replaces_readings: float = 0.0

    @classmethod
    def _parse(cls, obj: dict[str, Any], schema: Schema | None) -> Update:
        vehicle, round_number = _vehicle(obj), _int(obj, "round", 1)
        base_version = _int(obj, "base_version")
        summary, digest = _summary(obj, schema)
        if not 1 <= summary.n <= MAX_READINGS_PER_UPDATE:
            raise MessageError("out_of_range", f"'n' must be in [1, {MAX_READINGS_PER_UPDATE}]")
        update = cls(
            vehicle, round_number, base_version, summary,
            _num(obj, "epsilon", 0), _num(obj, "delta", 0, 1), _num(obj, "epsilon_total", 0),
            _num(obj, "sent_at"), _num(obj, "noise_std", 0), digest,
            _optional(obj, "privacy", "local", _choice, PRIVACY_MODES),
            _optional(obj, "mechanism", "gaussian", _choice, _MECHANISMS),
            _optional(obj, "clip_norm", 0.0, _num, 0, MAX_ABS_VALUE),
            _optional(obj, "epsilon_budget", 0.0, _num, 0),
            AlertReport._parse(obj["alert_report"]) if obj.get("alert_report") is not None
            else None,
            _optional(obj, "replaces_readings", 0.0, _num, 0, MAX_READINGS_PER_UPDATE),
        )
        if update.privacy == "central" and not update.can_be_noised_centrally:
            raise MessageError("out_of_range", "a central-privacy update needs a mechanism, "
                               "epsilon > 0, 0 < delta < 1 and clip_norm > 0")
        return update

    @property
    def can_be_noised_centrally(self) -> bool:
        return (self.mechanism != "none" and self.epsilon > 0 and 0 < self.delta < 1
                and self.clip_norm > 0)

    def _fields(self) -> dict[str, Any]:
        report = self.alert_report
        return _summary_fields(self.summary) | {
            "alert_report": None if report is None else
            {"day": report.day, "answer": report.answer, "epsilon": report.epsilon}}


@dataclass(frozen=True, slots=True)
class Partial:
    """What one gateway worker (or region gateway) merged of one round: the exact merge of
    the exact updates it accepted, and which vehicles they came from, so that the coordinator
    counts no vehicle twice. Only the exact merge decomposes: everything else a worker
    forwards as it came (docs/PROTOCOL.md, *Partial aggregates*).

    ``rejected`` and ``forwarded`` count the updates of the round the worker refused and
    forwarded; ``alert_reports`` are the randomized answers its merged updates carried.

    >>> from federation.features import FEATURE_NAMES
    >>> empty = Partial("worker-1", 3, 2, (), ModelSummary.empty(FEATURE_NAMES), 0.0)
    >>> back = decode(Partial, encode(empty))
    >>> back.worker_id, back.round, back.vehicles, back.summary.n
    ('worker-1', 3, (), 0.0)
    """

    worker_id: str
    round: int
    model_version: int
    vehicles: tuple[str, ...]
    summary: ModelSummary
    sent_at: float
    rejected: int = 0
    forwarded: int = 0
    alert_reports: tuple[tuple[str, AlertReport], ...] = ()
    schema_digest: str = VEHICLE_SCHEMA.digest

    max_bytes = MAX_PARTIAL_BYTES

    @classmethod
    def _parse(cls, obj: dict[str, Any], schema: Schema | None) -> Partial:
        worker = _id(_get(obj, "worker_id", str))
        vehicles = _get(obj, "vehicles", list)
        if len(vehicles) > MAX_PARTIAL_VEHICLES:
            raise MessageError("out_of_range", f"at most {MAX_PARTIAL_VEHICLES} vehicles")
        if not all(isinstance(v, str) for v in vehicles):
            raise MessageError("wrong_type", "'vehicles' must be a list of vehicle ids")
        ids = tuple(_id(v) for v in vehicles)
        if len(set(ids)) != len(ids):
            raise MessageError("out_of_range", "'vehicles' must be distinct")
        summary, digest = _summary(obj, schema)
        if not (summary.n == 0) == (not ids) or summary.n > len(ids) * MAX_READINGS_PER_UPDATE:
            raise MessageError("out_of_range", "'n' must be 0 without vehicles, else in "
                               f"[1, {MAX_READINGS_PER_UPDATE}] per vehicle")
        reports = _get(obj, "alert_reports", list) if "alert_reports" in obj else []
        return cls(
            worker, _int(obj, "round", 1), _int(obj, "model_version"), ids, summary,
            _num(obj, "sent_at"), _int(obj, "rejected"), _int(obj, "forwarded"),
            tuple(_alert_report(r, set(ids)) for r in reports), digest,
        )

    def _fields(self) -> dict[str, Any]:
        return _summary_fields(self.summary) | {"alert_reports": [
            {"vehicle_id": v, "day": r.day, "answer": r.answer, "epsilon": r.epsilon}
            for v, r in self.alert_reports]}


def _alert_report(obj: Any, vehicles: set[str]) -> tuple[str, AlertReport]:
    report = AlertReport._parse(obj)
    vehicle = _vehicle(obj)
    if vehicle not in vehicles:
        raise MessageError("out_of_range", f"an alert report from {vehicle}, not a member")
    return vehicle, report


@dataclass(frozen=True, slots=True)
class Lease:
    """The coordinator's lease, retained on ``fleet/v1/gateway/lease``: which coordinator
    holds it, for which ``term``, and for how long without a renewal (docs/PROTOCOL.md,
    *Coordinator failover*). ``expires_at`` (Unix seconds) is for people: coordinators time
    a lease from when they hear it, not by each other's clocks.

    >>> back = decode(Lease, encode(Lease("gateway-a", 3, 10.0, 1764000040.0)))
    >>> back.holder, back.term, back.lease_seconds
    ('gateway-a', 3, 10.0)
    """

    holder: str
    term: int
    lease_seconds: float
    expires_at: float

    @classmethod
    def _parse(cls, obj: dict[str, Any], schema: Schema | None) -> Lease:
        return cls(_id(_get(obj, "holder", str)), _int(obj, "term", 1),
                   _num(obj, "lease_seconds", 0.1, 3600.0), _num(obj, "expires_at"))


Message = Status | Alert | RoundOpen | GlobalModel | Update | Partial | Lease
M = TypeVar("M", Status, Alert, RoundOpen, GlobalModel, Update, Partial, Lease)


def _object(message: Message) -> dict[str, Any]:
    obj: dict[str, Any] = {"v": VERSION}
    obj.update((f.name, getattr(message, f.name)) for f in fields(message))
    obj.pop("summary", None)
    obj.update(getattr(message, "_fields", dict)())
    return obj


def encode(message: Message) -> bytes:
    """Serialise a message to its compact JSON payload."""
    return json.dumps(_object(message), separators=(",", ":"), allow_nan=False).encode()


def encode_binary(message: Update | GlobalModel) -> bytes:
    """Serialise an update or a model to its compact binary payload (:mod:`federation.binary`:
    the summary as float64, losslessly), which :func:`decode` reads as it reads JSON.

    >>> from federation.features import FEATURE_NAMES
    >>> rows = np.random.default_rng(0).random((30, 9))
    >>> model = GlobalModel(1, 1, 4, ModelSummary.from_array(FEATURE_NAMES, rows), 1764000000.0)
    >>> len(encode(model)), len(encode_binary(model))
    (2210, 567)
    >>> back = decode(GlobalModel, encode_binary(model))
    >>> back.summary.cov.tolist() == model.summary.cov.tolist(), back.version
    (True, 1)
    """
    obj = _object(message)
    del obj["state"], obj["features"]
    summary = message.summary
    return binary.pack(obj, summary.n, summary.mean, summary.cov)


def _reject_constant(name: str) -> None:
    raise MessageError("not_finite", f"{name} is not a number JSON allows")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise MessageError("out_of_range", f"an integer of {len(text)} characters")
    return int(text)


def load_object(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """The JSON object of a payload of this protocol's version, before any field is checked;
    raise :class:`MessageError` for anything else (the first checks of :func:`decode`)."""
    if len(payload) > max_bytes:
        raise MessageError("too_large", f"{len(payload)} bytes > {max_bytes}")
    try:
        obj = json.loads(payload, parse_constant=_reject_constant, parse_int=_bounded_int)
    except MessageError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise MessageError("not_json", str(exc)[:120]) from None
    return _versioned(obj)


def _versioned(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise MessageError("not_object", "payload must be a JSON object")
    if obj.get("v") != VERSION:
        raise MessageError("bad_version", f"'v' must be {VERSION}, got {str(obj.get('v'))[:20]!r}")
    return obj


def _load_binary(kind: type[M], payload: bytes,
                 features: tuple[str, ...] | None) -> dict[str, Any]:
    """The JSON object of a binary payload: only updates and models have one, and only over
    known ``features`` (the payload names them by the schema's digest alone)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    if kind not in (Update, GlobalModel) or features is None:
        raise MessageError("bad_binary", f"no binary form of {kind.__name__} "
                           f"{'without a schema' if features is None else 'exists'}")
    try:
        return _versioned(binary.unpack(payload, features))
    except binary.BinaryError as exc:
        raise MessageError("bad_binary", str(exc)[:120]) from None


def decode(kind: type[M], payload: bytes, schema: Schema | None = VEHICLE_SCHEMA,
           features: tuple[str, ...] | None = None) -> M:
    """Validate ``payload`` (JSON, or for an update or model the binary form of
    :mod:`federation.binary`) and build a message of ``kind``; raise :class:`MessageError`.

    Feature names and the schema digest must be the fleet's ``schema``'s. ``schema=None``
    checks only their form: for reading back records a component wrote itself (a binary
    one over ``features``, which its payload does not name).
    """
    names = schema.names if schema is not None else features
    obj = (_load_binary(kind, payload, names) if binary.is_binary(payload)
           else load_object(payload, getattr(kind, "max_bytes", MAX_PAYLOAD_BYTES)))
    parse: Callable[[dict[str, Any], Schema | None], M] = kind._parse  # type: ignore[attr-defined]
    try:
        return parse(obj, schema)
    except MessageError:
        raise
    except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
        # A check that itself failed on input it did not foresee: still a rejection.
        raise MessageError("malformed", f"{type(exc).__name__}: {str(exc)[:80]}") from None
