"""Settings: defaults, then a TOML file, then ``FEDFLEET_*`` environment variables, then flags.

A TOML file holds top-level keys for every command and optional tables named after a command
(``[gateway]``, ``[fleet]``, ...) whose keys apply to that command only. The environment
variable for a key is its name in upper case: ``FEDFLEET_ROUND_SECONDS=10``.

>>> resolve("fleet", flags={"vehicles": 5}, environ={"FEDFLEET_SEED": "7"})["seed"]
7
>>> resolve("fleet", flags={}, environ={"FEDFLEET_SPEEDUP": "fast"})
Traceback (most recent call last):
...
fedfleet.config.ConfigError: FEDFLEET_SPEEDUP: expected a number, got 'fast'
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from federation.transport import DEFAULT_MQTT_URL
from gateway.strategy import DEFAULT_STRATEGY

__all__ = ["DEFAULTS", "LOG_FORMAT", "ConfigError", "resolve"]

DEFAULTS: dict[str, Any] = {
    "mqtt": DEFAULT_MQTT_URL,
    "log_level": "INFO",
    # broker
    "port": 1883,
    # gateway
    # Ten minutes at real time: a round's messages to every vehicle cost little against its
    # 600 readings (docs/PERFORMANCE.md, traffic); a simulated fleet at a speed-up passes less.
    "round_seconds": 600.0,
    "min_updates": 1,
    "target_updates": 0,
    "store": "sqlite:///fedfleet-data/fedfleet.db",
    "schema": "",  # a schema file; empty: the built-in vehicle schema
    # How a round's releases are combined (gateway/strategy.py, docs/SECURITY.md).
    "strategy": DEFAULT_STRATEGY,
    # The most readings a vehicle learns a second: its fastest sensor's rate times the
    # fleet's speed-up (gateway/validation.py).
    "max_reading_rate": 1000.0,
    "rollback": 0,  # republish this stored model version as the newest, then run on
    # Scaling out (docs/ARCHITECTURE.md#scaling-out): a worker merges a share of the updates;
    # a gateway with workers > 0 is their coordinator. Group "": no shared subscription.
    "role": "gateway",
    "workers": 0,
    "worker_id": "",
    "share_group": "fedfleet-gateways",
    "partial_grace_seconds": 2.0,
    # Failover: gateways with a gateway_id share a lease; the holder acts (gateway/lease.py).
    "gateway_id": "",
    "lease_seconds": 10.0,
    "http_host": "127.0.0.1",
    "http_port": 8080,
    # fleet
    "vehicles": 50,
    "seed": 0,
    "speedup": 60.0,
    "fault_fraction": 0.2,
    "processes": 1,  # fleet: processes to share the vehicles (0: one per core)
    "federation": "on",  # off: vehicles learn alone (to see what federation buys)
    "privacy": "central",
    "mechanism": "gaussian",
    "epsilon_budget": 1.0,  # each vehicle's, over its life (docs/PRIVACY.md)
    "releases": 3,  # the releases that budget pays for
    # When a vehicle releases: once it has learned this many readings, then growth times as
    # many, and so on (devices/onboard/vehicle.py); TOML or FEDFLEET_* only; 0: the device tuning's.
    "first_release_readings": 0,
    "release_growth": 0.0,
    "delta": 1e-5,
    "clip_norm": 4.0,  # in the fleet model's whitened units (federation/whitening.py)
    "ledger_dir": "fedfleet-data/ledgers",
    "id_prefix": "",  # before every simulated vehicle's id: fleets sharing a broker differ
    # Randomized daily alert answers (ln 3: the classic coin flip) cost budget every day: off by
    # default, since a lifetime budget of 1 cannot pay for one (docs/PRIVACY.md).
    "alert_report_epsilon": 0.0,
    # demo
    "duration": 0.0,
    # device
    "vehicle_id": "",
    "source": "",
    "username": "",
    "password": "",  # better from FEDFLEET_PASSWORD than from the command line
    # every command that connects (gateway, fleet, device); TLS files need an mqtts:// URL
    "ca_file": "",  # empty: the system's trusted CAs
    "cert_file": "",
    "key_file": "",
    "credentials_dir": "",  # fleet: each vehicle's login, as `fedfleet broker-setup` writes it
    "queue_size": 1000,
    "tuning": "vehicle",
}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
COMMANDS = ("demo", "broker", "gateway", "fleet", "device", "privacy")
# The demo runs short rounds so that a minute shows many of them. Its 50 vehicles are a small
# fleet: the noise of a central aggregate falls with the vehicles in it, and 50 need a budget
# of 8 each for what 1,000 get from 1 (docs/PRIVACY.md).
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {
    "demo": {"round_seconds": 5.0, "speedup": 120.0, "epsilon_budget": 8.0}}


class ConfigError(ValueError):
    """A setting that cannot be used; the CLI turns it into exit code 2."""


def _coerce(key: str, value: Any, where: str) -> Any:
    default = DEFAULTS[key]
    try:
        if isinstance(default, bool):
            raise TypeError
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number"}.get(type(default), "a string")
        raise ConfigError(f"{where}: expected {kind}, got {value!r}") from None


def _from_file(path: Path, command: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key in COMMANDS and isinstance(value, dict):
            continue
        settings[key] = value
    settings.update(data.get(command, {}))
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return {k: _coerce(k, v, f"{path}: {k}") for k, v in settings.items()}


def resolve(
    command: str,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> dict[str, Any]:
    """All settings for ``command``; flags set to ``None`` count as not given."""
    environ = os.environ if environ is None else environ
    settings = DEFAULTS | COMMAND_DEFAULTS.get(command, {})
    if config_file:
        settings.update(_from_file(Path(config_file), command))
    for key in DEFAULTS:
        name = f"FEDFLEET_{key.upper()}"
        if name in environ:
            settings[key] = _coerce(key, environ[name], name)
    settings.update({k: v for k, v in flags.items() if v is not None})
    return settings
