"""The four phases' messages and their codec: JSON (``"v": 1``, binary fields in base64), or
the same fields in a compact binary form.

The gateway announces a secure round with :class:`SecureRound` (to every vehicle: the
fleet's :class:`~federation.secagg.params.SecAggConfig` for it and the phases' deadlines). The
round then runs in four phases, each a message from every vehicle to the gateway and (but the
last) one back to every vehicle:

1. **advertise keys**: :class:`Advertise` (vehicle → gateway), then :class:`Roster`
   (gateway → vehicle: its neighbours and their keys);
2. **share keys**: :class:`ShareKeys` (the Shamir shares of its self-mask seed and mask key,
   sealed for each neighbour), then :class:`SharesRelay` (the shares sealed for it);
3. **masked input**: :class:`MaskedInput` (its masked vector), then :class:`UnmaskRequest`
   (which neighbours' inputs are in the sum);
4. **unmask**: :class:`UnmaskShares` (for each neighbour, the share that unmasks the sum:
   of its self-mask seed if its input is in, of its mask key if not).

A message sent to the gateway names its sender in ``vehicle_id``; one sent by the gateway
names its recipient. Lists follow the order of the recipient's (or sender's) neighbours in
its :class:`Roster`, which is sorted by id; ``null`` marks a neighbour with nothing there.
:func:`decode` checks form only (sizes, types, ids, order); whether a message fits the round
is the state machines' check (:mod:`federation.secagg.client`, :mod:`federation.secagg.server`).
Both raise only :class:`~federation.secagg.errors.SecAggError`, whatever the bytes.

The binary form (:func:`encode_binary`; what vehicles and the gateway send in the phases) is
``0xFF 0x01`` and a MessagePack map of the same fields as the JSON object: binary fields as
MessagePack binaries, not base64, and each neighbour of a roster as the array of its fields in
order. ``0xFF`` never begins UTF-8 text, so :func:`decode` tells the forms apart by it and
checks both alike. For each neighbour, a roster's entry (with an id of 9 characters) is 79
bytes in it against 145 in JSON, a sealed pair of shares 84 against 115, an unmask share 35
against 47.

>>> hello = Advertise("veh-0001", 3, bytes(32), bytes(range(32)))
>>> encode(hello)[:60]
b'{"v":1,"kind":"advertise","vehicle_id":"veh-0001","round":3,'
>>> decode(Advertise, encode(hello)) == hello
True
>>> len(encode(hello)), len(encode_binary(hello))
(178, 136)
>>> decode(Advertise, encode_binary(hello)) == hello
True
>>> decode(Roster, encode(hello))
Traceback (most recent call last):
...
federation.secagg.errors.SecAggError: wrong_kind: expected a 'roster' message, got 'advertise'
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import msgpack

from federation.messages import (
    MAX_PAYLOAD_BYTES,
    VERSION,
    MessageError,
    _get,
    _int,
    _num,
    _optional,
    _vehicle,
    load_object,
)
from federation.secagg.errors import SecAggError
from federation.secagg.keys import KEY_BYTES, SEAL_OVERHEAD
from federation.secagg.params import MAX_DIMENSION, MAX_VEHICLES, SecAggConfig
from federation.secagg.shamir import SHARE_BYTES

__all__ = ["BINARY_MAGIC", "MAX_NEIGHBOURS", "SEALED_BYTES", "Advertise", "MaskedInput",
           "Neighbour", "Roster", "SecAggMessage", "SecureRound", "ShareKeys", "SharesRelay",
           "UnmaskRequest", "UnmaskShares", "decode", "encode", "encode_binary"]

MAX_NEIGHBOURS = 400
# A sealed share holds two shares: of the self-mask seed and of the mask key.
SEALED_BYTES = SEAL_OVERHEAD + 2 * SHARE_BYTES
_MAX_MASKED_BYTES = 48 * 1024
BINARY_MAGIC = b"\xff\x01"  # the marker byte, then the binary form's version


def _blob(value: Any, key: str, sizes: range) -> bytes:
    """A binary field: bytes in the binary form, a base64 string in JSON."""
    if isinstance(value, bytes):
        blob = value
    elif isinstance(value, bool) or not isinstance(value, str) or len(value) > 4 * sizes.stop:
        raise SecAggError("wrong_type", f"{key!r} must be a base64 string")
    else:
        try:
            blob = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SecAggError("wrong_type", f"{key!r} must be a base64 string") from None
    if len(blob) not in sizes:
        raise SecAggError("bad_shape", f"{key!r} must be {sizes.start} to {sizes.stop - 1} "
                          f"bytes, got {len(blob)}")
    return blob


def _exact(obj: dict[str, Any], key: str, size: int) -> bytes:
    return _blob(_get(obj, key, (str, bytes)), key, range(size, size + 1))


def _blobs(obj: dict[str, Any], key: str, size: int,
           optional: bool) -> tuple[bytes | None, ...]:
    items = _get(obj, key, list)
    if not 1 <= len(items) <= MAX_NEIGHBOURS:
        raise SecAggError("out_of_range", f"{key!r} must hold 1 to {MAX_NEIGHBOURS} entries")
    return tuple(None if item is None and optional
                 else _blob(item, key, range(size, size + 1)) for item in items)


def _flags(obj: dict[str, Any], key: str) -> tuple[bool, ...]:
    text = _get(obj, key, str)
    if not 1 <= len(text) <= MAX_NEIGHBOURS or set(text) - {"0", "1"}:
        raise SecAggError("wrong_type", f"{key!r} must be 1 to {MAX_NEIGHBOURS} of 0 and 1")
    return tuple(c == "1" for c in text)


@dataclass(frozen=True, slots=True)
class SecureRound:
    """The gateway → every vehicle (retained): round ``round`` is secure, about the model
    ``model_version``, under the fleet's config for it; each phase closes at its deadline
    (unix seconds: ``advertise_until``, ``share_until``, ``input_until``, then ``deadline``,
    the round's own), or earlier once every vehicle still in it has answered."""

    round: int
    model_version: int
    dimension: int
    clip_norm: float
    epsilon: float
    delta: float
    tolerated_dropout: float
    tolerated_colluders: float
    ring_bits: int
    advertise_until: float
    share_until: float
    input_until: float
    deadline: float

    @classmethod
    def about(cls, round_number: int, model_version: int, config: SecAggConfig,
              deadlines: tuple[float, float, float, float]) -> SecureRound:
        """The announcement of ``config`` for a round with these four phase deadlines."""
        return cls(round_number, model_version, config.dimension, config.clip_norm,
                   config.epsilon, config.delta, config.tolerated_dropout,
                   config.tolerated_colluders, config.ring_bits, *deadlines)

    @property
    def config(self) -> SecAggConfig:
        return SecAggConfig(self.dimension, self.clip_norm, self.epsilon, self.delta,
                            self.tolerated_dropout, self.tolerated_colluders, self.ring_bits)

    @classmethod
    def _parse(cls, obj: dict[str, Any]) -> SecureRound:
        times = [_num(obj, key, 0.0) for key in ("advertise_until", "share_until",
                                                 "input_until", "deadline")]
        if times != sorted(times):
            raise SecAggError("out_of_range", "the phases' deadlines must follow each other")
        announced = cls(_int(obj, "round", 1), _int(obj, "model_version"),
                        _int(obj, "dimension", 1, MAX_DIMENSION), _num(obj, "clip_norm", 0.0),
                        _num(obj, "epsilon", 0.0), _num(obj, "delta", 0.0, 1.0),
                        _num(obj, "tolerated_dropout", 0.0, 1.0),
                        _num(obj, "tolerated_colluders", 0.0, 1.0),
                        _int(obj, "ring_bits", 1, 64), *times)
        try:
            _ = announced.config
        except ValueError as exc:
            raise SecAggError("bad_params", str(exc)) from None
        return announced


@dataclass(frozen=True, slots=True)
class Advertise:
    """Phase 1, vehicle → gateway: the vehicle's two fresh public keys for the round."""

    vehicle_id: str
    round: int
    cipher_key: bytes
    mask_key: bytes

    @classmethod
    def _parse(cls, obj: dict[str, Any]) -> Advertise:
        return cls(_vehicle(obj), _int(obj, "round", 1), _exact(obj, "cipher_key", KEY_BYTES),
                   _exact(obj, "mask_key", KEY_BYTES))


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A neighbour in a :class:`Roster`: its id and its advertised keys."""

    vehicle_id: str
    cipher_key: bytes
    mask_key: bytes

    @classmethod
    def _parse(cls, obj: Any) -> Neighbour:
        names = _names(cls)
        if isinstance(obj, list) and len(obj) == len(names):  # the binary form's array
            obj = dict(zip(names, obj, strict=True))
        if not isinstance(obj, dict):
            raise SecAggError("wrong_type", "each of 'neighbours' must be an object")
        return cls(_vehicle(obj), _exact(obj, "cipher_key", KEY_BYTES),
                   _exact(obj, "mask_key", KEY_BYTES))


@dataclass(frozen=True, slots=True)
class Roster:
    """Phase 1, gateway → vehicle: the round's size (planned for ``vehicles``, of which
    ``advertised`` advertised keys) and the recipient's neighbours, sorted by id."""

    vehicle_id: str
    round: int
    vehicles: int
    advertised: int
    neighbours: tuple[Neighbour, ...]

    @classmethod
    def _parse(cls, obj: dict[str, Any]) -> Roster:
        entries = _get(obj, "neighbours", list)
        if not 1 <= len(entries) <= MAX_NEIGHBOURS:
            raise SecAggError("out_of_range", f"a roster lists 1 to {MAX_NEIGHBOURS} neighbours")
        neighbours = tuple(Neighbour._parse(entry) for entry in entries)
        ids = [n.vehicle_id for n in neighbours]
        if ids != sorted(set(ids)):
            raise SecAggError("bad_shape", "neighbours must be distinct and sorted by id")
        return cls(_vehicle(obj), _int(obj, "round", 1), _int(obj, "vehicles", 2, MAX_VEHICLES),
                   _int(obj, "advertised", 2, MAX_VEHICLES), neighbours)


