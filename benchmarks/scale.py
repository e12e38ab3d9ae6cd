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
import contextlib
import itertools
import json
import os
import pwd
import re
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from river import covariance

from benchmarks.releases import PRIVACY, release_ms
from benchmarks.report import table
from broker.bridge import Bridge, bridge_config
from devices.onboard.detector import make_pipeline
from devices.runners.fleet import simulated_vehicles
from fedfleet.config import ConfigError
from fedfleet.limits import local_ports_for
from tests.processes import Command, open_round, read_store, wait_until
from tests.servers import HOST, Mosquitto, free_port

FILES_TO_SPARE = 1024  # the broker's, the gateway's and each process's own files
SETTLED_LINES = 3  # status lines (10 s apart) with one count of connections: settled
MIN_CONNECTED = 0.99  # of the fleet, for a measurement at all

_STATUS = re.compile(r"fleet: (\d+)/(\d+) connected, sim (\d+):(\d\d):(\d\d).*?(\d+) updates sent")
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


def _tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _busy_s() -> float:
    """CPU seconds the whole machine has been busy, every core and process."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _status(fleet: Command, since: float) -> list[tuple[float, int, int, int, int]]:
    """The fleet's status lines since ``since``: (time, connected, vehicles, simulated s, sent)."""
    found = []
    for at, line in fleet.matching(_STATUS.pattern, since):
        match = _STATUS.search(line)
        assert match is not None
        connected, vehicles, hours, minutes, seconds, sent = map(int, match.groups())
        found.append((at, connected, vehicles, hours * 3600 + minutes * 60 + seconds, sent))
    return found


def _connected(fleet: Command, vehicles: int, timeout_s: float) -> tuple[float, int, int]:
    """When the fleet's connections settled, its simulated seconds then, and how many are
    connected: every vehicle, or the same count for :data:`SETTLED_LINES` status lines in a
    row (the broker may hold too few files for the last few); ``TimeoutError`` past
    ``timeout_s``, or if fewer than :data:`MIN_CONNECTED` of the fleet settled."""
    def settled() -> tuple[float, int, int] | None:
        lines = _status(fleet, 0.0)
        for index, (at, connected, _, simulated_s, _) in enumerate(lines):
            if connected == vehicles:
                return at, simulated_s, connected
            stretch = lines[index:index + SETTLED_LINES]
            if len(stretch) == SETTLED_LINES and {line[1] for line in stretch} == {connected}:
                at, _, _, simulated_s, _ = stretch[-1]  # seen settled only now
                return at, simulated_s, connected
        return None
    wait_until(lambda: settled() is not None, timeout_s, f"{vehicles} vehicles to connect")
    at, simulated_s, connected = settled() or (0.0, 0, 0)
    if connected < MIN_CONNECTED * vehicles:
        raise TimeoutError(f"only {connected} of {vehicles} vehicles connected")
    return at, simulated_s, connected


def _settle(db: Path, quiet_s: float = 3.0, timeout_s: float = 120.0) -> None:
    """Wait until the gateway has accepted nothing new for ``quiet_s``: its backlog is done."""
    def accepted() -> int:
        return int(read_store(db, "SELECT COUNT(*) FROM accepted_updates")[0][0])
    last, since, end = accepted(), time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() - since < quiet_s and time.monotonic() < end:
        time.sleep(0.5)
        if (now := accepted()) != last:
            last, since = now, time.monotonic()


def _release_every(readings: int | None) -> dict[str, str]:
    """The fleet's environment for a private release every ``readings`` learned readings,
    within a budget that never runs out (none: the tuning's schedule)."""
    if readings is None:
        return {}
    return {"FEDFLEET_FIRST_RELEASE_READINGS": str(readings), "FEDFLEET_RELEASE_GROWTH": "1",
            "FEDFLEET_RELEASES": "200", "FEDFLEET_EPSILON_BUDGET": "1000"}


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
            fleet = Command("fleet", "--mqtt", broker.url, "--vehicles", str(vehicles),
                            "--speedup", "1", "--privacy", args.privacy, "--seed", str(args.seed),
                            *(["--processes", str(args.processes)] if args.processes != 1
                              else []),
                            "--ledger-dir", str(work / "ledgers"), cwd=work,
                            env=_release_every(args.release_every))
            assert fleet.process is not None and gateway.process is not None
            began, sim_began, connected = _connected(fleet, vehicles, args.connect_timeout_s)
            watched = {"fleet": _tree(fleet.process.pid), "gateway": _tree(gateway.process.pid),
                       "mosquitto": [psutil.Process(broker.pid)]}
            cpu_began = {name: _cpu_s(tree) for name, tree in watched.items()}
            busy_began, cpu_at = _busy_s(), time.monotonic()
            ended = fleet.wait_for(_STATUS.pattern, args.duration_s + 30,
                                   since=began + args.duration_s)
            cpu_s = {name: _cpu_s(tree) - cpu_began[name] for name, tree in watched.items()}
            wall_s, busy_s = time.monotonic() - cpu_at, _busy_s() - busy_began
            rss_bytes = sum(p.memory_info().rss for p in _tree(fleet.process.pid))
            _, _, _, sim_ended, _ = _status(fleet, ended)[0]
            fleet_code = fleet.stop(120)
            sent = _status(fleet, ended)[-1][4]  # its last line, once stopped: all it sent
            _settle(db)
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
            **_costs(vehicles, vehicles * (sim_ended - sim_began), cpu_s, wall_s, busy_s,
                     rss_bytes),
            "sent": sent, **_outcome(db), "fleet_exit_code": fleet_code}


