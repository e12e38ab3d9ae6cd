"""Hostile messages through a real Mosquitto at a live gateway and fleet.

Starts Mosquitto (Debian's) on a free port with anonymous access and no ACL, the worst case,
then ``fedfleet gateway`` (SQLite store, dashboard on a free port) and ``fedfleet fleet`` as
processes of their own. After a warm-up, an attacker publishes ``--messages`` hostile
payloads, half on the topics the gateway subscribes to (any vehicle's update, alert and
status, some retained) and half on the topics every vehicle subscribes to (the round and the
model): valid messages with one part replaced by something hostile (400-digit and
5,000-digit integers, NaN, wrong types, deep nesting, huge counts), raw bytes, and payloads
over the size limit. Then it prints, as a table and as JSON:

- whether both processes are still running, and their resident memory before and after;
- whether a restarted gateway, which the broker hands the retained hostile messages again,
  keeps running;
- the rounds closed and merged during the attack (rounds must keep closing);
- the gateway's rejections by reason (from its dashboard's ``/api/rejections``) and the
  fleet's rejected count (from its last status line: each message on a vehicle topic reaches
  every vehicle, less what Mosquitto drops for a client with 1,000 messages queued).

    python -m benchmarks.hostile --messages 100000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from federation import messages, topics
from federation.features import VEHICLE_SCHEMA
from federation.messages import Alert, GlobalModel, RoundOpen, Status, Update
from federation.summary import ModelSummary
from federation.transport import make_client, parse_mqtt_url
from tests.servers import Mosquitto, free_port

HOSTILE_VALUES: list[Any] = [
    int("9" * 400), -int("9" * 400), float("nan"), float("inf"), 1e308, -1e308, 10_000_000,
    -1, 0, "", "x" * 300, None, True, [], {}, [[[[[]]]]], {"a": {"b": {"c": []}}},
    [1e6] * 200,
]


def _valid_messages() -> dict[str, list[bytes]]:
    """One valid payload per kind, for each side's topics."""
    names = VEHICLE_SCHEMA.names
    rows = np.random.default_rng(0).random((50, len(names)))
    summary = ModelSummary.from_array(names, rows)
    update = Update("veh-0001", 1, 0, summary, 1.0, 1e-5, 1.0, 1.7e9)
    alert = Alert("veh-0001", 1.7e9, 5.0, 4.0, "cooling", (("coolant_temp_c", 5.0),), 0)
    status = Status("veh-0001", "online", 1.7e9)
    model = GlobalModel(1, 1, 10, summary, 1.7e9)
    round_open = RoundOpen(1, 1.7e9, 1.7e9 + 30, 1, 0)
    return {
        "gateway": [messages.encode(m) for m in (update, alert, status)],
        "vehicles": [messages.encode(m) for m in (round_open, model)],
    }


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not isinstance(obj, dict | list):
        return []
    found = []
    for key, value in obj.items() if isinstance(obj, dict) else enumerate(obj):
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def _mutate(payload: bytes, rng: random.Random) -> bytes:
    obj = json.loads(payload)
    path = rng.choice(_paths(obj))
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = rng.choice(HOSTILE_VALUES)
    return json.dumps(obj).encode()


def hostile_payloads(count: int, seed: int) -> list[tuple[str, bytes, bool]]:
    """``count`` ``(topic, payload, retain)`` triples, alternating gateway and vehicle topics."""
    rng = random.Random(seed)
    valid = _valid_messages()
    kinds = ("update", "alert", "status")
    found = []
    for i in range(count):
        side = "gateway" if i % 2 == 0 else "vehicles"
        if side == "gateway":
            topic = f"{topics.ROOT}/vehicles/veh-{rng.randrange(10_000):04d}/{rng.choice(kinds)}"
        else:
            topic = rng.choice([topics.ROUND_TOPIC, topics.MODEL_TOPIC])
        form = rng.random()
        if form < 0.8:
            payload = _mutate(rng.choice(valid[side]), rng)
        elif form < 0.95:
            payload = rng.randbytes(rng.randrange(1, 300))
        else:
            payload = b"{" + b" " * (messages.MAX_PAYLOAD_BYTES + 10) + b"}"
        found.append((topic, payload, side == "gateway" and rng.random() < 0.01))
    return found


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def _fedfleet(*args: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "fedfleet", *args]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _attack(url: str, payloads: list[tuple[str, bytes, bool]]) -> float:
    target = parse_mqtt_url(url)
    client = make_client("hostile-bench", target)
    client.max_inflight_messages_set(100)
    client.connect(target.host, target.port)
    client.loop_start()
    began = time.monotonic()
    for start in range(0, len(payloads), 1000):  # a thousand in flight at a time
        infos = [client.publish(topic, payload, qos=1, retain=retain)
                 for topic, payload, retain in payloads[start:start + 1000]]
        for info in infos:
            info.wait_for_publish(60)
    seconds = time.monotonic() - began
    client.loop_stop()
    client.disconnect()
    return seconds


