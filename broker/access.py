"""A Mosquitto 2 setup for one deployment, written into one directory.

::

    DIR/ca/ca.crt, ca.key            the development CA (keep ca.key off the broker)
    DIR/broker/mosquitto.conf        mosquitto -c DIR/broker/mosquitto.conf
    DIR/broker/acl, passwd           who may do what; hashed passwords (password logins)
    DIR/broker/server.crt, .key      the broker's certificate, and the CA beside it
    DIR/broker/data/                 retained messages and queued sessions
    DIR/clients/ca.crt               what every client verifies the broker against
    DIR/clients/LOGIN.password       a password login (the gateway, each vehicle), or
    DIR/clients/LOGIN.crt, .key      a certificate login whose common name is the login
    DIR/clients/bridge-REGION.conf   a region broker's bridge to this one, with its login

Every client logs in over TLS; its client id is its login (``use_username_as_clientid``), so
no login can take over another's session. The ACL gives each vehicle its own topics and the
gateway the global ones; a scaled-out deployment adds gateways that share a lease
(``gateway-ID``), gateway workers (``worker-N``) and the bridges of region brokers
(``bridge-REGION``), each with only what its part needs. Paths in ``mosquitto.conf`` are
absolute, into ``root`` (the directory as the broker sees it, by default where it is
written), so the same file runs from a shell, a service manager or a container that mounts
the directory at ``root``.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from broker.bridge import Bridge, bridge_config
from broker.passwords import new_password, password_line

__all__ = ["AUTH_MODES", "GATEWAY_LOGIN", "MAX_QUEUED_BYTES", "MAX_QUEUED_MESSAGES",
           "AccessSetup", "ClientLogin", "Infrastructure", "acl_text", "client_login",
           "default_broker_user", "write_setup"]

GATEWAY_LOGIN = "gateway"
AUTH_MODES = ("password", "certificate")
# What Mosquitto queues for one client beyond what is in flight (docs/STORAGE.md): enough for
# the gateway's backlog across a restart or an outage, bounded in memory.
MAX_QUEUED_MESSAGES = 100_000
MAX_QUEUED_BYTES = 64 * 2**20
Auth = Literal["password", "certificate"]
_SECRET, _PRIVATE, _PUBLIC = 0o600, 0o640, 0o644


def default_broker_user() -> str:
    """Who the broker runs as: whoever writes the setup, or ``mosquitto`` for root."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    return "mosquitto" if me == "root" else me


@dataclass(frozen=True)
class Infrastructure:
    """The logins of a scaled-out deployment besides the gateway's: ``gateways`` share the
    gateway's lease (login ``gateway-ID``), ``workers`` take shares of the updates (login and
    worker id ``worker-N``), ``regions`` are region brokers bridged to this one (login
    ``bridge-REGION``; the region's gateway publishes its partial as worker id ``REGION``).
    On a region's own broker, ``region_gateways`` are that gateway's login and worker id.

    >>> Infrastructure(gateways=["a"], workers=2, regions=["north"]).logins
    ['gateway-a', 'worker-0', 'worker-1', 'bridge-north']
    """

    gateways: Sequence[str] = ()
    workers: int = 0
    regions: Sequence[str] = ()
    region_gateways: Sequence[str] = ()

    @property
    def gateway_logins(self) -> list[str]:
        return [f"{GATEWAY_LOGIN}-{name}" for name in self.gateways]

    @property
    def worker_logins(self) -> list[str]:
        return [f"worker-{index}" for index in range(self.workers)]

    @property
    def logins(self) -> list[str]:
        return [*self.gateway_logins, *self.worker_logins, *self.region_gateways,
                *(f"bridge-{region}" for region in self.regions)]


