"""The docker-compose deployment and its Grafana provisioning, checked without a Docker engine:
the compose file validates, secrets come from .env only, and every dashboard query names
measurements, tags and fields that the InfluxDB store writes (gateway/schema.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.schema import MEASUREMENTS

ROOT = Path(__file__).parent.parent
GRAFANA = ROOT / "analytics" / "grafana"
DASHBOARDS = {path.stem: json.loads(path.read_text())
              for path in sorted((GRAFANA / "dashboards").glob("*.json"))}
DATASOURCE = yaml.safe_load(
    (GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text())["datasources"][0]
ENV_EXAMPLE = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))


def _compose(env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose not found: install Debian's docker-compose (`make servers`)"
    return subprocess.run([binary, "--env-file", str(env_file), "-f", "docker-compose.yml",
                           "config"], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    done = _compose(ROOT / ".env.example")
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def test_the_compose_file_runs_the_whole_deployment(compose):
    services = compose["services"]

    assert set(services) == {"mosquitto", "influxdb", "grafana", "gateway", "fleet"}
    assert re.fullmatch(r"eclipse-mosquitto:2\.\d+\.\d+", services["mosquitto"]["image"])
    assert re.fullmatch(r"influxdb:2\.\d+\.\d+", services["influxdb"]["image"])
    assert re.fullmatch(r"grafana/grafana(-oss)?:\d+\.\d+\.\d+", services["grafana"]["image"])
    assert services["gateway"]["build"] == services["fleet"]["build"]
    assert (ROOT / services["gateway"]["build"]["context"] / "Dockerfile").is_file()
    assert {k for k in services["influxdb"]["environment"]} >= {
        "DOCKER_INFLUXDB_INIT_MODE", "DOCKER_INFLUXDB_INIT_ORG", "DOCKER_INFLUXDB_INIT_BUCKET",
        "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"}


def test_every_dependency_waits_for_a_health_check(compose):
    services = compose["services"]
    waits = [(name, dep, cond["condition"]) for name, service in services.items()
             for dep, cond in service.get("depends_on", {}).items()]

    assert {(name, dep) for name, dep, _ in waits} == {
        ("grafana", "influxdb"), ("gateway", "mosquitto"), ("gateway", "influxdb"),
        ("fleet", "mosquitto"), ("fleet", "gateway")}
    assert {condition for _, _, condition in waits} == {"service_healthy"}
    assert all(services[dep]["healthcheck"]["test"] for _, dep, _ in waits)


def test_the_gateway_writes_to_the_bucket_grafana_reads(compose):
    gateway = compose["services"]["gateway"]["environment"]
    grafana = compose["services"]["grafana"]["environment"]

    assert gateway["FEDFLEET_STORE"].startswith(
        f"influx://influxdb:8086/{ENV_EXAMPLE['INFLUXDB_BUCKET']}?")
    assert gateway["INFLUXDB_V2_TOKEN"] == grafana["INFLUXDB_TOKEN"] == ENV_EXAMPLE[
        "INFLUXDB_TOKEN"]
    assert DATASOURCE["url"] == "http://influxdb:8086"


def test_secrets_come_from_the_env_file_alone(tmp_path):
    text = (ROOT / "docker-compose.yml").read_text()
    secrets = {k: v for k, v in ENV_EXAMPLE.items() if "PASSWORD" in k or "TOKEN" in k}
    (tmp_path / "empty.env").write_text("")

    missing = _compose(tmp_path / "empty.env")

    assert len(secrets) >= 5 and not any(value in text for value in secrets.values())
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
        tags = set(re.findall(r"r\.(\w+) ==", query)) - {"_measurement", "_field"}
        tags |= set(re.findall(r'tag: "(\w+)"', query))
        for columns in re.findall(r"(?:group\(columns|rowKey): \[([^\]]*)\]", query):
            tags |= {c for c in re.findall(r'"(\w+)"', columns) if not c.startswith("_")}
        if "buckets()" in query:
            continue
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