@dataclass(frozen=True, slots=True)
class ShareKeys:
    """Phase 2, vehicle → gateway: its shares sealed for each neighbour, in roster order."""

    vehicle_id: str
    round: int
    sealed: tuple[bytes, ...]

    @classmethod
    def _parse(cls, obj: dict[str, Any]) -> ShareKeys:
        sealed = _blobs(obj, "sealed", SEALED_BYTES, optional=False)
        return cls(_vehicle(obj), _int(obj, "round", 1), tuple(b for b in sealed if b))


@dataclass(frozen=True, slots=True)
class SharesRelay:
    """Phase 2, gateway → vehicle: what each neighbour sealed for it (``None``: that
    neighbour sent no shares and is out of the round)."""

    vehicle_id: str
    round: int
    sealed: tuple[bytes | None, ...]

    @classmethod
    def _parse(cls, obj: dict[str, Any]) -> SharesRelay:
        return cls(_vehicle(obj), _int(obj, "round", 1),
                   _blobs(obj, "sealed", SEALED_BYTES, optional=True))


@dataclass(frozen=True, slots=True)
class MaskedInput:
    """Phase 3, vehicle → gateway: its masked vector (ring elements, little-endian) and the
    commitment to its self-mask seed; in the clear beside them, as in any release, the
    readings the vector summarises and those of the vehicle's last release it replaces."""

    vehicle_id: str
    round: int
    masked: bytes
    seed_digest: bytes
    readings: float = 0.0
    replaces_readings: float = 0.0

    @classmethod
    def _parse(cls, obj: dict[str, Any]) -> MaskedInput:
        masked = _blob(_get(obj, "masked", (str, bytes)), "masked",
                       range(2, _MAX_MASKED_BYTES))
        readings = _optional(obj, "readings", 0.0, _num, 0.0)
        replaces = _optional(obj, "replaces_readings", 0.0, _num, 0.0)
        if replaces > readings:
            raise SecAggError("out_of_range", "a release replaces at most its own readings")
        return cls(_vehicle(obj), _int(obj, "round", 1), masked, _exact(obj, "seed_digest", 32),
                   readings, replaces)


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    """Phase 3, gateway → vehicle: how many inputs are in the sum, and which of the
    recipient's neighbours sent one (in roster order)."""

    vehicle_id: str
    round: int
    inputs: int
    survivors: tuple[bool, ...]

    @classmethod
    def _parse(cls, obj: dict[str, Any]) -> UnmaskRequest:
        return cls(_vehicle(obj), _int(obj, "round", 1), _int(obj, "inputs", 1, MAX_VEHICLES),
                   _flags(obj, "survivors"))


