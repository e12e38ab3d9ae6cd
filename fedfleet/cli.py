"""The ``fedfleet`` command: ``demo``, ``broker``, ``gateway``, ``fleet``, ``device``,
``privacy``, ``evaluate``, ``broker-setup``, ``broker-bridge`` and ``bench``.

Exit codes: 0 success, 1 runtime failure, 2 usage error. SIGTERM and Ctrl-C stop cleanly.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from federation import topics
from fedfleet import access, bench, commands, evaluate, scaleout
from fedfleet.commands import TUNINGS
from fedfleet.config import LOG_FORMAT, ConfigError, resolve
from gateway.strategy import DEFAULT_STRATEGY, STRATEGIES

__all__ = ["main"]

log = logging.getLogger("fedfleet")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--mqtt", metavar="URL", help="broker (default mqtt://127.0.0.1:1883)")
    common.add_argument("--config", metavar="FILE", help="TOML settings file")
    common.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser = argparse.ArgumentParser(
        prog="fedfleet", description="Federated predictive maintenance for vehicle fleets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", parents=[common], help="broker, gateway and fleet in one go")
    _fleet_options(demo)
    demo.add_argument("--duration", type=float, metavar="SECONDS",
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--round-seconds", type=float, metavar="S")
    _gateway_options(demo)
    _http_options(demo)

    broker = sub.add_parser("broker", parents=[common], help="run the embedded MQTT broker")
    broker.add_argument("--port", type=int, metavar="P")

    gateway = sub.add_parser("gateway", parents=[common], help="run rounds and federate")
    gateway.add_argument("--round-seconds", type=float, metavar="S")
    gateway.add_argument("--min-updates", type=int, metavar="N", help="quorum of a round")
    gateway.add_argument("--target-updates", type=int, metavar="N",
                         help="close a round early at N updates (0: at the deadline)")
    gateway.add_argument("--store", metavar="URL", help="e.g. sqlite:///fedfleet.db")
    gateway.add_argument("--schema", metavar="FILE",
                         help="the fleet's feature schema (JSON; default: the vehicle schema)")
    gateway.add_argument("--rollback", type=int, metavar="VERSION",
                         help="republish the stored model VERSION as the newest version "
                              "(retained), then run on: undoes a poisoned model")
    _gateway_options(gateway)
    _gateway_privacy_options(gateway)
    _scaleout_options(gateway)
    _http_options(gateway)
    _login_options(gateway)

    fleet = sub.add_parser("fleet", parents=[common], help="run simulated vehicles")
    _fleet_options(fleet)
    _login_options(fleet)
    fleet.add_argument("--processes", type=int, metavar="N",
                       help="share the vehicles among N processes, one core each "
                            "(default 1; 0: one per core)")
    fleet.add_argument("--credentials-dir", metavar="DIR",
                       help="each vehicle's own login, VEHICLE_ID.password or VEHICLE_ID.crt "
                            "and .key, as `fedfleet broker-setup` writes them")

    device = sub.add_parser("device", parents=[common],
                            help="run one vehicle on a real sensor source")
    device.add_argument("--id", dest="vehicle_id", metavar="VEHICLE_ID",
                        help="the vehicle's id (1-64 of A-Z a-z 0-9 _ . -)")
    device.add_argument("--source", metavar="SOURCE",
                        help="obd://PORT, serial://DEVICE?baud=N, csv://PATH?speedup=X or stdin")
    _login_options(device)
    device.add_argument("--schema", metavar="FILE",
                        help="the fleet's feature schema (JSON; default: the vehicle schema)")
    device.add_argument("--tuning", choices=sorted(TUNINGS),
                        help="detector and alert settings for the cadence of readings "
                             "(default: vehicle, one reading a second)")
    device.add_argument("--queue-size", type=int, metavar="N",
                        help="messages kept while the broker is away (default 1000)")
    device.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this many seconds (default: until Ctrl-C)")
    _privacy_options(device)
    device.add_argument("--ledger-dir", metavar="DIR",
                        help="where the vehicle keeps its privacy ledger "
                             "(default fedfleet-data/ledgers)")
    evaluate.add_parser(sub)
    access.add_parser(sub)
    scaleout.add_parser(sub)
    bench.add_parser(sub)
    fleet.add_argument("--ledger-dir", metavar="DIR",
                       help="where each vehicle keeps its privacy ledger "
                            "(default fedfleet-data/ledgers)")

    privacy = sub.add_parser("privacy", parents=[common],
                             help="print the fleet's privacy budgets and the global noise level")
    privacy.add_argument("--store", metavar="URL", help="the gateway's store")
    return parser


def _gateway_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", choices=list(STRATEGIES),
                        help="how a round's updates are combined: the exact mean, the "
                             "coordinate-wise median, a trimmed mean, a norm-bounded mean, "
                             "centred clipping with a radius the round sets, or auto: centred "
                             "clipping for exact updates, norm-bounded for what the gateway "
                             f"noises, the mean for the rest (docs/SECURITY.md; default "
                             f"{DEFAULT_STRATEGY})")
    parser.add_argument("--max-reading-rate", type=float, metavar="HZ",
                        help="the most readings a vehicle can learn a second (its fastest "
                             "sensor's rate times any simulation speed-up; default 1000): "
                             "updates claiming more are refused")


def _scaleout_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", choices=["gateway", "worker"],
                        help="worker: validate and merge a share of the updates, and publish "
                             "a partial aggregate at each deadline for the gateway to merge "
                             "(default gateway)")
    parser.add_argument("--workers", type=int, metavar="K",
                        help="the gateway coordinates K workers or region gateways: it shares "
                             "the updates with them and merges their partials (default 0)")
    parser.add_argument("--worker-id", metavar="ID",
                        help="a worker's name, unique among the workers")
    parser.add_argument("--share-group", metavar="NAME",
                        help="the shared-subscription group of the workers and their gateway "
                             "(default fedfleet-gateways; \"\": none, as for a region gateway)")
    parser.add_argument("--partial-grace-seconds", type=float, metavar="S",
                        help="how long past a deadline the gateway waits for missing partials "
                             "(default 2)")
    parser.add_argument("--gateway-id", metavar="ID",
                        help="share the fleet with other gateways (--workers K each, each its "
                             "own ID and store): the one holding the lease acts, the others "
                             "follow and take over when it lapses (docs/ARCHITECTURE.md)")
    parser.add_argument("--lease-seconds", type=float, metavar="S",
                        help="how long a gateway's lease lasts without a renewal (renewed every "
                             "quarter of it; default 10)")


def _http_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http-port", type=int, metavar="P",
                        help="serve the web dashboard on this port (default 8080; 0: off)")
    parser.add_argument("--http-host", metavar="HOST",
                        help="address the dashboard listens on (default 127.0.0.1)")


def _login_options(parser: argparse.ArgumentParser) -> None:
    """How a command that connects logs in to the broker, and verifies it over TLS."""
    parser.add_argument("--username", metavar="U", help="broker login (overrides the URL's)")
    parser.add_argument("--password", metavar="P",
                        help="broker password, with a login from --username or the URL "
                             "(better: the FEDFLEET_PASSWORD variable)")
    parser.add_argument("--ca-file", metavar="FILE",
                        help="mqtts://: trust only the CA in FILE (PEM) for the broker's "
                             "certificate (default: the system's CAs)")
    parser.add_argument("--cert-file", metavar="FILE",
                        help="mqtts://: this client's certificate (PEM), for brokers that "
                             "ask for one")
    parser.add_argument("--key-file", metavar="FILE",
                        help="mqtts://: the certificate's private key (PEM; default: in "
                             "--cert-file)")


def _fleet_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vehicles", type=int, metavar="N")
    parser.add_argument("--seed", type=int, metavar="K")
    parser.add_argument("--speedup", type=float, metavar="X",
                        help="simulated seconds per wall second")
    parser.add_argument("--fault-fraction", type=float, metavar="F")
    parser.add_argument("--id-prefix", metavar="PREFIX",
                        help="put PREFIX before every vehicle id (veh-0000 becomes "
                             "PREFIXveh-0000), so that fleets sharing a broker do not collide")
    _privacy_options(parser)


def _privacy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--federation", choices=["on", "off"],
                        help="off: vehicles neither use the fleet's model nor send updates, "
                             "each learning alone (to see what federation buys; default on)")
    parser.add_argument("--privacy", choices=list(PRIVACY_CHOICES),
                        help="let the gateway noise the aggregate of the vehicles' clipped "
                             "releases (central, the default), mask them so that the gateway "
                             "learns only their noised sum (secagg: secure aggregation, "
                             "docs/PRIVACY.md), noise each release on the vehicle (local: "
                             "trusts no one, needs far more vehicles or budget), or send exact "
                             "summaries (off)")
    parser.add_argument("--mechanism", choices=["gaussian", "laplace"],
                        help="the noise: Gaussian for (epsilon, delta) (default), Laplace for "
                             "pure epsilon")
    _budget_options(parser)


def _budget_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epsilon-budget", type=float, metavar="E",
                        help="each vehicle's privacy budget over its life (default 1)")
    parser.add_argument("--releases", type=int, metavar="N",
                        help="how many releases the budget pays for, each of everything the "
                             "vehicle has learned so far (default 3)")
    parser.add_argument("--delta", type=float, metavar="D",
                        help="delta of the total (default 1e-5)")


def _gateway_privacy_options(parser: argparse.ArgumentParser) -> None:
    """The gateway runs secure rounds with ``--privacy secagg``; it then announces the
    release's epsilon from the vehicles' budget, which it must be given alike."""
    parser.add_argument("--privacy", choices=list(PRIVACY_CHOICES),
                        help="secagg: every round is a secure round, whose releases the "
                             "gateway sees only summed (docs/PRIVACY.md); any other: the "
                             "gateway takes each update's own mode (default central)")
    _budget_options(parser)


Rule = tuple[str, Callable[[Any], bool], str]
# Past this an epsilon protects nothing (the noise is negligible): --privacy off says so honestly.
MAX_EPSILON = 1e5
_EPSILON_RANGE = f"greater than 0 and at most {MAX_EPSILON:,.0f} (beyond it, use --privacy off)"
MAX_RELEASES = 1000
PRIVACY_CHOICES = ("central", "secagg", "local", "off")


def _privacy_rules(settings: dict[str, Any]) -> list[Rule]:
    """The privacy settings' rules, shared by the live commands and ``evaluate``."""
    return [
        ("epsilon_budget", lambda v: 0 < v <= MAX_EPSILON, _EPSILON_RANGE),
        ("releases", lambda v: 1 <= v <= MAX_RELEASES, f"between 1 and {MAX_RELEASES}"),
        ("delta", lambda v: 0 < v < 1, "strictly between 0 and 1"),
        ("mechanism", lambda v: v in ("gaussian", "laplace"), "gaussian or laplace"),
        ("privacy", lambda v: v in PRIVACY_CHOICES, ", ".join(PRIVACY_CHOICES)),
        ("federation", lambda v: v in ("on", "off"), "on or off"),
    ]


