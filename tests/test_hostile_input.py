"""No bytes from the network end a process: the codec raises only its own error, and every
handler counts what it cannot use as a rejection with a reason.

Property-based: Hypothesis generates raw bytes, arbitrary JSON, and valid messages with one
part replaced by anything JSON can hold (huge integers, deep nesting, wrong types).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.onboard.vehicle import Vehicle
from devices.sim.simulator import SimulatedVehicle
from federation import messages, topics
from federation.messages import Alert, GlobalModel, MessageError, RoundOpen, Status, Update
from federation.transport import MqttTarget
from gateway.service import Gateway
from gateway.store import SQLiteStore
from tests import factories

KINDS = (Status, Alert, RoundOpen, GlobalModel, Update)
VALID = {
    Status: Status("veh-0001", "online", 1.7e9),
    Alert: factories.alert(),
    RoundOpen: RoundOpen(4, 1.7e9, 1.7e9 + 30, 2, 3),
    GlobalModel: GlobalModel(3, 4, 20, factories.summary(), 1.7e9),
    Update: factories.update(),
}

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(),
    st.sampled_from([0, -1, 2**53 + 1, 10**19, 10**308, -(10**400), 1e308, -1e308, 5e-324]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=10),
                            st.dictionaries(st.text(max_size=10), inner, max_size=10)),
    max_leaves=40,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and list position in ``obj``, as paths from the top."""
    found = []
    if not isinstance(obj, dict | list):
        return []
    for key, value in obj.items() if isinstance(obj, dict) else enumerate(obj):
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


@st.composite
def mutated_payloads(draw: st.DrawFn) -> tuple[type, bytes]:
    """A valid message of some kind with one value replaced by any JSON value."""
    kind = draw(st.sampled_from(KINDS))
    obj = json.loads(messages.encode(VALID[kind]))
    path = draw(st.sampled_from(_paths(obj)))
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(st.one_of(numbers, json_values))
    return kind, json.dumps(obj).encode()


def _decodes_or_rejects(kind: type, payload: bytes) -> None:
    try:
        messages.decode(kind, payload)
    except MessageError as exc:
        assert exc.reason


D = len(VALID[Update].summary.features)
SUMMARY_BYTES = 8 * (1 + D + D * (D + 1) // 2)  # n, mean, the covariance's upper triangle
hostile = settings(max_examples=300, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])


@hostile
@given(kind=st.sampled_from(KINDS), payload=st.binary(max_size=300))
def test_raw_bytes_decode_or_are_rejected_with_a_reason(kind, payload):
    _decodes_or_rejects(kind, payload)


@hostile
@given(kind=st.sampled_from(KINDS), value=json_values)
def test_any_json_decodes_or_is_rejected_with_a_reason(kind, value):
    _decodes_or_rejects(kind, json.dumps(value).encode())


@hostile
@given(case=mutated_payloads())
def test_a_valid_message_with_any_part_replaced_decodes_or_is_rejected(case):
    _decodes_or_rejects(*case)


SUMMARY_KINDS = (GlobalModel, Update)


@st.composite
def mutated_binary(draw: st.DrawFn) -> tuple[type, bytes]:
    """A valid binary update or model with bytes replaced, inserted or cut anywhere."""
    kind = draw(st.sampled_from(SUMMARY_KINDS))
    payload = bytearray(messages.encode_binary(VALID[kind]))
    start = draw(st.integers(0, len(payload)))
    end = draw(st.integers(start, min(len(payload), start + 16)))
    payload[start:end] = draw(st.binary(max_size=16))
    return kind, bytes(payload)


@st.composite
def binary_with_any_header(draw: st.DrawFn) -> tuple[type, bytes]:
    """A valid binary update or model whose header has one field replaced by any JSON value."""
    kind = draw(st.sampled_from(SUMMARY_KINDS))
    valid = messages.encode_binary(VALID[kind])
    size = int.from_bytes(valid[2:4], "little")
    header = json.loads(valid[4:4 + size])
    header[draw(st.sampled_from(sorted(header)))] = draw(st.one_of(numbers, json_values))
    text = json.dumps(header).encode()[:65535]
    return kind, valid[:2] + len(text).to_bytes(2, "little") + text + valid[4 + size:]