@dataclass(frozen=True, slots=True)
class UnmaskShares:
    """Phase 4, vehicle → gateway: one share per neighbour, in roster order (``None`` where
    that neighbour sent it no shares); and ``noise``, the parts of its noise that the sum
    does not need (ring elements, little-endian, as a masked vector), for the gateway to
    subtract: absent (``None``) where there are none
    (:attr:`~federation.secagg.params.RoundPlan.levels`)."""

    vehicle_id: str
    round: int
    shares: tuple[bytes | None, ...]
    noise: bytes | None = None

    @classmethod
    def _parse(cls, obj: dict[str, Any]) -> UnmaskShares:
        noise = obj.get("noise")
        return cls(_vehicle(obj), _int(obj, "round", 1),
                   _blobs(obj, "shares", SHARE_BYTES, optional=True),
                   None if noise is None else _blob(noise, "noise", range(2, _MAX_MASKED_BYTES)))


SecAggMessage = (Advertise | Roster | ShareKeys | SharesRelay | MaskedInput | UnmaskRequest
                 | UnmaskShares)
S = TypeVar("S", bound=SecAggMessage | SecureRound)
KINDS: dict[type, str] = {
    SecureRound: "secure_round", Advertise: "advertise", Roster: "roster", ShareKeys: "share_keys",
    SharesRelay: "shares_relay", MaskedInput: "masked_input",
    UnmaskRequest: "unmask_request", UnmaskShares: "unmask_shares",
}


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    """The field names of dataclass ``cls``, in order (``fields`` builds them at each call)."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _wire(value: Any, binary: bool) -> Any:
    """A field's value as the JSON form (``binary`` false) or the binary form carries it."""
    if isinstance(value, bytes):
        return value if binary else base64.b64encode(value).decode()
    if isinstance(value, Neighbour):
        names = _names(Neighbour)
        if binary:  # its id and raw keys, as they are
            return [getattr(value, name) for name in names]
        return {name: _wire(getattr(value, name), binary) for name in names}
    if isinstance(value, tuple) and value and all(isinstance(v, bool) for v in value):
        return "".join("1" if v else "0" for v in value)
    if isinstance(value, tuple):
        return [_wire(v, binary) for v in value]
    return value


