"""What each subcommand does with its resolved settings."""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from broker.access import client_login
from broker.embedded import BrokerError, EmbeddedBroker
from devices.onboard.tuning import ENGINE_CYCLES, TEST_RIG, VEHICLE
from devices.onboard.vehicle import Vehicle
from devices.runners.agent import DeviceAgent
from devices.runners.fleet import Fleet, simulated_vehicles
from devices.sim.faults import FaultSpec, plan_faults
from devices.sim.simulator import vehicle_ids
from devices.sources.attach import open_source
from federation import messages, topics
from federation.features import VEHICLE_SCHEMA, Schema, SchemaError, load_schema
from federation.transport import (
    DEFAULT_MQTT_URL,
    MqttTarget,
    check_tls,
    parse_mqtt_url,
    tls_context,
)
from fedfleet import scaleout
from fedfleet.config import ConfigError
from fedfleet.limits import SPARE_FILES, local_ports_for, most_open_files, open_files_for
from fedfleet.parallel import run_parts, shares
from fedfleet.privacy import budget_report, describe, ledgers, secure_epsilon, vehicle_options
from fedfleet.progress import DeviceProgress, Progress
from gateway.coordinator import Coordinator
from gateway.dashboard import Dashboard
from gateway.lease import LeaseState
from gateway.secure import SecureGateway
from gateway.service import Gateway
from gateway.store import SQLiteStore, Store, open_store, sqlite_path
from gateway.strategy import make_strategy

__all__ = ["run"]

log = logging.getLogger("fedfleet")

DEMO_STORE = Path("fedfleet-data/demo.db")
TUNINGS = {"vehicle": VEHICLE, "engine-cycles": ENGINE_CYCLES, "test-rig": TEST_RIG}
DEMO_LEDGERS = Path("fedfleet-data/demo-ledgers")
# Simulated vehicles start together, so they owe their updates together: each sends in its
# own place in the first half of a round, and the other half is left for delivery.
SIMULATED_STAGGER = 0.5
# How long a command that connects waits for a TLS handshake before it gives up.
TLS_CHECK_S = 10.0


def run(command: str, settings: dict[str, Any], stop: threading.Event) -> int:
    handlers: dict[str, Callable[[dict[str, Any], threading.Event], int]] = {
        "demo": demo, "broker": broker, "gateway": gateway, "fleet": fleet,
        "device": device, "privacy": privacy}
    return handlers[command](settings, stop)


