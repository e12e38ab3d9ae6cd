"""The gateway's throughput per aggregation strategy: updates handled a second.

Drives one :class:`gateway.service.Gateway` without a network (its publish is a no-op, its
store SQLite in memory): for each strategy and privacy mode, ``--rounds`` rounds of
``--vehicles`` updates each, every update decoded, validated (:mod:`gateway.validation`),
accepted and stored, then the round merged by the strategy. It prints the updates handled a
second, the merge's share of the time, and, apart, what validation alone costs an update.

    python -m benchmarks.aggregation --vehicles 200 --rounds 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from federation import messages, topics
from federation.features import FEATURE_NAMES
from federation.messages import Update
from federation.privacy import GaussianMechanism, SeededNoise, public_centre
from federation.summary import ModelSummary
from federation.transport import MqttTarget
from gateway.service import Gateway
from gateway.store import SQLiteStore
from gateway.strategy import STRATEGIES, make_strategy

MECHANISM = GaussianMechanism(1.0, 1e-5, 4.0)


def _payloads(vehicles: int, round_number: int, privacy: str) -> list[tuple[str, bytes]]:
    """One round's updates: each vehicle's 300 readings, exact or clipped about the public
    centre for central privacy."""
    rng = np.random.default_rng(round_number)
    centre = public_centre(FEATURE_NAMES).weighted(1.0)
    out = []
    for k in range(vehicles):
        data = np.clip(rng.normal(0.5, 0.1, (300, len(FEATURE_NAMES))), 0.0, 1.0)
        summary = ModelSummary.from_array(FEATURE_NAMES, data)
        if privacy == "central":
            summary = MECHANISM.about(public=True).clipped(summary, centre)
        update = Update(f"veh-{k:04d}", round_number, 0, summary, 1.0, 1e-5, 1.0,
                        float(round_number), privacy=privacy,
                        mechanism="gaussian" if privacy == "central" else "none",
                        clip_norm=MECHANISM.clip_norm * 1.5 if privacy == "central" else 0.0)
        out.append((topics.update_topic(update.vehicle_id), messages.encode(update)))
    return out


def _measure(strategy: str, privacy: str, vehicles: int, rounds: int) -> tuple[float, float]:
    """Updates a second through handle and merge, and the merge's share of the time."""
    clock = [1e6]
    gateway = Gateway(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"),
                      strategy=make_strategy(strategy), noise=SeededNoise(0),
                      clock=lambda: clock[0])
    gateway._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    handling = merging = 0.0
    for _ in range(rounds):
        gateway._open_round()
        assert gateway.round is not None
        payloads = _payloads(vehicles, gateway.round.number, privacy)
        began = time.perf_counter()
        for topic, payload in payloads:
            gateway.handle(topic, payload)
        handled = time.perf_counter()
        gateway._close_round()
        merging += time.perf_counter() - handled
        handling += handled - began
        clock[0] += 3600.0
    total = handling + merging
    return vehicles * rounds / total, merging / total


def _validation_cost(vehicles: int) -> float:
    """Microseconds validation takes an update."""
    gateway = Gateway(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"))
    updates = [messages.decode(Update, p) for _, p in _payloads(vehicles, 1, "off")]
    began = time.perf_counter()
    for update in updates:
        gateway.plausibility.reason(update, 1e9)
    return (time.perf_counter() - began) / len(updates) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    _measure("mean", "off", args.vehicles, 1)  # imports, caches and SQLite warmed up first
    print(f"{args.vehicles} updates a round, {args.rounds} rounds")
    print(f"{'strategy':<14}{'privacy':<9}{'updates/s':>10}{'merge share':>13}")
    for strategy in STRATEGIES:
        for privacy in ("off", "central"):
            rate, share = _measure(strategy, privacy, args.vehicles, args.rounds)
            print(f"{strategy:<14}{privacy:<9}{rate:>10,.0f}{share:>13.0%}", flush=True)
    print(f"validation alone: {_validation_cost(args.vehicles):.0f} µs an update")


if __name__ == "__main__":
    main()
