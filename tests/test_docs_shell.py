"""Every shell example of README.md and docs/*.md (each fenced ``sh`` block) runs here as
written, against real servers that the test starts, or is in :data:`MARKED` with why it
cannot (Docker, hardware, a downloaded dataset and minutes of CPU) and what is checked
instead. An example that is in neither, or a block that fails, fails the suite.

"As written" allows only what a reader's machine differs in, stated per example in
:data:`SUBSTITUTIONS`: free ports instead of fixed ones, a local host instead of
``broker.example``, a test directory instead of ``DIR``. The commands that would otherwise
reach 127.0.0.1:1883 or serve on :8080 get ``FEDFLEET_MQTT`` and ``FEDFLEET_HTTP_PORT`` in their
environment, which the README documents as settings, and leave the text alone.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devices.sources.stdin import StdinSource
from federation.features import VEHICLE_SCHEMA, load_schema
from fedfleet.cli import _parser
from tests.servers import Elm327Emulator, Mosquitto, VictoriaMetrics, free_port
from tests.test_device_agent import _wait_for, running_gateway

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent


def _examples() -> dict[str, str]:
    """``"FILE: its first line"`` -> the block, for every fenced sh block."""
    found = {}
    for doc in DOCS:
        for block in re.findall(r"^```sh[^\n]*\n(.*?)^```", doc.read_text(), re.S | re.M):
            key = f"{doc.relative_to(ROOT)}: {block.splitlines()[0]}"
            assert key not in found, f"two examples of {key}: make their first lines differ"
            found[key] = block
    return found


EXAMPLES = _examples()


def _key(doc: str, start: str) -> str:
    """The one example of ``doc`` whose first line starts with ``start``."""
    keys = [k for k in EXAMPLES if k.startswith(f"{doc}: {start}")]
    assert len(keys) == 1, f"{doc}: {len(keys)} examples start with {start!r}"
    return keys[0]


def _commands(block: str) -> list[str]:
    """A block's commands, one per line once continuation lines are joined."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def _env(**settings: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:/usr/sbin:{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT), **settings}


def _run(command: str, cwd: Path, timeout_s: float = 120, **settings: str
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-e", "-c", command], cwd=cwd, env=_env(**settings),
                          capture_output=True, text=True, timeout=timeout_s)