def _fleet_rejected(log: Path) -> int:
    found = re.findall(r"(\d+) messages rejected", log.read_text(errors="replace"))
    return int(found[-1]) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--vehicles", type=int, default=20)
    parser.add_argument("--round-seconds", type=float, default=2.0)
    parser.add_argument("--warmup-s", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    payloads = hostile_payloads(args.messages, args.seed)
    work = Path(tempfile.mkdtemp(prefix="fedfleet-hostile-"))
    http_port = free_port()
    with Mosquitto() as server:
        gateway = _fedfleet("gateway", "--mqtt", server.url, "--round-seconds",
                            str(args.round_seconds), "--store", f"sqlite:///{work}/gw.db",
                            "--http-port", str(http_port), log=work / "gateway.log")
        fleet = _fedfleet("fleet", "--mqtt", server.url, "--vehicles", str(args.vehicles),
                          "--speedup", "60", "--ledger-dir", str(work / "ledgers"),
                          log=work / "fleet.log")
        try:
            time.sleep(args.warmup_s)
            rounds_before = _get(http_port, "/api/rounds?limit=1000")
            rss_before = {"gateway": _rss_kib(gateway.pid), "fleet": _rss_kib(fleet.pid)}
            attack_s = _attack(server.url, payloads)
            # Rejections are written at round close, the fleet's status every ten seconds.
            time.sleep(max(3 * args.round_seconds, 11.0))
            rounds_after = _get(http_port, "/api/rounds?limit=1000")
            rss_after = {"gateway": _rss_kib(gateway.pid), "fleet": _rss_kib(fleet.pid)}
            rejections = _get(http_port, "/api/rejections")
            alive = {"gateway": gateway.poll() is None, "fleet": fleet.poll() is None}
            # The retained hostile messages are delivered again to a restarted gateway.
            gateway.terminate()
            gateway.wait(30)
            gateway = _fedfleet("gateway", "--mqtt", server.url, "--round-seconds",
                                str(args.round_seconds), "--store", f"sqlite:///{work}/gw.db",
                                "--http-port", str(http_port), log=work / "gateway-again.log")
            time.sleep(3 * args.round_seconds + 2)
            alive["gateway_restarted"] = gateway.poll() is None
        finally:
            for process in (fleet, gateway):
                process.terminate()
            for process in (fleet, gateway):
                process.wait(30)
    before = {r["round"] for r in rounds_before}
    during = [r for r in rounds_after if r["round"] not in before]
    report = {
        "messages": args.messages, "attack_seconds": round(attack_s, 1),
        "messages_per_s": round(args.messages / attack_s),
        "alive": alive, "exit_codes": {"gateway": gateway.returncode, "fleet": fleet.returncode},
        "rss_kib_before": rss_before, "rss_kib_after": rss_after,
        "rounds_closed_during": len(during),
        "rounds_merged_during": sum(r["quorum_met"] for r in during),
        "gateway_rejections": rejections,
        "gateway_rejected_total": sum(rejections.values()),
        "fleet_rejected_total": _fleet_rejected(work / "fleet.log"),
        "logs": str(work),
    }
    print(f"{args.messages:,} hostile messages in {attack_s:.1f} s "
          f"({report['messages_per_s']:,}/s); logs in {work}")
    print(f"{'':24}{'gateway':>12}{'fleet':>12}")
    print(f"{'still running':24}{alive['gateway']!s:>12}{alive['fleet']!s:>12}")
    for label, rss in (("RSS before (KiB)", rss_before), ("RSS after (KiB)", rss_after)):
        print(f"{label:24}{rss['gateway']:>12,}{rss['fleet']:>12,}")
    print(f"{'rejected':24}{report['gateway_rejected_total']:>12,}"
          f"{report['fleet_rejected_total']:>12,}")
    print(f"a restarted gateway still running: {alive['gateway_restarted']}")
    print(f"rounds closed during the attack: {len(during)}, merged: "
          f"{report['rounds_merged_during']}")
    for reason, count in sorted(rejections.items(), key=lambda item: -item[1]):
        print(f"  {reason:22}{count:>10,}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
