"""Every malformed, replayed or forged secure-aggregation message raises SecAggError, and
nothing else, at the vehicle or the gateway, and leaves the round able to finish."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from federation.secagg import SecAggClient, SecAggConfig, SecAggError, SecAggServer
from federation.secagg import messages as codec
from federation.secagg.messages import (
    Advertise,
    MaskedInput,
    Roster,
    ShareKeys,
    SharesRelay,
    UnmaskRequest,
    UnmaskShares,
)
from federation.secagg.noise import SeededIntegerNoise
from federation.secagg.randomness import SeededBytes
from tests.test_hostile_input import _paths, json_values, numbers

CONFIG = SecAggConfig(dimension=3, clip_norm=2.0)
IDS = [f"veh-{i:02d}" for i in range(20)]


class Round:
    """A round of 20 vehicles driven phase by phase, every message through the codec."""

    def __init__(self, round_number: int = 5, config: SecAggConfig = CONFIG) -> None:
        self.server = SecAggServer(round_number, config, len(IDS))
        self.clients = {v: SecAggClient(v, round_number, config, noise=SeededIntegerNoise(i),
                                        random_bytes=SeededBytes((round_number, i)))
                        for i, v in enumerate(IDS)}
        rows = np.random.default_rng(round_number).uniform(-0.1, 0.1, (20, config.dimension))
        self.vectors = dict(zip(IDS, rows, strict=True))
        self.sent: dict[str, dict[str, Any]] = {}
        self.replay = False  # after each phase, replay everything sent so far
        self.rejected: dict[str, int] = {}

    def _send(self, phase: str, replies: dict[str, Any]) -> None:
        self.sent[phase] = {v: codec.decode(type(m), codec.encode(m)) for v, m in replies.items()}
        for message in self.sent[phase].values():
            self.server.receive(message)  # type: ignore[arg-type]
        for message in (m for sent in self.sent.values() for m in sent.values()):
            for copy in (message, dataclasses.replace(message, round=9)) if self.replay else ():
                try:
                    self.server.receive(copy)  # type: ignore[arg-type]
                except SecAggError as exc:
                    self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1

    def advertise(self) -> dict[str, Roster]:
        self._send("advertise", {v: c.advertise() for v, c in self.clients.items()})
        return self.server.rosters()

    def share(self) -> dict[str, SharesRelay]:
        rosters = self.advertise()
        self._send("share", {v: self.clients[v].share_keys(r) for v, r in rosters.items()})
        return self.server.relays()

    def input(self) -> dict[str, UnmaskRequest]:
        relays = self.share()
        self._send("input", {v: self.clients[v].masked_input(r, self.vectors[v])
                             for v, r in relays.items()})
        return self.server.unmask_requests()

    def finish(self) -> np.ndarray:
        requests = self.input()
        self._send("unmask", {v: self.clients[v].unmask(r) for v, r in requests.items()})
        return self.server.result().total

    def expected(self) -> np.ndarray:
        return np.sum(list(self.vectors.values()), axis=0)


def _rejected(reason: str, act) -> None:
    with pytest.raises(SecAggError) as error:
        act()
    assert error.value.reason == reason


def test_a_replayed_advertisement_is_rejected_as_a_duplicate_then_out_of_turn():
    round_ = Round()
    hello = round_.clients[IDS[0]].advertise()
    round_.server.receive(hello)

    _rejected("duplicate", lambda: round_.server.receive(hello))
    _rejected("duplicate", lambda: round_.server.receive(dataclasses.replace(
        hello, vehicle_id="veh-99")))  # the same keys under another name
    for client in list(round_.clients.values())[1:]:
        round_.server.receive(client.advertise())
    round_.server.rosters()
    _rejected("wrong_phase", lambda: round_.server.receive(hello))


def test_messages_of_another_round_are_rejected_by_both_sides():
    earlier, later = Round(round_number=4), Round(round_number=5)
    earlier.share()
    relays = later.share()

    _rejected("wrong_round", lambda: later.server.receive(earlier.sent["share"][IDS[1]]))
    moved = dataclasses.replace(relays[IDS[0]], round=4)
    _rejected("wrong_round", lambda: later.clients[IDS[0]].masked_input(moved, np.zeros(3)))


def test_a_share_sealed_for_another_vehicle_or_altered_does_not_open():
    round_ = Round()
    relays = round_.share()
    mine, other = relays[IDS[0]], relays[IDS[1]]
    client = round_.clients[IDS[0]]
    flipped = bytearray(mine.sealed[3])
    flipped[20] ^= 1
    tampered = dataclasses.replace(mine, sealed=(*mine.sealed[:3], bytes(flipped),
                                                 *mine.sealed[4:]))
    swapped = dataclasses.replace(mine, sealed=(mine.sealed[1], mine.sealed[0],
                                                *mine.sealed[2:]))

    _rejected("not_addressed", lambda: client.masked_input(other, round_.vectors[IDS[0]]))
    _rejected("forged", lambda: client.masked_input(tampered, round_.vectors[IDS[0]]))
    _rejected("forged", lambda: client.masked_input(swapped, round_.vectors[IDS[0]]))
    assert client.phase == "input"  # nothing changed: the genuine relay still works
    round_.server.receive(client.masked_input(mine, round_.vectors[IDS[0]]))


def test_a_vehicle_outside_a_phase_cannot_send_into_it():
    round_ = Round()
    round_.share()
    stranger = MaskedInput("veh-99", 5, bytes(3 * 4), bytes(32))

    _rejected("unknown_vehicle", lambda: round_.server.receive(stranger))
    _rejected("wrong_phase", lambda: round_.server.receive(round_.sent["share"][IDS[0]]))
    _rejected("wrong_phase", lambda: round_.clients[IDS[0]].share_keys(
        Roster(IDS[0], 5, 20, 20, ())))


def test_the_gateway_rejects_a_duplicate_and_a_short_masked_input():
    round_ = Round()
    relays = round_.share()
    client = round_.clients[IDS[0]]
    masked = client.masked_input(relays[IDS[0]], round_.vectors[IDS[0]])
    round_.server.receive(masked)

    _rejected("duplicate", lambda: round_.server.receive(masked))
    _rejected("bad_shape", lambda: round_.server.receive(dataclasses.replace(
        masked, vehicle_id=IDS[1], masked=masked.masked[:-4])))


def test_a_vehicle_answers_the_unmask_request_once_and_never_below_the_quorum():
    round_ = Round()
    requests = round_.input()
    client = round_.clients[IDS[0]]
    short = dataclasses.replace(requests[IDS[0]], inputs=round_.server.plan.min_inputs - 1)
    lying = dataclasses.replace(requests[IDS[0]], survivors=(False,) * 19)

    _rejected("below_threshold", lambda: client.unmask(short))
    _rejected("too_few", lambda: client.unmask(lying))
    client.unmask(requests[IDS[0]])
    _rejected("wrong_phase", lambda: client.unmask(requests[IDS[0]]))


def test_a_forged_unmask_share_fails_the_round_instead_of_a_wrong_sum():
    round_ = Round()
    requests = round_.input()
    replies = {v: round_.clients[v].unmask(r) for v, r in requests.items()}
    liar = replies[IDS[0]]
    forged = dataclasses.replace(liar, shares=tuple(
        None if s is None else bytes(33) for s in liar.shares))
    for v, reply in replies.items():
        round_.server.receive(forged if v == IDS[0] else reply)

    _rejected("bad_share", round_.server.result)


def test_a_gateway_that_rejected_every_replay_still_unmasks_the_right_sum():
    round_ = Round()
    round_.replay = True

    total = round_.finish()

    # After each of the 4 phases, its 20 messages again and every earlier one, each also
    # with another round number.
    assert round_.rejected == {"duplicate": 80, "wrong_phase": 120, "wrong_round": 200}
    np.testing.assert_allclose(total, round_.expected(), atol=20 * 2**-16)


def test_revealed_noise_beyond_its_bound_or_of_the_wrong_size_is_refused_and_the_round_goes_on():
    round_ = Round(config=SecAggConfig(dimension=3, clip_norm=2.0, epsilon=1.0))
    requests = round_.input()
    replies = {v: round_.clients[v].unmask(r) for v, r in requests.items()}
    ring, honest = round_.server.plan.ring, replies[IDS[0]]
    assert honest.noise is not None  # every vehicle is in: each sheds its dropout noise
    huge = ring.to_bytes(ring.reduce(np.array([0, 2**28, 0], dtype=np.int64)))

    _rejected("out_of_range", lambda: round_.server.receive(
        dataclasses.replace(honest, noise=huge)))
    _rejected("bad_shape", lambda: round_.server.receive(
        dataclasses.replace(honest, noise=honest.noise[:-1])))
    for reply in replies.values():
        round_.server.receive(reply)
    result = round_.server.result()

    assert np.all(np.abs(result.total - round_.expected()) < 6 * result.noise_std)


def test_unmask_shares_without_noise_leave_the_field_out():
    bare = UnmaskShares("veh-01", 3, (bytes(33), None))

    assert "noise" not in json.loads(codec.encode(bare))
    assert codec.decode(UnmaskShares, codec.encode_binary(bare)) == bare


VALID = {
    Advertise: Advertise("veh-01", 3, bytes(32), bytes(range(32))),
    Roster: Roster("veh-01", 3, 20, 19, (codec.Neighbour("veh-02", bytes(32), bytes(32)),)),
    ShareKeys: ShareKeys("veh-01", 3, (bytes(codec.SEALED_BYTES),)),
    SharesRelay: SharesRelay("veh-01", 3, (None, bytes(codec.SEALED_BYTES))),
    MaskedInput: MaskedInput("veh-01", 3, bytes(12), bytes(32)),
    UnmaskRequest: UnmaskRequest("veh-01", 3, 14, (True, False)),
    UnmaskShares: UnmaskShares("veh-01", 3, (bytes(33), None), bytes(12)),
}


@pytest.mark.parametrize("encode", [codec.encode, codec.encode_binary],
                         ids=["json", "binary"])
@pytest.mark.parametrize("kind", list(VALID), ids=lambda k: k.__name__)
def test_every_message_survives_a_round_trip(kind, encode):
    assert codec.decode(kind, encode(VALID[kind])) == VALID[kind]


def test_the_binary_form_carries_binary_fields_raw_and_neighbours_as_arrays():
    roster = VALID[Roster]

    obj = msgpack.unpackb(codec.encode_binary(roster)[2:])

    assert obj["neighbours"] == [["veh-02", bytes(32), bytes(32)]]
    assert len(codec.encode_binary(roster)) < len(codec.encode(roster)) - 50


@st.composite
def mutated(draw: st.DrawFn) -> tuple[type, bytes]:
    kind = draw(st.sampled_from(list(VALID)))
    obj = json.loads(codec.encode(VALID[kind]))
    path = draw(st.sampled_from(_paths(obj)))
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(st.one_of(numbers, json_values, st.text(max_size=60)))
    return kind, json.dumps(obj).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_a_mutated_message_decodes_or_raises_only_secagg_error(case):
    kind, payload = case
    try:
        codec.decode(kind, payload)
    except SecAggError as exc:
        assert exc.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_a_mutated_message_in_the_binary_form_decodes_or_raises_only_secagg_error(case):
    kind, payload = case
    try:
        packed = msgpack.packb(json.loads(payload))
    except OverflowError:  # an integer MessagePack cannot hold: no such payload exists
        assume(False)
    try:
        codec.decode(kind, codec.BINARY_MAGIC + packed)
    except SecAggError as exc:
        assert exc.reason


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(list(VALID)), st.binary(max_size=200),
       st.sampled_from([b"", b"\xff", codec.BINARY_MAGIC]))
def test_arbitrary_bytes_raise_only_secagg_error(kind, payload, prefix):
    with pytest.raises(SecAggError):
        codec.decode(kind, prefix + payload)


@pytest.mark.parametrize("kind", list(VALID), ids=lambda k: k.__name__)
def test_a_truncated_binary_message_raises_secagg_error(kind):
    payload = codec.encode_binary(VALID[kind])

    with pytest.raises(SecAggError, match="bad_binary"):
        codec.decode(kind, payload[:-1])