@contextmanager
def _background(command: str, cwd: Path, **settings: str) -> Iterator[subprocess.Popen[str]]:
    """A long-running command of an example, stopped with SIGTERM (as Ctrl-C would) at the
    end; the block fails if it had exited with an error meanwhile."""
    *before, last = command.strip().splitlines()  # the last line is the one that runs on
    script = "\n".join([*before, f"exec {last}"])
    process = subprocess.Popen(["sh", "-c", script], cwd=cwd, env=_env(**settings),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield process
        assert process.poll() is None, f"{command} exited: {process.communicate()[0]}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory that Mosquitto, once it has switched to its own user, may enter."""
    path = Path(tempfile.mkdtemp(prefix="fedfleet-docs-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- the examples that run -----------------------------------------------------------------

def _make_demo(block: str, tmp: Path) -> None:
    done = _run(block, ROOT, timeout_s=300, FEDFLEET_DURATION="15", FEDFLEET_HTTP_PORT="0")

    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"round 1: \d+ merged", done.stdout), done.stdout


def _real_deployment(block: str, tmp: Path) -> None:
    port = free_port()
    setup, broker, gateway, fleet = _commands(block.replace(
        " --host broker.example", f" --port {port}"))
    db = tmp / "fleet.db"

    assert _run(setup, tmp).returncode == 0
    with _background(broker, tmp), _background(gateway, tmp, FEDFLEET_HTTP_PORT="0"), \
            _background(fleet, tmp):
        _wait_for(lambda: _rows(db, "SELECT COUNT(*) FROM statuses WHERE state = 'online'")
                  == 200, 60, "the fleet's 200 vehicles online")
        _wait_for(lambda: _rows(db, "SELECT MAX(accepted) FROM rounds WHERE quorum_met")
                  >= 5, 90, "a round that met its quorum of 5")


def _rows(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as connection:
            return int(connection.execute(sql).fetchone()[0] or 0)
    except sqlite3.OperationalError:  # the gateway is still creating its tables
        return 0


def _with_a_gateway(run: Callable[[str, Path, str], None]) -> Callable[[str, Path], None]:
    """Run an example against a plain Mosquitto with a gateway whose rounds last a second, on
    the schema the example names (``--schema``), as a reader's gateway would be: a device
    whose input ends then sends its last readings to the next round, and stops."""
    def with_gateway(block: str, tmp: Path) -> None:
        named = re.search(r"--schema (\S+)", block)
        schema = {"schema": load_schema(ROOT / named.group(1))} if named else {}
        with Mosquitto() as broker, running_gateway(broker.url, tmp / "gw.db", **schema):
            run(block, tmp, broker.url)
    return with_gateway


@_with_a_gateway
def _csv_log(block: str, tmp: Path, url: str) -> None:
    done = _run(block, ROOT, FEDFLEET_MQTT=url, FEDFLEET_LEDGER_DIR=str(tmp / "ledgers"))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "600 readings" in done.stdout, done.stdout


@_with_a_gateway
def _stdin_script(block: str, tmp: Path, url: str) -> None:
    done = _run(block, ROOT, FEDFLEET_MQTT=url, FEDFLEET_LEDGER_DIR=str(tmp / "ledgers"))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "600 readings" in done.stdout and "0 incomplete" in done.stdout, done.stdout


def _protocol_example(block: str, tmp: Path) -> None:
    update = re.search(r"```json update\n(.*?)\n```",
                       (ROOT / "docs" / "PROTOCOL.md").read_text(), re.S)
    assert update
    (tmp / "update.json").write_text(update.group(1))  # "an update payload like the one above"
    with Mosquitto() as broker, running_gateway(broker.url, tmp / "gw.db") as gateway:
        done = _run(block.replace("-p 1883", f"-p {broker.port}"), tmp, timeout_s=30)
        if "mosquitto_pub" in block:
            _wait_for(lambda: any(a.vehicle_id == "veh-0042" for a in gateway.store.alerts()),
                      10, "the alert")

    assert done.returncode == 0, done.stderr
    assert "mosquitto_pub" in block or "fleet/v1/global/round {" in done.stdout, done.stdout


def _influx_gateway(block: str, tmp: Path) -> None:
    with Mosquitto() as broker, VictoriaMetrics() as tsdb:
        text = block.replace("influxdb.local:8086", f"127.0.0.1:{tsdb.port}").replace(
            "…", "any-token")  # victoria-metrics takes any token
        with _background(text, tmp,
                         FEDFLEET_MQTT=broker.url, FEDFLEET_HTTP_PORT="0"):
            _wait_for(lambda: (tmp / "fedfleet-data" / "influx-fedfleet.db").exists(), 20,
                      "the gateway's local InfluxDB outbox")
            time.sleep(1)


def _obd_over_tls(block: str, tmp: Path) -> None:
    setup, port = tmp / "setup", free_port()
    me = pwd.getpwuid(os.geteuid()).pw_name  # the test broker logs into its own temp dir
    assert _run(f"fedfleet broker-setup {setup} --id truck-9 --port {port} --broker-user {me}",
                tmp).returncode == 0
    with Mosquitto(port, conf=setup / "broker" / "mosquitto.conf", tls=True), \
            Elm327Emulator() as car:
        text = (block.replace("DIR/", f"{setup}/").replace("broker.example:8883",
                                                           f"localhost:{port}")
                .replace("obd:///dev/ttyUSB0", f"obd://{car.url}"))
        done = _run(text.rstrip() + " --duration 8", tmp, timeout_s=60,
                    FEDFLEET_LEDGER_DIR=str(tmp / "ledgers"))

    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\n[1-9]\d* readings in", done.stdout), done.stdout


def _obd_schema(block: str, tmp: Path) -> None:
    gateway, car_17, car_18 = _commands(block)
    with Mosquitto() as broker, Elm327Emulator() as car, \
            _background(gateway, ROOT, FEDFLEET_MQTT=broker.url, FEDFLEET_HTTP_PORT="0",
                        FEDFLEET_STORE=f"sqlite:///{tmp / 'gw.db'}"):
        missing = _run(car_17, ROOT, FEDFLEET_MQTT=broker.url)
        over_wifi = _run(car_18.replace("socket://192.168.0.10:35000", car.url) + (
            " --duration 5"), ROOT, FEDFLEET_MQTT=broker.url,
            FEDFLEET_LEDGER_DIR=str(tmp / "ledgers"))

    assert missing.returncode == 2  # no adapter on /dev/ttyUSB0 here: said in one line
    assert missing.stderr.strip().startswith("fedfleet device: error: obd:///dev/ttyUSB0")
    assert over_wifi.returncode == 0, over_wifi.stdout + over_wifi.stderr


RUN: dict[str, Callable[[str, Path], None]] = {
    _key("README.md", "make demo"): _make_demo,
    _key("README.md", "fedfleet broker-setup"): _real_deployment,
    _key("docs/DEVICES.md", 'FEDFLEET_PASSWORD="$(cat DIR'): _obd_over_tls,
    _key("docs/DEVICES.md", "fedfleet gateway --schema"): _obd_schema,
    _key("docs/DEVICES.md", "for i in $(seq 600)"): _stdin_script,
    _key("docs/DEVICES.md", "fedfleet device --id truck-9 --source"): _csv_log,
    _key("docs/PROTOCOL.md", "mosquitto_sub"): _protocol_example,
    _key("docs/PROTOCOL.md", "mosquitto_pub"): _protocol_example,
    _key("docs/STORAGE.md", "export INFLUXDB"): _influx_gateway,
}

SUBSTITUTIONS = {
    "README.md: fedfleet broker-setup": "--host broker.example -> --port FREE (localhost is "
                                        "in the certificate and the settings by default)",
    "docs/DEVICES.md: FEDFLEET_PASSWORD": "DIR -> a setup written for truck-9, broker.example"
                                          ":8883 -> localhost:FREE, /dev/ttyUSB0 -> an "
                                          "ELM327 emulator's socket",
    "docs/DEVICES.md: fedfleet gateway": "192.168.0.10:35000 -> an ELM327 emulator",
    "docs/PROTOCOL.md": "-p 1883 -> -p FREE",
    "docs/STORAGE.md": "influxdb.local:8086 -> victoria-metrics on a free port",
}

# --- the examples that cannot run here, and what is checked instead ------------------------


def _synopsis(command: str) -> Callable[[str], None]:
    """A synopsis (brackets, placeholders): every option it names exists."""
    def check(block: str) -> None:
        sub = _parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        known = {flag for action in sub._actions for flag in action.option_strings}
        assert set(re.findall(r"--[a-z-]+", block)) <= known
    return check


def _compose_is_checked(block: str) -> None:
    assert "docker compose up" in block and (ROOT / ".env.example").is_file()
    assert "test_the_compose_file_runs_the_whole_deployment" in (
        ROOT / "tests" / "test_deployment.py").read_text()


def _names_a_test(test_file: str, name: str) -> Callable[[str], None]:
    def check(block: str) -> None:
        assert f"def {name}(" in (ROOT / "tests" / test_file).read_text()
    return check


def _options_parse(block: str) -> None:
    """Each command parses, without its optional ``[...]`` parts, and every option named
    (those included) exists."""
    for command in _commands(block):
        words = re.sub(r"\[[^]]*\]", "", command).split()
        assert words[0] == "fedfleet"
        _parser().parse_args(words[1:])
        _synopsis(words[1])(command)


MARKED: dict[str, tuple[str, Callable[[str], None]]] = {
    _key("README.md", "make test"): (
        "the test command itself", lambda block: None),
    _key("README.md", "cp .env.example .env"): (
        "needs a Docker engine: tests/test_deployment.py validates the compose file",
        _compose_is_checked),
    _key("docs/DEVICES.md", "fedfleet device --id VEHICLE_ID"): (
        "a synopsis: every option it names exists", _synopsis("device")),
    _key("docs/DEVICES.md", "fedfleet device --id pump-3"): (
        "needs a board on /dev/ttyACM0 and its schema; serial:// runs in "
        "tests/test_device_lines.py", _names_a_test(
            "test_device_lines.py",
            "test_a_serial_board_on_a_pseudo_terminal_is_read_with_bad_lines_skipped")),
    _key("docs/DEVICES.md", "HOST=127.0.0.1 PORT=8883"): (
        "run as written by tests/test_devices_doc.py", _names_a_test(
            "test_devices_doc.py",
            "test_the_worked_example_attaches_an_alert_only_device_to_the_written_setup")),
    _key("docs/EVALUATION.md", "fedfleet evaluate --dataset SOURCE"): (
        "a synopsis: every option it names exists", _synopsis("evaluate")),
    _key("docs/EVALUATION.md", "fedfleet evaluate --dataset cmapss"): (
        "a downloaded dataset and minutes of CPU: the options parse", _options_parse),
    _key("docs/EVALUATION.md", "fedfleet evaluate --dataset skab"): (
        "a downloaded dataset and minutes of CPU: the options parse", _options_parse),
    _key("docs/EVALUATION.md", "fedfleet evaluate --dataset sim:200"): (
        "minutes of CPU: the options parse", _options_parse),
    _key("docs/PRIVACY.md", "fedfleet demo --vehicles 50 --duration 60"): (
        "three demos of a minute each, to compare by eye: the options parse", _options_parse),
    _key("docs/PRIVACY.md", "fedfleet evaluate --dataset sim:1000 "): (
        "minutes of CPU: the options parse", _options_parse),
    _key("docs/PRIVACY.md", "fedfleet evaluate --dataset sim:10000 "): (
        "minutes of CPU and gigabytes: the options parse", _options_parse),
    _key("docs/PRIVACY.md", "fedfleet evaluate --dataset sim:200"): (
        "downloaded datasets and minutes of CPU: the options parse", _options_parse),
    _key("docs/PERFORMANCE.md", "fedfleet bench scale"): (
        "benchmarks of minutes that load both cores: each one named answers --help",
        lambda block: [subprocess.run([BIN / "fedfleet", "bench", name, "--help"],
                                      check=True, capture_output=True, timeout=60)
                       for name in sorted(set(re.findall(r"^fedfleet bench (\w+)", block,
                                                         re.M)))]),
    _key("docs/EVALUATION.md", "python -m benchmarks.cold_start"): (
        "a benchmark of minutes: the module exists",
        lambda block: (ROOT / "benchmarks" / "cold_start.py").is_file() or pytest.fail(
            "benchmarks/cold_start.py is gone")),
}


def test_every_example_is_run_or_marked_with_a_reason():
    assert not set(RUN) & set(MARKED)
    assert set(EXAMPLES) == set(RUN) | set(MARKED)
    assert all(any(key.startswith(prefix) for key in RUN) for prefix in SUBSTITUTIONS)


def _slug(key: str) -> str:
    return re.sub(r"\W+", "-", key)[:70].strip("-")


@pytest.mark.parametrize("key", sorted(RUN), ids=_slug)
def test_the_example_runs_as_written(key, open_dir):
    RUN[key](EXAMPLES[key], open_dir)


@pytest.mark.parametrize("key", sorted(MARKED), ids=_slug)
def test_a_marked_example_is_checked_as_far_as_this_machine_allows(key):
    MARKED[key][1](EXAMPLES[key])


def test_the_line_format_example_is_read_in_the_order_shown(tmp_path):
    doc = (ROOT / "docs" / "DEVICES.md").read_text()
    lines = re.search(r"in either form:\n\n```\n(.*?)```", doc, re.S)
    assert lines
    feed = tmp_path / "lines"
    feed.write_text(lines.group(1))

    with feed.open("rb") as stream:
        source = StdinSource(VEHICLE_SCHEMA.names, stream=stream)
        readings = [source.read() for _ in range(3)]

    assert [r.values["coolant_temp_c"] for r in readings if r] == [91.5, 91.5]
    assert dict(source.rejected) == {}