@dataclass(frozen=True)
class AccessSetup:
    """What to write. ``vehicles`` are logins (vehicle ids); ``hosts`` name the broker as
    clients reach it (the first is the one clients' settings use).

    Examples
    --------
    >>> import shutil, tempfile
    >>> top = Path(tempfile.mkdtemp())
    >>> me = pwd.getpwuid(os.geteuid()).pw_name
    >>> setup = AccessSetup(top / "setup", ["veh-0001"], ["update", "alert", "status"],
    ...                     broker_user=me)
    >>> written = write_setup(setup)
    >>> sorted(path.name for path in written if path.parent.name == "clients")
    ['ca.crt', 'gateway.password', 'veh-0001.password']
    >>> login = client_login(top / "setup" / "clients", "veh-0001")
    >>> login.username, len(login.password or ""), login.cert_file
    ('veh-0001', 32, None)
    >>> shutil.rmtree(top)
    """

    directory: Path
    vehicles: Sequence[str]
    vehicle_kinds: Sequence[str]
    topic_root: str = "fleet/v1"
    hosts: Sequence[str] = ("localhost", "127.0.0.1")
    port: int = 8883
    bind: str = ""  # empty: every interface
    plain_port: int = 0  # 0: none; else plain MQTT on 127.0.0.1 only
    auth: Auth = "password"
    broker_user: str = field(default_factory=default_broker_user)
    root: Path | None = None
    infrastructure: Infrastructure = Infrastructure()

    def path(self, *parts: str) -> Path:
        """A path as the broker and the clients see it (under ``root``)."""
        return Path(self.root or self.directory.resolve(), *parts)

    @property
    def logins(self) -> list[str]:
        return [GATEWAY_LOGIN, *self.infrastructure.logins, *self.vehicles]


@dataclass(frozen=True)
class ClientLogin:
    """One client's login from a clients directory: a password, or a certificate and key."""

    username: str
    password: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def client_login(clients_dir: Path, login: str) -> ClientLogin:
    """``login``'s credentials in ``clients_dir``; ``FileNotFoundError`` if it has none."""
    password, cert, key = (clients_dir / f"{login}{suffix}"
                           for suffix in (".password", ".crt", ".key"))
    if password.is_file():
        return ClientLogin(login, password=password.read_text().strip())
    if cert.is_file() and key.is_file():
        return ClientLogin(login, cert_file=str(cert), key_file=str(key))
    raise FileNotFoundError(f"no login for {login!r} in {clients_dir} "
                            f"(neither {password.name} nor {cert.name} and {key.name})")


def acl_text(vehicle_kinds: Sequence[str], topic_root: str = "fleet/v1",
             infrastructure: Infrastructure = Infrastructure()) -> str:
    """The ACL: each vehicle writes its own topics (``%u`` is its login) and reads the global
    ones and the gateway's answers to it in secure rounds; the gateway reads every vehicle's
    and alone writes the global ones and those answers. A scaled-out deployment's logins
    (:class:`Infrastructure`) get what their part needs and no more."""
    vehicle_lines = [f"pattern write {topic_root}/vehicles/%u/{kind}" for kind in vehicle_kinds]
    gateway_lines = [f"topic read {topic_root}/vehicles/+/{kind}" for kind in vehicle_kinds]
    gateway, scaled = f"{topic_root}/gateway", infrastructure.logins
    if scaled:  # the partials, forwarded updates and lease; the lease is the gateways' own
        gateway_lines += [f"topic read {gateway}/#", f"topic write {gateway}/lease"]
    sections = [[f"user {login}", *gateway_lines, f"topic write {topic_root}/global/#",
                 f"topic write {topic_root}/secagg/#", ""]
                for login in [GATEWAY_LOGIN, *infrastructure.gateway_logins]]
    # A worker reads the updates (through the gateways' shared subscription) and publishes
    # its own partial and the updates it forwards; it reads no status or alert.
    sections += [[f"user {login}", f"topic read {topic_root}/vehicles/+/update",
                  f"topic write {gateway}/partial/{login}", f"topic write {gateway}/forwarded/+",
                  ""] for login in [*infrastructure.worker_logins,
                                    *infrastructure.region_gateways]]
    # A bridge brings up its region's partial (its gateway's worker id is the region's name),
    # forwarded updates, statuses and alerts; it reads the round and the model (every login
    # may) to bring them down.
    sections += [[f"user bridge-{region}", f"topic write {gateway}/partial/{region}",
                  f"topic write {gateway}/forwarded/+",
                  f"topic write {topic_root}/vehicles/+/status",
                  f"topic write {topic_root}/vehicles/+/alert", ""]
                 for region in infrastructure.regions]
    return "\n".join([
        "# fedfleet access control (mosquitto.conf(5), acl_file). Anything not granted is",
        "# denied. Pattern lines apply to every login, the gateway's included, so no vehicle",
        f"# may be called {GATEWAY_LOGIN!r} (or take another client's login). Mosquitto warns",
        "# that the read pattern has no %u or %c: it is meant for every login.",
        *vehicle_lines,
        f"pattern read {topic_root}/global/#",
        f"pattern read {topic_root}/secagg/%u",
        "",
        *(line for section in sections for line in section),
    ])


