"""``fedfleet broker-setup``: a Mosquitto setup for a new deployment, and each client's settings.

Writes what :mod:`broker.access` writes (CA, certificates, logins, ACL, ``mosquitto.conf``),
then a settings file for the gateway and one for the simulated fleet into ``clients/``, so
that ``fedfleet gateway --config DIR/clients/gateway.toml`` connects as written.
"""

from __future__ import annotations

import argparse
import json
import pwd
import stat
import sys
from pathlib import Path
from typing import Any

from broker.access import (
    AUTH_MODES,
    GATEWAY_LOGIN,
    AccessSetup,
    Infrastructure,
    default_broker_user,
    write_setup,
)
from broker.bridge import Bridge
from federation import topics

__all__ = ["add_parser", "main"]


def add_parser(sub: Any) -> None:
    """Add the ``broker-setup`` subcommand to the CLI's subparsers."""
    parser = sub.add_parser(
        "broker-setup", help="write a Mosquitto setup (TLS, logins, ACL) for a new deployment",
        description="Write a development CA, the broker's certificate, one login per client "
                    "(the gateway and each vehicle), an ACL and a mosquitto.conf into DIR "
                    "(docs/SECURITY.md).")
    parser.add_argument("directory", metavar="DIR", help="a new or empty directory")
    parser.add_argument("--vehicles", type=int, default=0, metavar="N",
                        help="logins for a simulated fleet of N: veh-0000 ... (default 0)")
    parser.add_argument("--id", dest="ids", action="append", default=[], metavar="VEHICLE_ID",
                        help="a login for this vehicle id (repeatable)")
    parser.add_argument("--gateway-id", dest="gateway_ids", action="append", default=[],
                        metavar="ID", help="a login gateway-ID for one of the gateways that "
                        "share the lease (fedfleet gateway --gateway-id ID; repeatable)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="logins for N gateway workers: worker-0 ... (default 0)")
    parser.add_argument("--region-gateway", dest="region_gateways", action="append", default=[],
                        metavar="NAME", help="on a region's broker: a login NAME for the "
                        "region's gateway (a worker of id NAME that takes every update; "
                        "repeatable)")
    parser.add_argument("--id-prefix", default="", metavar="P",
                        help="name the --vehicles logins P + veh-0000, ..., as a fleet run "
                             "with --id-prefix P names its vehicles")
    parser.add_argument("--region", dest="regions", action="append", default=[], metavar="NAME",
                        help="a login bridge-NAME for region NAME's broker to bridge to this "
                             "one, and that bridge's mosquitto.conf lines (repeatable)")
    parser.add_argument("--host", dest="hosts", action="append", default=[], metavar="NAME",
                        help="a name or address clients reach the broker by (repeatable; the "
                             "first goes into the clients' settings; default localhost and "
                             "127.0.0.1)")
    parser.add_argument("--port", type=int, default=8883, metavar="P",
                        help="the TLS listener's port (default 8883)")
    parser.add_argument("--bind", default="", metavar="ADDRESS",
                        help="the TLS listener's address (default: every interface)")
    parser.add_argument("--plain-port", type=int, default=0, metavar="P",
                        help="also a plain listener on 127.0.0.1 (default: none)")
    parser.add_argument("--auth", choices=AUTH_MODES, default="password",
                        help="how clients log in over TLS: a password each (default), or a "
                             "client certificate each whose common name is the login")
    parser.add_argument("--broker-user", default=default_broker_user(), metavar="USER",
                        help="the user Mosquitto runs as (default: you, or mosquitto for root)")
    parser.add_argument("--root", metavar="PATH",
                        help="DIR as the broker and clients will see it, e.g. where a "
                             "container mounts it (default: DIR itself)")


def _ids(args: argparse.Namespace) -> list[str]:
    if args.vehicles < 0:
        raise ValueError(f"vehicles must be 0 or more, got {args.vehicles}")
    ids = [f"{args.id_prefix}veh-{index:04d}" for index in range(args.vehicles)] + args.ids
    for vehicle_id in ids:
        topics.check_vehicle_id(vehicle_id)
    return ids


def _toml(settings: dict[str, Any]) -> str:
    """Flat settings, then tables; JSON's string escapes are TOML's."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items() if not isinstance(v, dict)]
    for table, values in settings.items():
        if isinstance(values, dict):
            lines += ["", f"[{table}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


def _client_settings(setup: AccessSetup, login: str, url_login: bool) -> dict[str, Any]:
    clients = setup.path("clients")
    host = setup.hosts[0]
    host = f"[{host}]" if ":" in host else host
    user = f"{login}@" if url_login and setup.auth == "password" else ""
    settings: dict[str, Any] = {"mqtt": f"mqtts://{user}{host}:{setup.port}",
                                "ca_file": str(clients / "ca.crt")}
    if url_login and setup.auth == "password":
        settings["password"] = (setup.directory / "clients" / f"{login}.password").read_text(
            ).strip()
    elif url_login:
        settings |= {"cert_file": str(clients / f"{login}.crt"),
                     "key_file": str(clients / f"{login}.key")}
    return settings


def _infrastructure(args: argparse.Namespace) -> Infrastructure:
    if args.workers < 0:
        raise ValueError(f"workers must be 0 or more, got {args.workers}")
    for name in args.gateway_ids:
        topics.check_vehicle_id(f"{GATEWAY_LOGIN}-{name}")
    for region in args.regions:
        Bridge(region, "localhost", 1)  # checks the name
    for name in args.region_gateways:
        topics.check_vehicle_id(name)
    return Infrastructure(args.gateway_ids, args.workers, args.regions, args.region_gateways)


def _write_client_settings(setup: AccessSetup, vehicles: int, id_prefix: str = "") -> None:
    """``gateway.toml`` (one per gateway sharing the lease), one per worker, and
    ``fleet.toml`` for a simulated fleet, into ``clients/``."""
    files = {"gateway": _client_settings(setup, GATEWAY_LOGIN, url_login=True)}
    scaled = setup.infrastructure
    for name, login in zip(scaled.gateways, scaled.gateway_logins, strict=True):
        files[login] = _client_settings(setup, login, url_login=True) | {
            "gateway_id": name, "workers": max(1, scaled.workers)}
    for login in scaled.worker_logins:
        files[login] = _client_settings(setup, login, url_login=True) | {
            "role": "worker", "worker_id": login}
    for login in scaled.region_gateways:  # the only gateway on its broker: every update
        files[login] = _client_settings(setup, login, url_login=True) | {
            "role": "worker", "worker_id": login, "share_group": ""}
    if vehicles:
        files["fleet"] = _client_settings(setup, "", url_login=False)
        files["fleet"]["fleet"] = {"credentials_dir": str(setup.path("clients")),
                                   "vehicles": vehicles} | (
            {"id_prefix": id_prefix} if id_prefix else {})
    for what, settings in files.items():
        path = setup.directory / "clients" / f"{what}.toml"
        command = "fleet" if what == "fleet" else "gateway"
        header = (f"# fedfleet settings for the {what}, written by `fedfleet broker-setup`:\n"
                  f"#   fedfleet {command} --config {setup.path('clients', path.name)}\n")
        path.touch(mode=0o600)
        path.write_text(header + _toml(settings))


def main(args: argparse.Namespace) -> int:
    """Write the setup; 0 on success, 2 on a usage error, 1 if it cannot be written."""
    try:
        ids = _ids(args)
        for name, port in (("port", args.port), ("plain-port", args.plain_port)):
            if not 0 <= port <= 65535 or (name == "port" and port == 0):
                raise ValueError(f"{name} must be a TCP port (1-65535), got {port}")
        setup = AccessSetup(
            Path(args.directory), ids, (*topics.VEHICLE_KINDS, topics.SECAGG),
            topic_root=topics.ROOT,
            hosts=args.hosts or ["localhost", "127.0.0.1"], port=args.port, bind=args.bind,
            plain_port=args.plain_port, auth=args.auth, broker_user=args.broker_user,
            root=Path(args.root) if args.root else None,
            infrastructure=_infrastructure(args))
        write_setup(setup)
    except (ValueError, FileExistsError) as exc:
        print(f"fedfleet broker-setup: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fedfleet broker-setup: cannot write {args.directory}: {exc}", file=sys.stderr)
        return 1
    _write_client_settings(setup, args.vehicles, args.id_prefix)
    print(_summary(setup, ids, args.vehicles), flush=True)
    blocked = None if args.root else _unreachable(setup.directory / "broker", args.broker_user)
    if blocked is not None:
        print(f"fedfleet broker-setup: warning: Mosquitto runs as {args.broker_user}, who "
              f"cannot enter {blocked}: move the setup, or pass --broker-user", file=sys.stderr)
    return 0


def _unreachable(directory: Path, user: str) -> Path | None:
    """The first directory on the way to ``directory`` that ``user`` may not enter."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return None
    if account.pw_uid == 0:
        return None
    for step in [*reversed(directory.resolve().parents), directory.resolve()]:
        info = step.stat()
        search = (stat.S_IXUSR if info.st_uid == account.pw_uid else
                  stat.S_IXGRP if info.st_gid == account.pw_gid else stat.S_IXOTH)
        if not info.st_mode & search:
            return step
    return None


def _summary(setup: AccessSetup, ids: list[str], simulated: int) -> str:
    clients, broker = setup.path("clients"), setup.path("broker")
    logins = "a password each" if setup.auth == "password" else "a client certificate each"
    plain = f", plain MQTT on 127.0.0.1:{setup.plain_port}" if setup.plain_port else ""
    lines = [
        f"fedfleet broker-setup: wrote {setup.directory}: TLS on port {setup.port}{plain}; "
        f"{len(ids)} vehicle(s) and the gateway log in with {logins}",
        f"  broker:  mosquitto -c {broker / 'mosquitto.conf'}   (runs as {setup.broker_user})",
        f"  gateway: fedfleet gateway --config {clients / 'gateway.toml'}",
    ]
    if simulated:
        lines.append(f"  fleet:   fedfleet fleet --config {clients / 'fleet.toml'}")
    scaled = setup.infrastructure
    lines += [f"  {kind}: fedfleet gateway --config {clients / login}.toml"
              for kind, logins in (("gateway", scaled.gateway_logins),
                                   ("worker ", scaled.worker_logins),
                                   ("region gateway", scaled.region_gateways))
              for login in logins]
    lines += [f"  region {region}'s broker: append {clients}/bridge-{region}.conf to its "
              "mosquitto.conf" for region in scaled.regions]
    if ids:
        example = ids[-1]
        host = setup.hosts[0]
        if setup.auth == "password":
            lines.append(f"  device:  FEDFLEET_PASSWORD=\"$(cat {clients / example}.password)\" "
                         f"fedfleet device --id {example} --mqtt mqtts://{example}@{host}:"
                         f"{setup.port} --ca-file {clients / 'ca.crt'} --source SOURCE")
        else:
            lines.append(f"  device:  fedfleet device --id {example} --mqtt mqtts://{host}:"
                         f"{setup.port} --ca-file {clients / 'ca.crt'} --cert-file "
                         f"{clients / example}.crt --key-file {clients / example}.key "
                         "--source SOURCE")
    lines.append(f"Keep {setup.path('ca', 'ca.key')} off the broker and the clients; give each "
                 f"client ca.crt and its own login from {clients}.")
    return "\n".join(lines)