def _costs(vehicles: int, readings: float, cpu_s: dict[str, float], wall_s: float,
           busy_s: float, rss_bytes: int) -> dict[str, float]:
    """A row's costs: the fleet's CPU a reading, each part's cores, the fleet's memory."""
    return {
        "fleet_us": 1e6 * cpu_s["fleet"] / max(readings, 1),
        "fleet_cores": cpu_s["fleet"] / wall_s,
        "rss_kib": rss_bytes / 1024 / vehicles, "rss_mib": rss_bytes / 2**20,
        "mosquitto_cores": cpu_s["mosquitto"] / wall_s,
        "gateway_cores": cpu_s["gateway"] / wall_s,
        "others_cores": (busy_s - sum(cpu_s.values())) / wall_s,
    }


def _outcome(db: Path) -> dict[str, Any]:
    """From the gateway's store: updates received, accepted by a round, and refused by reason."""
    received = read_store(db, "SELECT messages FROM traffic WHERE kind = 'update'")
    accepted = read_store(db, "SELECT COALESCE(SUM(accepted), 0) FROM rounds")[0][0] + len(
        open_round(db)[1])
    rejected = dict(read_store(db, "SELECT reason, SUM(count) FROM rejections GROUP BY reason"))
    return {"received": received[0][0] if received else 0, "accepted": accepted,
            "rejected": rejected}


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
            for index, (region, share) in enumerate(zip(brokers[1:], shares, strict=True)):
                fleets.append(Command(
                    "fleet", "--mqtt", region.url, "--vehicles", str(share), "--speedup", "1",
                    "--privacy", args.privacy, "--seed", str(args.seed + index),
                    "--id-prefix", f"r{index}-", "--processes", str(args.processes),
                    "--ledger-dir", str(work / f"ledgers-{index}"), cwd=work,
                    env=_release_every(args.release_every)))
            settled = [_connected(fleet, share, args.connect_timeout_s)
                       for fleet, share in zip(fleets, shares, strict=True)]
            began = max(at for at, _, _ in settled)
            watched = {"fleet": [p for f in fleets for p in _tree(_pid(f))],
                       "gateway": [p for g in gateways for p in _tree(_pid(g))],
                       "mosquitto": [psutil.Process(b.pid) for b in brokers if b.pid]}
            cpu_began = {name: _cpu_s(tree) for name, tree in watched.items()}
            busy_began, cpu_at = _busy_s(), time.monotonic()
            windows = []
            for fleet, (at, sim_began, _) in zip(fleets, settled, strict=True):
                ended = fleet.wait_for(_STATUS.pattern, args.duration_s + 30,
                                       since=began + args.duration_s)
                windows.append((at, sim_began, ended, _status(fleet, ended)[0][3]))
            cpu_s = {name: _cpu_s(tree) - cpu_began[name] for name, tree in watched.items()}
            wall_s, busy_s = time.monotonic() - cpu_at, _busy_s() - busy_began
            rss_bytes = sum(p.memory_info().rss for p in watched["fleet"])
            codes = [fleet.stop(120) for fleet in fleets]
            sent = sum(_status(fleet, windows[i][2])[-1][4] for i, fleet in enumerate(fleets))
            _settle(db)
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
            **_costs(vehicles, readings, cpu_s, wall_s, busy_s, rss_bytes),
            "sent": sent, **_outcome(db), "fleet_exit_code": max(codes)}


def _pid(command: Command) -> int:
    assert command.process is not None
    return command.process.pid


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
