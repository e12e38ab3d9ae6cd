"""Whole secure rounds in one process, every message through the codec: for tests and
benchmarks (the randomness is seeded, so whoever knows the seed knows every secret).

:func:`simulate` runs the four phases for the given vehicles, each dropping out before the
phase named for it in ``dropouts`` (it sends nothing from then on), and measures what each
party sends and receives (payload bytes) and the CPU time each spends (its own state machine
and codec).

>>> import numpy as np
>>> config = SecAggConfig(dimension=2, clip_norm=100.0)
>>> vectors = {f"veh-{i:02d}": np.array([i, -1.0]) for i in range(20)}
>>> result, traffic = simulate(config, vectors, dropouts={"veh-03": "input"})
>>> result.inputs, np.round(result.total, 3).tolist()
(19, [187.0, -19.0])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from federation.secagg import messages
from federation.secagg.client import SecAggClient
from federation.secagg.messages import (
    Advertise,
    MaskedInput,
    Roster,
    SecAggMessage,
    ShareKeys,
    SharesRelay,
    UnmaskRequest,
    UnmaskShares,
)
from federation.secagg.noise import SeededIntegerNoise
from federation.secagg.params import SecAggConfig
from federation.secagg.randomness import SeededBytes
from federation.secagg.server import Aggregate, SecAggServer

__all__ = ["PHASES", "Traffic", "simulate"]

PHASES = ("advertise", "share", "input", "unmask")
T = TypeVar("T")
Reply = Callable[[SecAggClient, Any], SecAggMessage]


@dataclass
class Traffic:
    """Payload bytes each vehicle sent and received, and CPU seconds per party."""

    sent_bytes: dict[str, int] = field(default_factory=dict)
    received_bytes: dict[str, int] = field(default_factory=dict)
    vehicle_cpu_seconds: dict[str, float] = field(default_factory=dict)
    server_cpu_seconds: float = 0.0

    def vehicle(self, vehicle_id: str, seconds: float, sent: int = 0, received: int = 0) -> None:
        self.vehicle_cpu_seconds[vehicle_id] = self.vehicle_cpu_seconds.get(vehicle_id, 0.0) \
            + seconds
        self.sent_bytes[vehicle_id] = self.sent_bytes.get(vehicle_id, 0) + sent
        self.received_bytes[vehicle_id] = self.received_bytes.get(vehicle_id, 0) + received


def _timed(work: Callable[..., T], *args: Any) -> tuple[T, float]:
    began = time.process_time()
    value = work(*args)
    return value, time.process_time() - began


def _reply(client: SecAggClient, respond: Reply, incoming: type[SecAggMessage] | None,
           received: bytes) -> bytes:
    reply = respond(client, incoming and messages.decode(incoming, received))
    return messages.encode_binary(reply)


def _deliver(server: SecAggServer, kind: type[SecAggMessage], payload: bytes) -> None:
    server.receive(messages.decode(kind, payload))


def _encode_all(close: Callable[[], Mapping[str, SecAggMessage]]) -> dict[str, bytes]:
    return {v: messages.encode_binary(m) for v, m in close().items()}


def simulate(config: SecAggConfig, vectors: Mapping[str, np.ndarray], *, round_number: int = 1,
             dropouts: Mapping[str, str] | None = None, seed: int = 0,
             vehicles: int | None = None) -> tuple[Aggregate, Traffic]:
    """Run one round of ``vectors`` (by vehicle id), planned for ``vehicles`` (default: all
    of them); raise :class:`~federation.secagg.errors.SecAggError` where the round refuses."""
    dropouts = dict(dropouts or {})
    if set(dropouts.values()) - set(PHASES):
        raise ValueError(f"a vehicle drops out before one of {PHASES}")
    ids = sorted(vectors)
    server = SecAggServer(round_number, config, vehicles or len(ids))
    clients = {v: SecAggClient(v, round_number, config, noise=SeededIntegerNoise((seed, i)),
                               random_bytes=SeededBytes((seed, i))) for i, v in enumerate(ids)}
    replies: dict[str, tuple[type[SecAggMessage] | None, type[SecAggMessage], Reply]] = {
        "advertise": (None, Advertise, lambda client, _: client.advertise()),
        "share": (Roster, ShareKeys, lambda client, roster: client.share_keys(roster)),
        "input": (SharesRelay, MaskedInput, lambda client, relay: client.masked_input(
            relay, vectors[client.vehicle_id])),
        "unmask": (UnmaskRequest, UnmaskShares, lambda client, request: client.unmask(request)),
    }
    closes: dict[str, Callable[[], Mapping[str, SecAggMessage]]] = {
        "advertise": server.rosters, "share": server.relays, "input": server.unmask_requests}
    traffic = Traffic()
    inbox = dict.fromkeys(ids, b"")
    for phase in PHASES:
        incoming, outgoing, respond = replies[phase]
        for v, received in inbox.items():
            if v in dropouts and PHASES.index(dropouts[v]) <= PHASES.index(phase):
                continue
            payload, seconds = _timed(_reply, clients[v], respond, incoming, received)
            traffic.vehicle(v, seconds, sent=len(payload), received=len(received))
            _, seconds = _timed(_deliver, server, outgoing, payload)
            traffic.server_cpu_seconds += seconds
        if phase in closes:
            inbox, seconds = _timed(_encode_all, closes[phase])
            traffic.server_cpu_seconds += seconds
    result, seconds = _timed(server.result)
    traffic.server_cpu_seconds += seconds
    return result, traffic
