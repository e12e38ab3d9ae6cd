"""Scale on one machine: what a fleet costs as it grows, next to anchors measured in the same run.

First, in this process, the anchors: the detector's own score + learn per reading
(``detector_us``), River's ``EmpiricalCovariance.update`` alone on the same scaled readings
(``river_learn_us``: how the detector learned before it kept River's numbers on arrays), and a
whole :class:`~devices.onboard.vehicle.Vehicle` step per reading without a
network (``vehicle_us``: the simulator, the detector and the alert charts), and the median
wall time of one private release in a pass of 20 (``release_central_ms``, ``release_local_ms``:
clipping, noise, the ledger written, encoding, and a 20th of the pass's sync; see
:mod:`benchmarks.releases`). Then, for each fleet
size, a fresh Mosquitto (Debian's), ``fedfleet gateway`` (SQLite store) and ``fedfleet fleet
--speedup 1`` as processes of their own; once every vehicle is connected (or the count of
connections has settled: ``connected``, at least 99 % of them; at 20,000 the broker's limit of
open files may leave a few out), for ``--duration-s``:

- ``sim_rate``: simulated seconds per wall second from the fleet's status lines (1.0: real time);
- ``fleet_us``: the CPU time of all the fleet's processes (user + system) per reading, and
  ``x_detector``, its ratio to ``detector_us``; ``fleet_cores``: that CPU per wall second;
- ``rss_kib``: the resident memory of all the fleet's processes per vehicle (interpreters
  included; the table's last line gives the cost of one more vehicle between two sizes);
- ``mosquitto_cores``, ``gateway_cores``: their CPU per wall second over the same window, and
  ``others_cores``: what the rest of the machine used meanwhile (on a shared machine, what the
  fleet could not have);
- then the fleet stops (SIGTERM) and, once the gateway has worked off its backlog, the
  gateway; from its store: updates ``received`` (valid messages), ``accepted`` by a round, and
  the rejections by reason. ``acceptance`` is accepted over ``sent`` (the fleet's count in
  the status it prints once stopped): an update the broker dropped counts as not accepted.

With ``--regions R`` the fleet is split over ``R`` region brokers bridged to a top one, each
with its own region gateway (``fedfleet gateway --role worker``) and its own ``fedfleet
fleet`` of ``--processes`` processes; the top gateway coordinates them (``--workers R``). No
broker then holds every vehicle's connection, which is what limits one broker to the open
files one process may hold (20,000 here).

The machine may be shared: compare the ratios, which are measured within one run.

    python -m benchmarks.scale --vehicles 100 1000 3000 --processes 2 --duration-s 60
    python -m benchmarks.scale --vehicles 30000 --regions 2 --duration-s 60 --queued 100000
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from river import covariance

from benchmarks import fleet_window as window
from benchmarks.releases import PRIVACY, release_ms
from benchmarks.report import progress, table
from benchmarks.scale_regions import run_regions
from devices.onboard.detector import make_pipeline
from devices.runners.fleet import simulated_vehicles
from fedfleet.config import ConfigError
from fedfleet.limits import local_ports_for
from tests.processes import Command, open_round, wait_until
from tests.servers import Mosquitto

FILES_TO_SPARE = 1024  # the broker's, the gateway's and each process's own files

_COLUMNS = ("vehicles", "connected", "processes", "sim_rate", "fleet_us", "x_detector",
            "fleet_cores", "rss_kib", "mosquitto_cores", "gateway_cores", "others_cores", "sent",
            "received", "accepted", "acceptance")


def anchors(readings: int, seed: int) -> dict[str, float]:
    """Per reading, in CPU microseconds: the detector's own score + learn, River's
    ``EmpiricalCovariance.update`` alone on the same readings (what the detector's learning
    was), and a whole vehicle step without a network (privacy off, no round)."""
    vehicles = simulated_vehicles(10, seed, None)
    per_vehicle = readings // len(vehicles)
    rows = [[reading.values for _ in range(per_vehicle)
             if (reading := vehicle.source.read()) is not None] for vehicle in vehicles]
    pipelines = [make_pipeline(vehicle.detector) for vehicle in vehicles]
    began = time.process_time()
    for pipeline, readings_of in zip(pipelines, rows, strict=True):
        for values in readings_of:
            pipeline.score_one(values)
            pipeline.learn_one(values)
    detector_s = time.process_time() - began
    began = time.process_time()
    for vehicle, readings_of in zip(vehicles, rows, strict=True):
        river = covariance.EmpiricalCovariance(ddof=0)
        scale = vehicle.detector.schema.scale
        for values in readings_of:
            river.update(scale(values))
    river_s = time.process_time() - began
    vehicles = simulated_vehicles(10, seed, None)
    began = time.process_time()
    for vehicle in vehicles:
        for _ in range(per_vehicle):
            vehicle.step()
    vehicle_s = time.process_time() - began
    count = per_vehicle * len(vehicles)
    return {"detector_us": 1e6 * detector_s / count, "river_learn_us": 1e6 * river_s / count,
            "vehicle_us": 1e6 * vehicle_s / count,
            **{f"release_{privacy}_ms": release_ms(privacy, seed)["per_release_ms"]
               for privacy in PRIVACY}}


def run_size(vehicles: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One fleet size against its own broker and gateway."""
    work.mkdir()
    db = work / "gw.db"
    with Mosquitto(options={"max_inflight_messages": str(args.inflight),
                            "max_queued_messages": str(args.queued)}) as broker:
        assert broker.pid is not None
        gateway = Command("gateway", "--mqtt", broker.url, "--round-seconds",
                          str(args.round_seconds), "--min-updates", "1", "--http-port", "0",
                          "--store", f"sqlite:///{db}", cwd=work)
        fleet: Command | None = None
        try:
            wait_until(lambda: open_round(db)[0] >= 1, 60, "the gateway's first round")
            progress(f"{vehicles} vehicles: connecting (at most "
                            f"{args.connect_timeout_s:.0f} s)")
            fleet = Command("fleet", "--mqtt", broker.url, "--vehicles", str(vehicles),
                            "--speedup", "1", "--privacy", args.privacy, "--seed", str(args.seed),
                            *(["--processes", str(args.processes)] if args.processes != 1
                              else []),
                            "--ledger-dir", str(work / "ledgers"), cwd=work,
                            env=window.release_env(args.release_every))
            assert fleet.process is not None and gateway.process is not None
            began, sim_began, connected = window.connected_at(fleet, vehicles,
                                                              args.connect_timeout_s)
            progress(f"{connected} of {vehicles} connected: measuring "
                            f"{args.duration_s:.0f} s")
            watched = {"fleet": window.tree(fleet.process.pid),
                       "gateway": window.tree(gateway.process.pid),
                       "mosquitto": [psutil.Process(broker.pid)]}
            cpu_began = {name: window.cpu_s(tree) for name, tree in watched.items()}
            busy_began, cpu_at = window.busy_s(), time.monotonic()
            ended = fleet.wait_for(window.STATUS.pattern, args.duration_s + 30,
                                   since=began + args.duration_s)
            cpu_s = {name: window.cpu_s(tree) - cpu_began[name] for name, tree in watched.items()}
            wall_s, busy_s = time.monotonic() - cpu_at, window.busy_s() - busy_began
            rss_bytes = sum(p.memory_info().rss for p in window.tree(fleet.process.pid))
            _, _, _, sim_ended, _ = window.status_lines(fleet, ended)[0]
            progress("measured: stopping the fleet, then the gateway once its "
                            "backlog is done")
            fleet_code = fleet.stop(120)
            sent = window.status_lines(fleet, ended)[-1][4]  # its last line once stopped: all
            window.settle(db)
        finally:
            if fleet is not None and fleet.process is not None and fleet.process.poll() is None:
                fleet.stop(120)
            gateway.stop(60)
            for name, command in (("fleet", fleet), ("gateway", gateway)):
                if command is not None:
                    (work / f"{name}.log").write_text(command.output())
            broker_log = broker.log_path.read_text(errors="replace")
            (work / "mosquitto-warnings.log").write_text("\n".join(
                line for line in broker_log.splitlines() if "Warning" in line or "dropped" in line))
    return {"vehicles": vehicles, "connected": connected, "processes": args.processes,
            "sim_rate": (sim_ended - sim_began) / (ended - began),
            **window.costs(vehicles, vehicles * (sim_ended - sim_began), cpu_s, wall_s, busy_s,
                     rss_bytes),
            "sent": sent, **window.outcome(db), "fleet_exit_code": fleet_code}


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [table(rows, _COLUMNS)]
    for small, large in itertools.pairwise(rows):
        marginal = (large["rss_mib"] - small["rss_mib"]) * 1024 / (
            large["vehicles"] - small["vehicles"])
        lines.append(f"one more vehicle between {small['vehicles']} and {large['vehicles']}: "
                     f"{marginal:.0f} KiB")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """The curve as a picture: CPU per reading against the detector's, and the simulated-time
    rate and acceptance, each against the fleet's size."""
    from matplotlib.figure import Figure  # only for --plot

    runs = report["runs"]
    sizes = [run["vehicles"] for run in runs]
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    cost, rate = figure.subplots(1, 2)
    cost.plot(sizes, [run["fleet_us"] for run in runs], "o-", label="fleet, per reading")
    cost.axhline(report["anchors"]["detector_us"], color="grey", linestyle="--",
                 label="detector's score + learn")
    cost.axhline(report["anchors"]["vehicle_us"], color="grey", linestyle=":",
                 label="vehicle step, no network")
    cost.set(xscale="log", xlabel="vehicles", ylabel="CPU µs per reading", ylim=(0, None))
    cost.legend()
    rate.plot(sizes, [run["sim_rate"] for run in runs], "o-", label="simulated s per wall s")
    rate.plot(sizes, [run["acceptance"] or 0.0 for run in runs], "s--", label="updates accepted")
    rate.plot(sizes, [run["others_cores"] / (psutil.cpu_count() or 1) for run in runs], "x:",
              label="share of the machine used by others")
    rate.set(xscale="log", xlabel="vehicles", ylim=(0, 1.1))
    rate.legend()
    figure.savefig(path, dpi=100)


