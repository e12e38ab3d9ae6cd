"""Crash and restart: what a ``kill -9`` of the gateway and a broker restart cost, end to end.

Starts Mosquitto (Debian's) keeping sessions across its restarts, as the configuration
``fedfleet broker-setup`` writes does, then ``fedfleet gateway`` (SQLite store) and
``fedfleet fleet`` (real vehicles, privacy off) as processes of their own, and an alert load
of ``--alerts-per-s`` valid alerts on QoS 1 from made-up vehicles. ``--max-queued`` and
``--max-queued-bytes`` are Mosquitto's ``max_queued_messages`` and ``max_queued_bytes``: what
it keeps for a client that is away or behind, beyond which it drops (default: what
``broker-setup`` writes). Then:

1. once a round holds accepted updates, ``kill -9`` of the gateway, restarted a second later;
2. the broker stopped for ``--outage-s`` seconds, and started again;
3. the load stops; every alert the broker acknowledged is waited for in the store.

It prints, as a table and as JSON: alerts published, acknowledged by the broker, stored, lost
and stored twice; the updates the killed round had accepted and how many of them the
resumed round merged; how long after the broker's return the gateway was back (from its log)
and the fleet's vehicles were (from their online statuses); the round numbers (strictly
increasing, none reused) and how many rounds closed while the broker was away. Last, a flood
of ``--flood`` alerts as fast as one client sends them gives the gateway's throughput with a
commit before every acknowledgement.

    python -m benchmarks.restart --alerts-per-s 200
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import print_report
from broker.access import MAX_QUEUED_BYTES, MAX_QUEUED_MESSAGES
from tests.processes import AlertLoad, Command, open_round, read_store, wait_until
from tests.servers import Mosquitto


def _settle(done: Callable[[], bool], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for ``done``; what is still missing then is reported lost."""
    with contextlib.suppress(TimeoutError):
        wait_until(done, timeout_s, "the store to settle")


def _holding(db: Path, updates: int) -> bool:
    """Whether a round past the first is open with ``updates`` accepted updates."""
    number, accepted = open_round(db)
    return number >= 2 and len(accepted) >= updates


def _gateway(broker: Mosquitto, work: Path, round_seconds: float) -> Command:
    return Command("gateway", "--mqtt", broker.url, "--round-seconds", str(round_seconds),
                   "--min-updates", "1", "--store", "sqlite:///gw.db", "--http-port", "0",
                   cwd=work)


