from __future__ import annotations

import json

import numpy as np
import pytest

from federation import messages
from federation.messages import (
    Alert,
    GlobalModel,
    MessageError,
    RoundOpen,
    Status,
    Update,
    decode,
    encode,
)
from tests import factories


def _update_obj() -> dict:
    return json.loads(encode(factories.update()))


@pytest.mark.parametrize(
    "message",
    [
        Status("veh-0001", "offline", 1.7e9),
        factories.alert(),
        RoundOpen(4, 1.7e9, 1.7e9 + 30, 2, 3),
        GlobalModel(3, 4, 20, factories.summary(), 1.7e9),
        factories.update(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_message_survives_a_round_trip(message):
    decoded = decode(type(message), encode(message))

    assert encode(decoded) == encode(message)


def test_summaries_round_trip_bit_for_bit():
    original = factories.update()

    decoded = decode(Update, encode(original))

    assert np.array_equal(decoded.summary.cov, original.summary.cov)
    assert decoded.summary.n == original.summary.n


def _mutated(**changes) -> bytes:
    obj = _update_obj()
    for path, value in changes.items():
        target = obj
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[key]
        if value is KeyError:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return json.dumps(obj).encode()


NAN_PAYLOAD = encode(factories.update()).replace(b'"epsilon":1.0', b'"epsilon":NaN')
INF_PAYLOAD = encode(factories.update()).replace(b'"epsilon":1.0', b'"epsilon":1e999')


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"x" * (messages.MAX_PAYLOAD_BYTES + 1), "too_large"),
        (b"{not json", "not_json"),
        (b"\xfe\xff", "not_json"),
        (b"\xff\xfe", "bad_binary"),  # 0xFF opens the binary form; no version 0xFE
        (b"[1, 2]", "not_object"),
        (_mutated(v=2), "bad_version"),
        (_mutated(v=KeyError), "bad_version"),
        (_mutated(round=KeyError), "missing_field"),
        (_mutated(round="1"), "wrong_type"),
        (_mutated(round=True), "wrong_type"),
        (_mutated(round=0), "out_of_range"),
        (_mutated(vehicle_id="bad/id"), "out_of_range"),
        (NAN_PAYLOAD, "not_finite"),
        (INF_PAYLOAD, "not_finite"),
        (_mutated(features=["a", "b"]), "wrong_features"),
        (_mutated(state__mean=[0.5, 0.5]), "bad_shape"),
        (_mutated(state__mean=["a"] * 9), "wrong_type"),
        (_mutated(state__cov=[[0.0] * 9] * 8), "bad_shape"),
        (_mutated(state__n=0), "out_of_range"),
        (_mutated(state__n=-5), "out_of_range"),
        (_mutated(state__mean=[1e300] * 9), "out_of_range"),
        (_mutated(delta=1.5), "out_of_range"),
        (_mutated(epsilon=True), "wrong_type"),
        (_mutated(epsilon="1.0"), "wrong_type"),
        (_mutated(epsilon=None), "wrong_type"),
        (_mutated(epsilon=KeyError), "missing_field"),
        (_mutated(epsilon=-1.0), "out_of_range"),
        (_mutated(sent_at=float("-inf")), "not_finite"),
        (_mutated(sent_at=10**13), "out_of_range"),  # a whole number, past the bound
    ],
)
def test_each_kind_of_bad_update_is_rejected_with_its_reason(payload, reason):
    with pytest.raises(MessageError) as caught:
        decode(Update, payload)

    assert caught.value.reason == reason


def test_a_whole_number_where_a_number_is_due_is_taken_as_a_float():
    update = decode(Update, _mutated(epsilon=2, sent_at=0))

    assert (update.epsilon, update.sent_at) == (2.0, 0.0)
    assert type(update.epsilon) is float


def test_an_asymmetric_covariance_is_rejected():
    obj = _update_obj()
    obj["state"]["cov"][0][1] += 0.5

    with pytest.raises(MessageError, match="symmetric"):
        decode(Update, json.dumps(obj).encode())


def test_an_alert_naming_an_unknown_sensor_is_rejected():
    obj = json.loads(encode(factories.alert()))
    obj["sensors"] = [{"name": "flux_capacitor", "z": 9.0}]

    with pytest.raises(MessageError) as caught:
        decode(Alert, json.dumps(obj).encode())

    assert caught.value.reason == "out_of_range"


def test_payloads_are_compact_json_with_a_version():
    payload = encode(factories.update())

    obj = json.loads(payload)

    assert obj["v"] == 1
    assert b" " not in payload
    assert set(obj) >= {"vehicle_id", "round", "features", "state", "epsilon", "epsilon_total"}
