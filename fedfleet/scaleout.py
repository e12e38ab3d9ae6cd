"""``fedfleet gateway --role worker`` (a gateway worker or a region gateway) and
``fedfleet broker-bridge`` (a region broker's bridge to the top broker)."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from broker.bridge import Bridge, bridge_config
from federation.features import Schema
from federation.transport import MqttTarget, parse_mqtt_url
from fedfleet.config import ConfigError
from gateway.strategy import make_strategy
from gateway.worker import Worker

__all__ = ["add_parser", "bridge", "worker"]


def worker(settings: dict[str, Any], target: MqttTarget, schema: Schema,
           stop: threading.Event) -> int:
    """Merge a share of the updates on ``target`` into a partial at each round's deadline."""
    if not settings["worker_id"]:
        raise ConfigError("--role worker needs a --worker-id, unique among the workers")
    if settings["workers"]:
        raise ConfigError("--workers is the gateway's (the coordinator's), not a worker's")
    share = settings["share_group"] or None
    print(f"gateway worker {settings['worker_id']} on {target.host}:{target.port}, "
          f"{'group ' + share if share else 'every update'}", flush=True)
    Worker(target, settings["worker_id"], group=share,
           strategy=make_strategy(settings["strategy"]), schema=schema,
           readings_per_s=settings["max_reading_rate"],
           round_seconds=settings["round_seconds"]).run(stop)
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``broker-bridge`` subcommand to the CLI's subparsers."""
    parser = sub.add_parser(
        "broker-bridge", help="print a region broker's bridge to the top broker",
        description="Print the mosquitto.conf lines that bridge a region's Mosquitto to the "
                    "top broker: partials, forwarded releases, statuses and alerts up; the "
                    "round and the model down, retained (docs/ARCHITECTURE.md#scaling-out). "
                    "Append them to the region broker's mosquitto.conf.")
    parser.add_argument("--region", required=True, metavar="NAME", help="the region's name")
    parser.add_argument("--upstream", required=True, metavar="URL",
                        help="the top broker, mqtt://HOST:PORT (mqtts:// with --ca-file)")
    parser.add_argument("--ca-file", default="", metavar="FILE",
                        help="the CA the bridge verifies the top broker with (PEM, on the "
                             "region broker's host)")


def bridge(args: argparse.Namespace) -> int:
    """Print the bridge; 0 on success, 2 on a usage error. The login comes from the URL."""
    try:
        target = parse_mqtt_url(args.upstream)
        if target.tls != bool(args.ca_file):
            raise ValueError("give --ca-file with an mqtts:// upstream, and only with one")
        print(bridge_config(Bridge(args.region, target.host, target.port,
                                   username=target.username or "",
                                   password=target.password or "", cafile=args.ca_file)),
              end="")
    except ValueError as exc:
        print(f"fedfleet broker-bridge: error: {exc}", file=sys.stderr)
        return 2
    return 0