def crash_and_restart(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    db = work / "gw.db"
    queue = {"max_queued_messages": str(args.max_queued),
             "max_queued_bytes": str(args.max_queued_bytes)}
    with Mosquitto(persistent=True, options=queue) as broker:
        gateway = _gateway(broker, work, args.round_seconds)
        fleet = Command("fleet", "--mqtt", broker.url, "--vehicles", str(args.vehicles),
                        "--speedup", "60", "--privacy", "off", "--fault-fraction", "0",
                        "--ledger-dir", str(work / "ledgers"), cwd=work)
        # The gateway's session exists from its first connection: then the load starts.
        wait_until(lambda: open_round(db)[0] >= 1, 30, "the gateway's first round")
        load = AlertLoad(broker.url, args.alerts_per_s)
        try:
            load.start()
            wait_until(lambda: _holding(db, args.vehicles // 2), 60,
                       "an open round past the first holding accepted updates")
            killed_round, accepted = open_round(db)
            gateway.kill()
            time.sleep(1.0)
            gateway.start()
            time.sleep(3.0)
            broker.stop()
            lost_wall, lost_at = time.time(), time.monotonic()
            time.sleep(args.outage_s)
            broker.start()
            back_wall, back_at = time.time(), time.monotonic()
            reconnected_at = gateway.wait_for("reconnected to the broker", 30, since=lost_at)
            time.sleep(4.0)
            online_again = [ts for ts, in read_store(  # each vehicle says so on reconnecting
                db, "SELECT ts FROM statuses WHERE state = 'online' AND vehicle_id LIKE 'veh-%'")]
            load.stop()
            load.wait_acknowledged(60)
            _settle(lambda: len(read_store(db, "SELECT id FROM alerts")) >= len(
                load.acknowledged), 30)
        finally:
            load.close()
            fleet.stop()
            gateway.stop()
    stored = [(v, ts) for v, ts in read_store(db, "SELECT vehicle_id, ts FROM alerts")
              if v.startswith("load-")]
    merged = {v for v, in read_store(db, "SELECT vehicle_id FROM budgets WHERE round = ?",
                                     (killed_round,))}
    rounds = read_store(db, "SELECT round, opened_at, closed_at FROM rounds ORDER BY round")
    numbers = [r[0] for r in rounds]
    return {
        "broker_max_queued_messages": args.max_queued,
        "broker_max_queued_bytes": args.max_queued_bytes,
        "alerts_per_s": round(load.rate_sent_per_s, 1),
        "alerts_published": len(load.sent),
        "alerts_acknowledged": len(load.acknowledged),
        "alerts_stored": len(set(stored)),
        "alerts_lost": len(load.acknowledged - set(stored)),
        "alerts_stored_twice": len(stored) - len(set(stored)),
        "killed_round": killed_round,
        "updates_accepted_before_kill": len(accepted),
        "updates_merged_in_resumed_round": len(merged),
        "accepted_updates_lost": len(accepted - merged),
        "gateway_reconnect_s": round(reconnected_at - back_at, 2),
        "fleet_reconnect_s": round(max(online_again) - back_wall, 2)
        if len(online_again) == args.vehicles and min(online_again) >= back_wall else None,
        "gateway_disconnects_logged": len(gateway.matching("lost the broker")),
        "gateway_reconnects_logged": len(gateway.matching("reconnected to the broker")),
        "rounds": len(numbers),
        "round_numbers_strictly_increasing_without_gaps": numbers == list(
            range(numbers[0], numbers[-1] + 1)) and [r[1] for r in rounds] == sorted(
            {r[1] for r in rounds}),
        "rounds_closed_while_broker_away": sum(lost_wall < r[2] < back_wall for r in rounds),
        "rounds_opened_while_broker_away": sum(lost_wall < r[1] < back_wall for r in rounds),
    }


def flood(count: int, work: Path) -> dict[str, Any]:
    """``count`` alerts as fast as one client sends them: the gateway's throughput."""
    db = work / "flood" / "gw.db"
    db.parent.mkdir()
    with Mosquitto(persistent=True, options={"max_queued_messages": "0"}) as broker:
        gateway = _gateway(broker, db.parent, 5.0)
        gateway.wait_for("fleet schema", 30)
        time.sleep(2.0)  # connected and subscribed
        load = AlertLoad(broker.url, rate_per_s=1e9, client_id="flood-load", limit=count)
        try:
            began = time.monotonic()
            load.start()
            wait_until(lambda: len(load.sent) >= count, 120, f"{count} alerts published")
            load.stop()
            load.wait_acknowledged(300)
            wait_until(lambda: len(read_store(db, "SELECT id FROM alerts")) >= len(load.sent),
                       300, "every flood alert in the store")
            seconds = time.monotonic() - began
        finally:
            load.close()
            gateway.stop()
    return {"flood_alerts": len(load.sent), "flood_seconds": round(seconds, 2),
            "flood_alerts_stored_per_s": round(len(load.sent) / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts-per-s", type=float, default=200.0)
    parser.add_argument("--vehicles", type=int, default=6)
    parser.add_argument("--round-seconds", type=float, default=2.0)
    parser.add_argument("--outage-s", type=float, default=5.0)
    parser.add_argument("--flood", type=int, default=20_000)
    parser.add_argument("--max-queued", type=int, default=MAX_QUEUED_MESSAGES,
                        help="Mosquitto's max_queued_messages (default: what broker-setup "
                             f"writes, {MAX_QUEUED_MESSAGES})")
    parser.add_argument("--max-queued-bytes", type=int, default=MAX_QUEUED_BYTES,
                        help="Mosquitto's max_queued_bytes (default: what broker-setup "
                             f"writes, {MAX_QUEUED_BYTES}; 0: none)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedfleet-restart-"))
    report = crash_and_restart(args, work)
    if args.flood:
        report |= flood(args.flood, work)
    report["files"] = str(work)  # the gateway's store and the fleet's ledgers, to look into
    print_report(report)


if __name__ == "__main__":
    main()