@hostile
@given(kind=st.sampled_from(KINDS), payload=st.binary(max_size=600))
def test_any_bytes_in_the_binary_form_decode_or_are_rejected_with_a_reason(kind, payload):
    _decodes_or_rejects(kind, b"\xff\x01" + payload)


@hostile
@given(case=st.one_of(mutated_binary(), binary_with_any_header()))
def test_a_valid_binary_message_with_any_part_replaced_decodes_or_is_rejected(case):
    _decodes_or_rejects(*case)


@hostile
@given(summary=st.binary(min_size=SUMMARY_BYTES, max_size=SUMMARY_BYTES))
def test_any_summary_in_the_binary_form_decodes_to_a_symmetric_covariance(summary):
    # Decoding checks no symmetry in the binary form: it carries the upper triangle alone.
    valid = messages.encode_binary(VALID[Update])
    payload = valid[:-SUMMARY_BYTES] + summary

    try:
        cov = messages.decode(Update, payload).summary.cov
    except MessageError as exc:
        assert exc.reason
    else:
        assert (cov == cov.T).all()


def test_a_binary_update_decodes_to_what_its_json_does():
    update = VALID[Update]

    from_binary = messages.decode(Update, messages.encode_binary(update))

    assert messages.encode(from_binary) == messages.encode(update)


def test_a_400_digit_integer_anywhere_is_out_of_range():
    huge = "9" * 400
    for kind in KINDS:
        obj = json.loads(messages.encode(VALID[kind]))
        for path in _paths(obj):
            target = obj
            for key in path[:-1]:
                target = target[key]
            saved, target[path[-1]] = target[path[-1]], int(huge)
            payload = json.dumps(obj).encode()
            target[path[-1]] = saved
            try:
                messages.decode(kind, payload)
            except MessageError as exc:
                assert exc.reason == "out_of_range", (kind, path, exc)
            else:
                raise AssertionError(f"{kind.__name__} took a 400-digit number at {path}")


def test_an_integer_past_pythons_digit_limit_is_out_of_range_not_a_crash():
    payload = b'{"v":1,"round":' + b"9" * 5000 + b"}"

    for kind in KINDS:
        try:
            messages.decode(kind, payload)
        except MessageError as exc:
            assert exc.reason == "out_of_range"


vehicle_topics = st.one_of(
    st.builds(lambda v, k: f"fleet/v1/vehicles/{v}/{k}",
              st.sampled_from(["veh-0001", "veh-0002"]), st.sampled_from(topics.VEHICLE_KINDS)),
    st.text(max_size=40),
)


@hostile
@given(stream=st.lists(st.tuples(vehicle_topics, st.one_of(
    st.binary(max_size=200), mutated_payloads().map(lambda case: case[1]))), max_size=20))
def test_a_gateway_handles_any_messages_without_raising_and_counts_each(stream):
    gateway = Gateway(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"))
    gateway._open_round()

    for topic, payload in stream:
        gateway.handle(topic, payload)

    handled = sum(gateway.received.values()) + gateway.rejected["unknown_topic"]
    global_ = sum(topic.startswith(topics.GLOBAL_PREFIX) for topic, _ in stream)
    assert handled + global_ == len(stream)


@hostile
@given(stream=st.lists(st.tuples(st.sampled_from([topics.ROUND_TOPIC, topics.MODEL_TOPIC]),
                                 st.one_of(st.binary(max_size=200),
                                           mutated_payloads().map(lambda case: case[1]))),
                       max_size=10))
def test_a_vehicle_takes_any_messages_without_raising_and_keeps_running(stream):
    vehicle = Vehicle("veh-0001", SimulatedVehicle("veh-0001", seed=1), mechanism=None,
                      clock=lambda: 0.0)

    for topic, payload in stream:
        vehicle.on_message(topic, payload)
    sent = [out for _ in range(5) for out in vehicle.step()]

    assert vehicle.readings == 5
    assert all(out.topic.startswith(topics.ROOT) for out in sent)