def _object(message: SecAggMessage | SecureRound, binary: bool) -> dict[str, Any]:
    obj: dict[str, Any] = {"v": VERSION, "kind": KINDS[type(message)]}
    for name in _names(type(message)):
        value = getattr(message, name)
        if value is not None:  # an optional field left out
            obj[name] = _wire(value, binary)
    return obj


def encode(message: SecAggMessage | SecureRound) -> bytes:
    """A message as its compact JSON payload."""
    return json.dumps(_object(message, False), separators=(",", ":"), allow_nan=False).encode()


def encode_binary(message: SecAggMessage | SecureRound) -> bytes:
    """A message in the binary form: ``0xFF 0x01``, then a MessagePack map."""
    packed: bytes = msgpack.packb(_object(message, True), use_bin_type=True)
    return BINARY_MAGIC + packed


def _load(payload: bytes) -> dict[str, Any]:
    """The message's object from either form, before any field is checked."""
    if payload[:1] != BINARY_MAGIC[:1]:
        return load_object(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SecAggError("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    if payload[:2] != BINARY_MAGIC:
        raise SecAggError("bad_binary", f"unknown binary form {payload[:2]!r}")
    try:
        obj = msgpack.unpackb(payload[2:], raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise SecAggError("bad_binary", f"no MessagePack map: {str(exc)[:80]}") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise SecAggError("bad_binary", f"a MessagePack map with \"v\": {VERSION} expected")
    return obj


def decode(kind: type[S], payload: bytes) -> S:
    """Validate ``payload`` as a message of ``kind``; raise :class:`SecAggError` otherwise."""
    try:
        obj = _load(payload)
        if obj.get("kind") != KINDS[kind]:
            raise SecAggError("wrong_kind", f"expected a {KINDS[kind]!r} message, got "
                              f"{str(obj.get('kind'))[:20]!r}")
        parse: Callable[[dict[str, Any]], S] = kind._parse  # type: ignore[assignment]
        return parse(obj)
    except SecAggError:
        raise
    except MessageError as exc:
        raise SecAggError(exc.reason, str(exc).partition(": ")[2]) from None
    except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
        raise SecAggError("malformed", f"{type(exc).__name__}: {str(exc)[:80]}") from None
