"""A fleet split over region brokers, for ``benchmarks.scale --regions R``."""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import fleet_window as window
from benchmarks.report import progress
from broker.bridge import Bridge, bridge_config
from tests.processes import Command, open_round, wait_until
from tests.servers import HOST, Mosquitto, free_port


def run_regions(vehicles: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``vehicles`` split over ``args.regions`` region brokers bridged to a top one
    (``broker/bridge.py``), each region with its own region gateway and fleet (``--id-prefix
    rN-``); the top gateway coordinates the region gateways. No broker holds every vehicle's
    connection, so the fleet may pass the open files one process may hold."""
    work.mkdir()
    db = work / "gw.db"
    shares = [vehicles // args.regions + (i < vehicles % args.regions)
              for i in range(args.regions)]
    limits = {"max_inflight_messages": str(args.inflight), "max_queued_messages": str(args.queued)}
    with contextlib.ExitStack() as stack:
        top = stack.enter_context(Mosquitto(options=limits))
        brokers = [top]
        for index in range(args.regions):
            port = free_port()
            conf = work / f"region-{index}.conf"
            conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\n"
                            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
                            + "".join(f"{key} {value}\n" for key, value in limits.items())
                            + bridge_config(Bridge(f"r{index}", HOST, top.port)))
            brokers.append(stack.enter_context(Mosquitto(port, conf=conf)))
        common = ("--round-seconds", str(args.round_seconds), "--http-port", "0")
        gateways = [Command("gateway", "--mqtt", top.url, *common, "--min-updates", "1",
                            "--workers", str(args.regions), "--store", f"sqlite:///{db}",
                            cwd=work)]
        gateways += [Command("gateway", "--mqtt", region.url, *common, "--role", "worker",
                             "--worker-id", f"r{index}", "--share-group", "",
                             "--store", f"sqlite:///{work / f'region-{index}.db'}", cwd=work)
                     for index, region in enumerate(brokers[1:])]
        fleets: list[Command] = []
        try:
            wait_until(lambda: open_round(db)[0] >= 1, 60, "the gateway's first round")
            progress(f"{vehicles} vehicles over {args.regions} regions: connecting (at "
                            f"most {args.connect_timeout_s:.0f} s a region)")
            for index, (region, share) in enumerate(zip(brokers[1:], shares, strict=True)):
                fleets.append(Command(
                    "fleet", "--mqtt", region.url, "--vehicles", str(share), "--speedup", "1",
                    "--privacy", args.privacy, "--seed", str(args.seed + index),
                    "--id-prefix", f"r{index}-", "--processes", str(args.processes),
                    "--ledger-dir", str(work / f"ledgers-{index}"), cwd=work,
                    env=window.release_env(args.release_every)))
            settled = [window.connected_at(fleet, share, args.connect_timeout_s)
                       for fleet, share in zip(fleets, shares, strict=True)]
            began = max(at for at, _, _ in settled)
            progress(f"{sum(c for _, _, c in settled)} of {vehicles} connected: "
                            f"measuring {args.duration_s:.0f} s")
            watched = {"fleet": [p for f in fleets for p in window.tree(window.pid(f))],
                       "gateway": [p for g in gateways for p in window.tree(window.pid(g))],
                       "mosquitto": [psutil.Process(b.pid) for b in brokers if b.pid]}
            cpu_began = {name: window.cpu_s(tree) for name, tree in watched.items()}
            busy_began, cpu_at = window.busy_s(), time.monotonic()
            windows = []
            for fleet, (at, sim_began, _) in zip(fleets, settled, strict=True):
                ended = fleet.wait_for(window.STATUS.pattern, args.duration_s + 30,
                                       since=began + args.duration_s)
                windows.append((at, sim_began, ended, window.status_lines(fleet, ended)[0][3]))
            cpu_s = {name: window.cpu_s(tree) - cpu_began[name] for name, tree in watched.items()}
            wall_s, busy_s = time.monotonic() - cpu_at, window.busy_s() - busy_began
            rss_bytes = sum(p.memory_info().rss for p in watched["fleet"])
            progress("measured: stopping the fleets, then the gateways once their "
                            "backlog is done")
            codes = [fleet.stop(120) for fleet in fleets]
            sent = sum(window.status_lines(fleet, windows[i][2])[-1][4]
                       for i, fleet in enumerate(fleets))
            window.settle(db)
        finally:
            for command in [*fleets, *gateways]:
                if command.process is not None and command.process.poll() is None:
                    command.stop(120)
            for index, command in enumerate([*gateways, *fleets]):
                (work / f"{command.args[0]}-{index}.log").write_text(command.output())
    readings = sum(share * (sim_ended - sim_began)
                   for share, (_, sim_began, _, sim_ended) in zip(shares, windows, strict=True))
    sim_rate = min((sim_ended - sim_began) / (ended - at)
                   for at, sim_began, ended, sim_ended in windows)
    return {"vehicles": vehicles, "connected": sum(c for _, _, c in settled),
            "processes": args.processes * args.regions, "regions": args.regions,
            "sim_rate": sim_rate,
            **window.costs(vehicles, readings, cpu_s, wall_s, busy_s, rss_bytes),
            "sent": sent, **window.outcome(db), "fleet_exit_code": max(codes)}