def _check(settings: dict[str, Any], rules: list[Rule] | None = None) -> None:
    if rules is None:
        rules = [
            *_privacy_rules(settings),
            ("vehicles", lambda v: v >= 1, "at least 1"),
            ("speedup", lambda v: v > 0, "greater than 0"),
            ("round_seconds", lambda v: v > 0, "greater than 0"),
            ("min_updates", lambda v: v >= 1, "at least 1"),
            ("target_updates", lambda v: v >= 0, "0 or more"),
            ("fault_fraction", lambda v: 0 <= v <= 1, "between 0 and 1"),
            ("processes", lambda v: v >= 0, "0 (one per core) or more"),
            ("clip_norm", lambda v: 0 < v < math.inf, "a finite number greater than 0"),
            ("strategy", lambda v: v in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
            ("max_reading_rate", lambda v: 0 < v < math.inf, "a finite number greater than 0"),
            ("rollback", lambda v: v >= 0, "a model version (1 or more), or 0 for none"),
            ("first_release_readings", lambda v: v >= 0, "0 (the tuning's) or more"),
            ("release_growth", lambda v: v == 0 or 1 <= v < math.inf,
             "0 (the tuning's) or a finite number of at least 1"),
            ("alert_report_epsilon", lambda v: 0 <= v < 50,
             "0 (no answers) or a number below 50"),
            ("role", lambda v: v in ("gateway", "worker"), "gateway or worker"),
            ("workers", lambda v: v >= 0, "0 (no workers) or more"),
            ("worker_id", lambda v: v == "" or _fits_an_id(v), "a name of A-Z a-z 0-9 _ . -"),
            ("share_group", lambda v: v == "" or _fits_an_id(v), "a name of A-Z a-z 0-9 _ . -"),
            ("partial_grace_seconds", lambda v: 0 <= v < math.inf, "0 or more"),
            ("gateway_id", lambda v: v == "" or _fits_an_id(v), "a name of A-Z a-z 0-9 _ . -"),
            ("lease_seconds", lambda v: 0.1 <= v <= 3600, "between 0.1 and 3600"),
            ("port", lambda v: 1 <= v <= 65535, "a TCP port (1-65535)"),
            ("http_port", lambda v: 0 <= v <= 65535, "a TCP port (1-65535), or 0 for none"),
            ("duration", lambda v: v >= 0, "0 or more"),
            ("queue_size", lambda v: v >= 1, "at least 1"),
            ("id_prefix", _fits_an_id, "at most 54 characters from A-Z a-z 0-9 _ . -, "
             "starting with a letter or digit"),
        ]
    for key, ok, meaning in rules:
        if not ok(settings[key]):
            raise ConfigError(f"{key.replace('_', '-')} must be {meaning}, got {settings[key]}")


def _fits_an_id(prefix: str) -> bool:
    """Whether ``prefix`` before the longest simulated id is still a vehicle id."""
    try:
        topics.check_vehicle_id(f"{prefix}veh-000000")
    except ValueError:
        return False
    return True


def _check_evaluate(args: argparse.Namespace) -> None:
    """The live commands' privacy rules, for each budget ``evaluate`` is given."""
    if args.epsilon and args.privacy == "off":
        raise ConfigError("--privacy off runs no noised regime: drop --epsilon-budget, or "
                          "choose --privacy local or central")
    for budget in args.epsilon or [1.0]:
        settings = {"releases": 1, "delta": args.delta, "epsilon_budget": budget,
                    "mechanism": args.mechanism, "privacy": args.privacy, "federation": "on"}
        _check(settings, _privacy_rules(settings))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "broker-setup":
        return access.main(args)
    if args.command == "broker-bridge":
        return scaleout.bridge(args)
    if args.command == "bench":
        return bench.main(args)
    if args.command == "evaluate":
        try:
            _check_evaluate(args)
        except ConfigError as exc:
            print(f"fedfleet evaluate: error: {exc}", file=sys.stderr)
            return 2
        return evaluate.main(args)
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        settings = resolve(args.command, flags, config_file=args.config)
        _check(settings)
    except ConfigError as exc:
        print(f"fedfleet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings["log_level"],
                        format=LOG_FORMAT)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        return commands.run(args.command, settings, stop)
    except ConfigError as exc:
        print(f"fedfleet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, OSError, RuntimeError) as exc:
        log.error("%s", exc)
        return 1