def _open_files(vehicles: int) -> None:
    """Let this process and what it starts (Mosquitto above all: a connection is an open file)
    hold a file for every vehicle and some to spare, raising the hard limit where allowed;
    exit with the limit to raise where it is below one a vehicle and cannot be raised."""
    want = vehicles + FILES_TO_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        return
    except (ValueError, OSError):
        pass
    if soft < vehicles:
        raise SystemExit(f"{vehicles} vehicles need {want} open files for the broker; the "
                         f"limit is {soft} (hard {hard}): raise it with ulimit -n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, nargs="+", default=[100, 300, 1000, 3000])
    parser.add_argument("--processes", type=int, default=1, help="the fleet's --processes")
    parser.add_argument("--privacy", choices=["central", "local", "off"], default="off",
                        help="off (default): every vehicle sends an update every round")
    parser.add_argument("--duration-s", type=float, default=60.0,
                        help="the measured window, once the fleet is connected")
    parser.add_argument("--round-seconds", type=float, default=30.0)
    parser.add_argument("--release-every", type=int, metavar="READINGS",
                        help="with privacy, release every READINGS learned readings (at most "
                        "one a round) rather than at 300, 900 and 2,700")
    parser.add_argument("--inflight", type=int, default=20,
                        help="Mosquitto's max_inflight_messages (its default: 20)")
    parser.add_argument("--queued", type=int, default=1000,
                        help="Mosquitto's max_queued_messages for a client that is behind, the "
                        "gateway (its default: 1,000; `fedfleet broker-setup` writes 100,000)")
    parser.add_argument("--regions", type=int, default=0, metavar="R",
                        help="split the fleet over R region brokers bridged to a top one, each "
                        "with its region gateway and a fleet of --processes processes (default "
                        "0: one broker for all): past the open files one broker may hold")
    parser.add_argument("--connect-timeout-s", type=float, default=300.0)
    parser.add_argument("--anchor-readings", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, metavar="PNG", help="draw the curve into PNG")
    args = parser.parse_args()
    if args.regions < 0 or any(v < max(args.regions, 1) for v in args.vehicles):
        parser.error("--regions must be 0 or more, and each --vehicles at least one a region")
    _open_files(max(args.vehicles) // max(args.regions, 1))
    try:  # paho binds each client first: a local port a connection, whatever the broker
        local_ports_for(max(args.vehicles), f"{max(args.vehicles)} vehicles")
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    progress("the anchors, in this process")
    report: dict[str, Any] = {"anchors": anchors(args.anchor_readings, args.seed), "runs": []}
    print(json.dumps(report["anchors"]), flush=True)
    work = Path(tempfile.mkdtemp(prefix="fedfleet-scale-"))
    for vehicles in args.vehicles:
        run = run_regions if args.regions else run_size
        row = run(vehicles, args, work / str(vehicles))
        row["x_detector"] = row["fleet_us"] / report["anchors"]["detector_us"]
        row["acceptance"] = row["accepted"] / row["sent"] if row["sent"] else None
        report["runs"].append(row)
        print(json.dumps(row), flush=True)
    report["files"] = str(work)
    print(_table(report["runs"]))
    print(json.dumps(report))
    if args.plot:
        plot(report, args.plot)


if __name__ == "__main__":
    main()
