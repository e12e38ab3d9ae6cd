"""The docker-compose deployment and its Grafana provisioning, checked without a Docker engine:
the compose file validates, secrets come from .env only, and every dashboard query names
measurements, tags and fields that the InfluxDB store writes (gateway/store/schema.py)."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.store.schema import MEASUREMENTS
from tests.compose_stack import Stack, compose_config, healthy
from tests.servers import free_port

ROOT = Path(__file__).parent.parent
GRAFANA = ROOT / "analytics" / "grafana"
DASHBOARDS = {path.stem: json.loads(path.read_text())
              for path in sorted((GRAFANA / "dashboards").glob("*.json"))}
DATASOURCE = yaml.safe_load(
    (GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text())["datasources"][0]
ENV_EXAMPLE = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))


def _compose(env_file: Path) -> subprocess.CompletedProcess[str]:
    return compose_config("docker-compose.yml", env_file)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    done = _compose(ROOT / ".env.example")
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def test_the_compose_file_runs_the_whole_deployment(compose):
    services = compose["services"]

    assert set(services) == {"access", "mosquitto", "influxdb", "grafana", "gateway", "fleet"}
    assert re.fullmatch(r"eclipse-mosquitto:2\.\d+\.\d+", services["mosquitto"]["image"])
    assert re.fullmatch(r"influxdb:2\.\d+\.\d+", services["influxdb"]["image"])
    assert re.fullmatch(r"grafana/grafana(-oss)?:\d+\.\d+\.\d+", services["grafana"]["image"])
    assert services["gateway"]["build"] == services["fleet"]["build"] == services["access"][
        "build"]
    assert (ROOT / services["gateway"]["build"]["context"] / "Dockerfile").is_file()
    assert {k for k in services["influxdb"]["environment"]} >= {
        "DOCKER_INFLUXDB_INIT_MODE", "DOCKER_INFLUXDB_INIT_ORG", "DOCKER_INFLUXDB_INIT_BUCKET",
        "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"}


def test_every_dependency_waits_for_a_health_check(compose):
    services = compose["services"]
    waits = [(name, dep, cond["condition"]) for name, service in services.items()
             for dep, cond in service.get("depends_on", {}).items()]

    assert {(name, dep) for name, dep, _ in waits} == {
        ("mosquitto", "access"), ("grafana", "influxdb"), ("gateway", "mosquitto"),
        ("gateway", "influxdb"), ("fleet", "mosquitto"), ("fleet", "gateway")}
    healthy = [(name, dep) for name, dep, condition in waits if condition == "service_healthy"]
    assert set(waits) - {(n, d, "service_healthy") for n, d in healthy} == {
        ("mosquitto", "access", "service_completed_successfully")}
    assert all(services[dep]["healthcheck"]["test"] for _, dep in healthy)


def test_the_gateway_writes_to_the_bucket_grafana_reads(compose):
    gateway = compose["services"]["gateway"]["environment"]
    grafana = compose["services"]["grafana"]["environment"]

    assert gateway["FEDFLEET_STORE"].startswith(
        f"influx://influxdb:8086/{ENV_EXAMPLE['INFLUXDB_BUCKET']}?")
    assert gateway["INFLUXDB_V2_TOKEN"] == grafana["INFLUXDB_TOKEN"] == ENV_EXAMPLE[
        "INFLUXDB_TOKEN"]
    assert DATASOURCE["url"] == "http://influxdb:8086"
    assert DATASOURCE["jsonData"]["defaultBucket"] == "${INFLUXDB_BUCKET}"
    assert grafana["INFLUXDB_BUCKET"] == ENV_EXAMPLE["INFLUXDB_BUCKET"]


def test_secrets_come_from_the_env_file_alone(tmp_path):
    text = (ROOT / "docker-compose.yml").read_text()
    secrets = {k: v for k, v in ENV_EXAMPLE.items() if "PASSWORD" in k or "TOKEN" in k}
    (tmp_path / "empty.env").write_text("")

    missing = _compose(tmp_path / "empty.env")

    assert len(secrets) >= 3 and not any(value in text for value in secrets.values())
    assert missing.returncode != 0 and "set it in .env" in missing.stderr
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_the_data_source_is_influxdb_with_flux_and_a_fixed_uid():
    assert DATASOURCE["type"] == "influxdb" and DATASOURCE["jsonData"]["version"] == "Flux"
    assert DATASOURCE["uid"] == "fedfleet-influxdb"
    assert DATASOURCE["secureJsonData"]["token"] == "${INFLUXDB_TOKEN}"


def _queries(dashboard: dict[str, Any]) -> list[str]:
    panels = [t["query"] for p in dashboard["panels"] for t in p["targets"]]
    variables = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return panels + variables


def _uids(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["uid"]} if node.get("type") == "influxdb" and "uid" in node else set()
        return found.union(*(_uids(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_uids(v) for v in node))
    return set()


def test_the_four_dashboards_are_there_with_their_panels():
    titles = {name: {p["title"] for p in d["panels"]} for name, d in DASHBOARDS.items()}

    assert titles["fleet-overview"] >= {"Vehicles online", "Alerts by subsystem",
                                        "Rounds and participants",
                                        "Bytes saved against raw streaming"}
    assert titles["vehicle"] >= {"Alert scores by subsystem", "Reported sensor z-scores",
                                 "Privacy budget spent"}
    assert titles["federation"] >= {"Round duration", "Participants per round",
                                    "Rejected messages by reason", "Global model version"}
    assert titles["privacy"] >= {"Epsilon spent per vehicle", "Exhausted vehicles"}
    assert len({d["uid"] for d in DASHBOARDS.values()}) == 4


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_reads_the_provisioned_data_source(name):
    dashboard = DASHBOARDS[name]

    assert _uids(dashboard) == {DATASOURCE["uid"]}
    assert all(p["datasource"]["uid"] == DATASOURCE["uid"] for p in dashboard["panels"])
    assert all(t["datasource"]["uid"] == DATASOURCE["uid"]
               for p in dashboard["panels"] for t in p["targets"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_names_measurements_tags_and_fields_the_store_writes(name):
    for query in _queries(DASHBOARDS[name]):
        measurements = set(re.findall(r'(?:r\._measurement ==|measurement:) "(\w+)"', query))
        fields = set(re.findall(r'r\._field == "(\w+)"', query))
        prefixes = set(re.findall(r"r\._field =~ /\^(\w+)/", query))
        tags = {c for c in re.findall(r"r\.(\w+) ==", query) if not c.startswith("_")}
        tags |= set(re.findall(r'tag: "(\w+)"', query))
        for columns in re.findall(r"(?:group\(columns|rowKey): \[([^\]]*)\]", query):
            tags |= {c for c in re.findall(r'"(\w+)"', columns) if not c.startswith("_")}
        assert "bucket: v.defaultBucket" in query, f"{name}: not the data source's bucket"
        specs = [MEASUREMENTS[m] for m in measurements]  # KeyError: not a measurement

        assert specs, f"{name}: a query names no measurement:\n{query}"
        for field in fields | {p + "x" for p in prefixes}:
            assert any(_declares(s, field) for s in specs), f"{name}: no field {field}:\n{query}"
        for tag in tags:
            assert any(tag in s.tags for s in specs), f"{name}: no tag {tag}:\n{query}"


def _declares(spec: Any, field: str) -> bool:
    try:
        spec.field_type(field)
    except KeyError:
        return False
    return True


@pytest.mark.integration
def test_the_stack_runs_on_this_machine_as_compose_configures_it(
        compose, victoria_metrics, tmp_path):
    """The access service writes the broker's setup, Mosquitto runs it from the service's own
    script (TLS, a login per client, the ACL), then the gateway and the fleet with the compose
    settings and health checks, in compose's order; victoria-metrics stands in for InfluxDB 2.
    Only the broker's address differs: the name ``mosquitto`` does not resolve here."""
    port, http_port = free_port(), free_port()
    me = pwd.getpwuid(os.geteuid()).pw_name  # no switch to a "mosquitto" user
    stack = Stack(compose, {
        "/access": f"{tmp_path}/access", "/data/": f"{tmp_path}/",
        "exec fedfleet": f"exec {sys.executable} -m fedfleet",
        "--port 8883": f"--port {port} --bind 127.0.0.1", "-p 8883": f"-p {port}",
        "--broker-user mosquitto": f"--broker-user {me}",
        "chown -R mosquitto:mosquitto": f"chown -R {os.geteuid()}",
        "influxdb:8086": f"127.0.0.1:{victoria_metrics.port}", "8080": str(http_port),
        "0.0.0.0": "127.0.0.1"}, tmp_path)
    try:
        written = stack.access(FLEET_VEHICLES="4")
        rerun = stack.access(FLEET_VEHICLES="4")  # a restart keeps the setup it wrote
        env = stack.mosquitto()
        assert healthy(stack.health_check("mosquitto"), env)
        env = stack.fedfleet("gateway", FEDFLEET_ROUND_SECONDS="1",
                             FEDFLEET_MQTT=f"mqtts://gateway@127.0.0.1:{port}")
        assert healthy(stack.health_check("gateway"), env)
        stack.fedfleet("fleet", FEDFLEET_SPEEDUP="300", FEDFLEET_MQTT=f"mqtts://127.0.0.1:{port}")
        anonymous = subprocess.run(
            ["mosquitto_pub", "-p", str(port), "--cafile", f"{tmp_path}/access/clients/ca.crt",
             "-h", "127.0.0.1", "-t", "x", "-m", "1"], capture_output=True, text=True, timeout=10)
        deadline = time.monotonic() + 30
        while (victoria_metrics.samples('{__name__="round_round"}') < 2
               or victoria_metrics.samples('{__name__="participation_round"}') == 0):
            assert time.monotonic() < deadline, "fewer than 2 rounds, or no update, reached " \
                "the server"
            time.sleep(0.5)
    finally:
        codes = stack.stop()

    assert (written, rerun) == (0, 0)
    assert anonymous.returncode != 0 and "not authorised" in anonymous.stderr.lower()
    assert victoria_metrics.samples('{__name__="participation_round"}') > 0
    assert codes[1:] == [0, 0]
