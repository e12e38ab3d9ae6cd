"""Federation's traffic against streaming every reading, in a real fleet run at real time.

Starts a fresh Mosquitto, ``fedfleet gateway`` (SQLite store, ``--round-seconds``) and
``fedfleet fleet --speedup 1`` (``--vehicles``, ``--privacy``), lets them run for
``--duration-s``, stops both, and reads what the gateway counted (its ``traffic`` table, the
dashboard's source): every message vehicles sent it (uplink) and every copy of the round and
model messages the broker handed to vehicles (downlink). Streaming would have sent every
reading the fleet made (one a second per vehicle) as a JSON message of
:func:`~gateway.store.traffic.raw_reading_bytes`. It prints both directions, their sum over
that, and the dashboard's own saving figure (which counts the readings the accepted updates
summarised, not all readings made).

    python -m benchmarks.traffic --vehicles 200 --duration-s 600 --round-seconds 600

``--code DIR`` runs the gateway and the fleet from another checkout (the same command on the
code before a change).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import print_report, progress
from gateway.dashboard.figures import savings
from gateway.store import Traffic, raw_reading_bytes
from tests.processes import Command, open_round, read_store, wait_until
from tests.servers import Mosquitto

UPLINK = ("update", "alert", "status")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    db = work / "gw.db"
    env = {"PYTHONPATH": str(args.code)} if args.code else None
    with Mosquitto() as broker:
        gateway = Command("gateway", "--mqtt", broker.url, "--round-seconds",
                          f"{args.round_seconds:g}", "--store", f"sqlite:///{db}",
                          "--http-port", "0", cwd=work, env=env)
        try:
            wait_until(lambda: open_round(db)[0] >= 1, 60, "the gateway's first round")
            fleet = Command("fleet", "--mqtt", broker.url, "--vehicles", str(args.vehicles),
                            "--speedup", "1", "--privacy", args.privacy,
                            "--ledger-dir", str(work / "ledgers"), cwd=work, env=env)
            began = time.monotonic()
            progress(f"{args.vehicles} vehicles at real time for {args.duration_s:.0f} s, until "
                     f"{time.strftime('%H:%M:%S', time.localtime(time.time() + args.duration_s))}")
            time.sleep(args.duration_s)
            progress("stopping the fleet, then reading what the gateway counted")
            fleet.stop(120)
            ran_s = time.monotonic() - began
        finally:
            gateway.stop(60)
    traffic = {kind: Traffic(m, b, r) for kind, m, b, r in read_store(
        db, "SELECT kind, messages, payload_bytes, readings FROM traffic")}
    up = sum(t.payload_bytes for kind, t in traffic.items() if kind in UPLINK)
    down = sum(t.payload_bytes for kind, t in traffic.items() if kind not in (*UPLINK, "invalid"))
    raw = args.vehicles * ran_s * raw_reading_bytes()
    dashboard = savings(traffic, raw_reading_bytes())
    return {
        "vehicles": args.vehicles, "privacy": args.privacy, "round_seconds": args.round_seconds,
        "duration_s": round(ran_s, 1), "raw_bytes": round(raw),
        "uplink_bytes": up, "downlink_bytes": down,
        "sent_over_raw": round((up + down) / raw, 5),
        "times_less": round(raw / max(up + down, 1), 1),
        "by_kind": {kind: [t.messages, t.payload_bytes] for kind, t in sorted(traffic.items())},
        "dashboard_saved_fraction": dashboard["saved_fraction"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=200)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--round-seconds", type=float, default=600.0)
    parser.add_argument("--privacy", choices=("off", "central", "local"), default="central")
    parser.add_argument("--code", type=Path, help="run fedfleet from this checkout")
    args = parser.parse_args()
    print_report(run(args, Path(tempfile.mkdtemp(prefix="fedfleet-traffic-"))))


if __name__ == "__main__":
    main()