def _conf_text(setup: AccessSetup) -> str:
    broker = setup.path("broker")
    tls = [
        f"listener {setup.port}{' ' + setup.bind if setup.bind else ''}",
        "protocol mqtt",
        f"cafile {broker / 'ca.crt'}",
        f"certfile {broker / 'server.crt'}",
        f"keyfile {broker / 'server.key'}",
        "tls_version tlsv1.2",
        "# A client's id is its login: no login can take over another's session.",
        "use_username_as_clientid true",
    ]
    if setup.auth == "certificate":
        tls += ["# The login is the common name of a client certificate the CA issued.",
                "require_certificate true", "use_identity_as_username true"]
    plain = [] if not setup.plain_port else [
        "", "# Plain MQTT for tools on this machine only: nothing crosses a network in clear.",
        f"listener {setup.plain_port} 127.0.0.1", "protocol mqtt",
        "use_username_as_clientid true"]
    logins = ([f"password_file {broker / 'passwd'}"] if setup.auth == "password" else [])
    return "\n".join([
        "# Mosquitto 2 configuration for a fedfleet deployment (mosquitto.conf(5)), written by",
        f"# `fedfleet broker-setup`. Run it with: mosquitto -c {broker / 'mosquitto.conf'}",
        "",
        "# Every client logs in; the ACL confines each vehicle to its own topics.",
        "per_listener_settings false",
        "allow_anonymous false",
        *logins,
        f"acl_file {broker / 'acl'}",
        "",
        *tls,
        *plain,
        "",
        f"# As root, Mosquitto switches to this user, who must be able to read {broker}.",
        f"user {setup.broker_user}",
        "",
        "# Keep retained messages (the open round, the global model, every vehicle's status)",
        "# and queued QoS 1 messages across broker restarts.",
        "persistence true",
        f"persistence_location {broker / 'data'}/",
        "autosave_interval 60",
        "",
        "# fedfleet rejects payloads over 64 KiB; a larger packet is a fault or an attack, and",
        "# the broker disconnects its sender.",
        "max_packet_size 262144",
        "# QoS 1 messages queued per client beyond those in flight, kept for the gateway while",
        "# it is away or catching up and dropped past either limit: 100,000 alerts are over",
        "# 16 minutes at 100 a second, 64 MiB of payloads bounds what a client's queue holds.",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        "",
        "# Send small packets at once. Without it, a TLS client waits about 40 ms for its",
        "# CONNACK, held back behind the unacknowledged TLS session tickets (benchmarks/tls.py).",
        "set_tcp_nodelay true",
        "",
        "# stderr is unbuffered: each line shows at once, in a terminal, a file or a journal.",
        "log_dest stderr",
        *(f"log_type {kind}" for kind in ("error", "warning", "notice", "information")),
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "",
    ])


def _write(path: Path, content: str | bytes, mode: int) -> None:
    data = content.encode() if isinstance(content, str) else content
    # Created with its final mode: a secret is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _hand_to_broker_user(broker_dir: Path, user: str) -> None:
    """As root, give the broker's files to the user Mosquitto switches to, if it exists."""
    if os.geteuid() != 0 or user == "root":
        return
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return  # e.g. written in one container for a broker in another
    for path in [broker_dir, *broker_dir.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid)


