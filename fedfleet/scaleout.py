"""``fedfleet gateway --role worker``: a gateway worker or a region gateway."""

from __future__ import annotations

import threading
from typing import Any

from federation.features import Schema
from federation.transport import MqttTarget
from fedfleet.config import ConfigError
from gateway.strategy import make_strategy
from gateway.worker import Worker

__all__ = ["worker"]


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