def _target(settings: dict[str, Any]) -> MqttTarget:
    try:
        return parse_mqtt_url(settings["mqtt"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _login(settings: dict[str, Any]) -> MqttTarget:
    """The broker and how to log in: the URL, then the login and TLS settings over it."""
    target = _target(settings)
    username = settings["username"] or target.username
    password = settings["password"] or target.password
    if password and not username:
        raise ConfigError("a password needs a login: give --username, or put the login in "
                          "the URL (mqtts://LOGIN@HOST); FEDFLEET_PASSWORD counts as --password")
    ca_file, cert_file, key_file = (settings[key] or None
                                    for key in ("ca_file", "cert_file", "key_file"))
    if (ca_file or cert_file or key_file) and not target.tls:
        raise ConfigError("--ca-file, --cert-file and --key-file need an mqtts:// URL")
    if key_file and not cert_file:
        raise ConfigError("--key-file needs --cert-file")
    return replace(target, username=username, password=password, ca_file=ca_file,
                   cert_file=cert_file, key_file=key_file)


def _check_tls(target: MqttTarget) -> None:
    """Usage error for TLS files that cannot be used; :class:`TlsError` (exit 1, one line)
    within ``TLS_CHECK_S`` if the handshake fails."""
    if not target.tls:
        return
    for option, path in (("ca-file", target.ca_file), ("cert-file", target.cert_file),
                         ("key-file", target.key_file)):
        if path and not Path(path).is_file():
            raise ConfigError(f"--{option} {path}: no such file")
    try:
        tls_context(target)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the TLS files {target.ca_file or ''} "
                          f"{target.cert_file or ''} {target.key_file or ''}: {exc}") from None
    check_tls(target, TLS_CHECK_S)


def _vehicle_logins(settings: dict[str, Any], target: MqttTarget,
                    vehicle_ids: list[str]) -> dict[str, MqttTarget] | None:
    """Each vehicle's own login from ``--credentials-dir``; ``None`` without one."""
    if not settings["credentials_dir"]:
        return None
    if target.username:
        raise ConfigError("--credentials-dir gives each vehicle its own login: drop the "
                          "login from the URL and --username")
    logins = {}
    for vehicle_id in vehicle_ids:
        try:
            login = client_login(Path(settings["credentials_dir"]), vehicle_id)
        except FileNotFoundError as exc:
            raise ConfigError(f"{exc}: write logins for the fleet with `fedfleet broker-setup "
                              f"--vehicles {settings['vehicles']}`") from None
        logins[vehicle_id] = replace(
            target, username=login.username, password=login.password,
            cert_file=login.cert_file or target.cert_file,
            key_file=login.key_file or target.key_file)
    return logins


def broker(settings: dict[str, Any], stop: threading.Event) -> int:
    host = _target(settings).host
    files = most_open_files()
    room = "" if files is None else (f", for up to about {files - SPARE_FILES} connections "
                                     "(open files)")
    with EmbeddedBroker(host, settings["port"]) as embedded:
        print(f"embedded broker listening on {embedded.url}{room}; Ctrl-C to stop", flush=True)
        stop.wait()
    return 0


def _schema(settings: dict[str, Any]) -> Schema:
    try:
        return load_schema(settings["schema"]) if settings["schema"] else VEHICLE_SCHEMA
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None


def _gateway(settings: dict[str, Any], target: MqttTarget, store: Store,
             observer: Callable[[Any], None], schema: Schema = VEHICLE_SCHEMA) -> Gateway:
    make: Callable[..., Gateway] = Gateway
    extra: dict[str, Any] = {"group": settings["share_group"] or None}
    if settings["gateway_id"]:  # one of several coordinators sharing a lease
        if not settings["workers"]:
            raise ConfigError("--gateway-id needs --workers K: gateways sharing a lease take "
                              "no share of the updates, their workers take them all")
        extra = {"group": None, "client_id": f"fedfleet-gateway-{settings['gateway_id']}",
                 "lease": LeaseState(settings["gateway_id"], settings["lease_seconds"],
                                     now_s=time.monotonic())}
    if settings["privacy"] == "secagg":
        if settings["workers"]:
            raise ConfigError("--privacy secagg runs on one gateway: drop --workers")
        make = functools.partial(SecureGateway, epsilon=secure_epsilon(settings),
                                 delta=settings["delta"])
    elif settings["workers"]:  # the coordinator of workers or region gateways
        make = functools.partial(Coordinator, workers=settings["workers"],
                                 partial_grace_s=settings["partial_grace_seconds"], **extra)
    gateway = make(target, store, round_seconds=settings["round_seconds"],
                      min_updates=settings["min_updates"],
                      target_updates=settings["target_updates"] or None, observer=observer,
                      schema=schema, strategy=make_strategy(settings["strategy"]),
                      clip_norm=settings["clip_norm"],
                      readings_per_s=settings["max_reading_rate"])
    if settings["rollback"]:
        try:
            model = gateway.rollback(settings["rollback"])
        except ValueError as exc:
            raise ConfigError(f"--rollback: {exc}") from None
        print(f"model v{settings['rollback']} restored as v{model.version}; it is pushed "
              "retained once the broker answers", flush=True)
    return gateway


def gateway(settings: dict[str, Any], stop: threading.Event) -> int:
    target = _login(settings)
    schema = _schema(settings)
    _check_tls(target)
    if settings["role"] == "worker":
        return scaleout.worker(settings, target, schema, stop)
    print(f"fleet schema {schema.name} ({schema.digest}): {len(schema)} features, "
          f"{len(schema.health)} health sensors", flush=True)
    store = _open_store(settings, schema)
    try:
        with _dashboard(settings, store, schema) as url:
            if url:
                print(f"dashboard on {url}", flush=True)
            _gateway(settings, target, store, Progress(), schema).run(stop)
    finally:
        store.close()
    return 0


def _open_store(settings: dict[str, Any], schema: Schema = VEHICLE_SCHEMA) -> Store:
    try:
        return open_store(settings["store"], schema)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def privacy(settings: dict[str, Any], stop: threading.Event) -> int:
    """Print the fleet's privacy budgets and the global noise level from the store."""
    path = sqlite_path(settings["store"])
    if path not in (None, ":memory:") and not Path(path).is_file():  # reading never creates
        raise ConfigError(f"no store at {path}: give the file the gateway writes, as in "
                          "--store sqlite:///fleet.db (relative) or sqlite:////abs/fleet.db")
    store = _open_store(settings, _schema(settings))
    try:
        print(budget_report(store), flush=True)
    finally:
        store.close()
    return 0


@contextlib.contextmanager
def _dashboard(settings: dict[str, Any], store: Store,
               schema: Schema = VEHICLE_SCHEMA) -> Iterator[str | None]:
    """Serve the dashboard of ``store`` while the block runs; yield its URL (``None``: off)."""
    if not settings["http_port"]:
        yield None
        return
    with Dashboard(store, settings["http_host"], settings["http_port"],
                   schema=schema) as dashboard:
        yield dashboard.url


def _vehicles(settings: dict[str, Any], start_ts_s: float, ledger_dir: Path,
              indices: range | None = None) -> list[Vehicle]:
    return simulated_vehicles(settings["vehicles"], settings["seed"],
                              fault_fraction=settings["fault_fraction"], start_ts_s=start_ts_s,
                              ledger_for=ledgers(settings, ledger_dir),
                              id_prefix=settings["id_prefix"], indices=indices,
                              stagger=SIMULATED_STAGGER, **vehicle_options(settings))


def fleet(settings: dict[str, Any], stop: threading.Event) -> int:
    start = time.time()
    parts = shares(settings["vehicles"], settings["processes"])
    most = max((len(part) for part in parts), default=0)
    open_files_for(most, f"{most} vehicles in one process")
    local_ports_for(settings["vehicles"], f"{settings['vehicles']} vehicles on one machine")
    print(f"fedfleet fleet: {settings['vehicles']} vehicles in {len(parts)} "
          f"process{'es' if len(parts) > 1 else ''}, privacy {describe(settings)}, ledgers in "
          f"{settings['ledger_dir']}", flush=True)
    if len(parts) == 1:
        _fleet_part(settings, start, parts[0], Progress(faults=_faults(settings),
                                                         sim_start_s=start), stop)
        return 0
    _check_tls(_login(settings))  # once here, rather than a failure in every child
    part = functools.partial(_fleet_part, settings, start)
    return run_parts(part, parts, Progress(faults=_faults(settings), sim_start_s=start), stop)


def _fleet_part(settings: dict[str, Any], start_ts_s: float, share: range,
                observer: Callable[[Any], None], stop: threading.Event) -> None:
    """The vehicles of ``share`` against the broker, on the calling thread."""
    target = _login(settings)
    vehicles = _vehicles(settings, start_ts_s, Path(settings["ledger_dir"]), share)
    logins = _vehicle_logins(settings, target, [v.vehicle_id for v in vehicles])
    _check_tls(next(iter(logins.values())) if logins else target)
    Fleet(target, vehicles, speedup=settings["speedup"], observer=observer,
          logins=logins).run(stop)


def device(settings: dict[str, Any], stop: threading.Event) -> int:
    """One vehicle on a real sensor source, until Ctrl-C, --duration or the source's end."""
    target = _login(settings)
    schema = _schema(settings)
    if not settings["vehicle_id"] or not settings["source"]:
        raise ConfigError("--id and --source are required")
    try:
        topics.check_vehicle_id(settings["vehicle_id"])
        source = open_source(settings["source"], schema.names)
    except ValueError as exc:  # a bad id, or a SourceError
        raise ConfigError(str(exc)) from None
    # Privacy noise comes from the secure default source: never seeded.
    if settings["tuning"] not in TUNINGS:
        raise ConfigError(f"tuning must be one of {', '.join(sorted(TUNINGS))}")
    ledger = ledgers(settings, Path(settings["ledger_dir"]))(settings["vehicle_id"])
    vehicle = Vehicle(settings["vehicle_id"], source, ledger=ledger,
                      **(TUNINGS[settings["tuning"]].vehicle_kwargs(schema)
                         | vehicle_options(settings)))
    progress = DeviceProgress(settings["vehicle_id"])
    _check_tls(target)
    agent = DeviceAgent(target, vehicle, max_queued=settings["queue_size"], observer=progress)
    print(f"fedfleet device {vehicle.vehicle_id}: source {settings['source']}, schema "
          f"{schema.name} ({schema.digest}), broker {target.host}:{target.port}; Ctrl-C to stop"
          f"\nprivacy: {describe(settings)}", flush=True)
    agent.run(stop, duration_s=settings["duration"] or None)
    print(progress.summary(agent.status(), source), flush=True)
    return 0


def _faults(settings: dict[str, Any]) -> dict[str, FaultSpec]:
    """The faults the simulated fleet of ``settings`` is planned with, by vehicle id."""
    planned = plan_faults(vehicle_ids(settings["vehicles"]), settings["seed"],
                          settings["fault_fraction"])
    return {f"{settings['id_prefix']}{vehicle_id}": fault
            for vehicle_id, fault in planned.items()}


def _start_demo_broker(target: MqttTarget, port_chosen: bool) -> EmbeddedBroker:
    """The demo's broker on ``target``'s port; if that port is taken, fail when the user
    chose it, and otherwise say so and take a free one."""
    embedded = EmbeddedBroker(target.host, target.port)
    try:
        embedded.start()
    except BrokerError as exc:
        if port_chosen:
            raise BrokerError(f"{exc}; choose another port with --mqtt "
                              f"mqtt://{target.host}:PORT") from None
        embedded = EmbeddedBroker(target.host, 0)
        embedded.start()
        print(f"port {target.port} is taken (another MQTT broker?): the demo's broker listens "
              f"on {embedded.url} instead; choose a port with --mqtt", flush=True)
    return embedded


def demo(settings: dict[str, Any], stop: threading.Event) -> int:
    """Broker, gateway and fleet in one process, with progress, until Ctrl-C or --duration."""
    count = settings["vehicles"]  # the embedded broker holds the other end of each
    open_files_for(2 * count, f"{count} vehicles and their broker in one process",
                   "run fewer vehicles, or the broker, gateway and fleet apart")
    local_ports_for(count, f"{count} vehicles on one machine")
    with contextlib.ExitStack() as stack:
        for stale in (DEMO_STORE, *(DEMO_STORE.with_name(DEMO_STORE.name + s)
                                    for s in ("-wal", "-shm"))):  # SQLite's log beside it
            stale.unlink(missing_ok=True)
        shutil.rmtree(DEMO_LEDGERS, ignore_errors=True)
        store = SQLiteStore(DEMO_STORE)
        stack.callback(store.close)
        url = stack.enter_context(_dashboard(settings, store))
        embedded = _start_demo_broker(_target(settings),
                                      settings["mqtt"] != DEFAULT_MQTT_URL)
        stack.callback(embedded.stop)
        target = parse_mqtt_url(embedded.url)
        start = time.time()
        vehicles = _vehicles(settings, start, DEMO_LEDGERS)
        progress = Progress(faults=_faults(settings), sim_start_s=start)
        print(f"fedfleet demo: {len(vehicles)} vehicles ({len(progress.faults)} with an injected "
              f"fault), speedup {settings['speedup']:g}x, rounds of "
              f"{settings['round_seconds']:g} s, broker {embedded.url}, store {DEMO_STORE}; "
              f"Ctrl-C to stop", flush=True)
        if url:
            print(f"dashboard: open {url} in a browser", flush=True)
        print(f"privacy: {describe(settings)}", flush=True)
        gw = _gateway(settings, target, store, progress)
        failure: list[BaseException] = []
        gw_thread = threading.Thread(target=_guarded, args=(gw.run, stop, failure),
                                     name="gateway")
        gw_thread.start()
        try:
            Fleet(target, vehicles, speedup=settings["speedup"], observer=progress.fleet_only).run(
                stop, duration_s=settings["duration"] or None)
        finally:
            stop.set()
            gw_thread.join(timeout=30)
    if failure:
        raise RuntimeError(f"gateway failed: {failure[0]}")
    sent = [v.last_update for v in vehicles if v.last_update is not None]
    model_bytes = len(messages.encode_binary(gw.model)) if gw.model else None
    print(progress.summary(len(sent[0].payload) if sent else None, model_bytes), flush=True)
    return 0


def _guarded(run: Callable[[threading.Event], None], stop: threading.Event,
             failure: list[BaseException]) -> None:
    try:
        run(stop)
    except Exception as exc:  # reported by the caller; the fleet must stop too
        failure.append(exc)
        stop.set()