def _bridge_text(setup: AccessSetup, region: str,
                 files: list[tuple[Path, str | bytes, int]]) -> str:
    """The lines a region broker appends to its ``mosquitto.conf`` to bridge to this one."""
    login = f"bridge-{region}"
    password = next((str(content).strip() for path, content, _ in files
                     if path.name == f"{login}.password"), "")
    certificate = {} if password else {
        "certfile": str(setup.path("clients", f"{login}.crt")),
        "keyfile": str(setup.path("clients", f"{login}.key"))}
    return bridge_config(Bridge(region, setup.hosts[0], setup.port, username=login,
                                password=password, cafile=str(setup.path("clients", "ca.crt")),
                                **certificate))


def write_setup(setup: AccessSetup) -> list[Path]:
    """Write the whole setup into ``setup.directory``, which must be new or empty.

    Returns the files written, as written (not under ``root``). ``FileExistsError`` if the
    directory already holds something: a second setup would replace the CA that every
    deployed client trusts.
    """
    if GATEWAY_LOGIN in setup.vehicles:
        raise ValueError(f"{GATEWAY_LOGIN!r} is the gateway's login, not a vehicle id")
    if len(set(setup.vehicles)) != len(setup.vehicles):
        raise ValueError("vehicle ids must be unique")
    if len(set(setup.logins)) != len(setup.logins):
        raise ValueError("the gateways', workers' and bridges' logins must differ from each "
                         "other and from every vehicle id")
    if setup.auth == "certificate" and setup.plain_port:
        raise ValueError("a plain listener needs password logins: certificates need TLS")
    top = setup.directory
    if top.exists() and any(top.iterdir()):
        raise FileExistsError(f"{top} is not empty: write a new setup into a new directory")
    # Here, not at the top: every command that connects reads logins, only this writes them.
    from broker.certificates import CertificateAuthority

    ca_dir, broker_dir, clients_dir = (top / name for name in ("ca", "broker", "clients"))
    for directory in (ca_dir, broker_dir, broker_dir / "data", clients_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = CertificateAuthority.create("fedfleet development CA")
    server = ca.issue_server(list(setup.hosts))
    files: list[tuple[Path, str | bytes, int]] = [
        (ca_dir / "ca.crt", ca.certificate_pem, _PUBLIC),
        (ca_dir / "ca.key", ca.key_pem, _SECRET),
        (broker_dir / "ca.crt", ca.certificate_pem, _PUBLIC),
        (broker_dir / "server.crt", server.certificate_pem, _PUBLIC),
        (broker_dir / "server.key", server.key_pem, _SECRET),
        (broker_dir / "acl", acl_text(setup.vehicle_kinds, setup.topic_root,
                                      setup.infrastructure), _PRIVATE),
        (broker_dir / "mosquitto.conf", _conf_text(setup), _PRIVATE),
        (clients_dir / "ca.crt", ca.certificate_pem, _PUBLIC),
    ]
    if setup.auth == "password":
        passwords = {login: new_password() for login in setup.logins}
        files.append((broker_dir / "passwd", "".join(
            password_line(login, pw) + "\n" for login, pw in passwords.items()), _SECRET))
        files += [(clients_dir / f"{login}.password", pw + "\n", _SECRET)
                  for login, pw in passwords.items()]
    else:
        for login in setup.logins:
            issued = ca.issue_client(login)
            files += [(clients_dir / f"{login}.crt", issued.certificate_pem, _PUBLIC),
                      (clients_dir / f"{login}.key", issued.key_pem, _SECRET)]
    files += [(clients_dir / f"bridge-{region}.conf", _bridge_text(setup, region, files),
               _SECRET) for region in setup.infrastructure.regions]
    for path, content, mode in files:
        _write(path, content, mode)
    _hand_to_broker_user(broker_dir, setup.broker_user)
    return [path for path, _, _ in files]
