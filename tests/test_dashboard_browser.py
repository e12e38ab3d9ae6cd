"""The dashboard in a real browser (Debian's Chromium, headless) over a fleet on Mosquitto."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from devices.onboard.vehicle import Vehicle
from devices.runners.fleet import Fleet
from devices.sim.faults import FaultMode, FaultSpec
from devices.sim.simulator import SimulatedVehicle
from federation.messages import Alert, Status
from federation.transport import parse_mqtt_url
from gateway.dashboard import Dashboard
from gateway.service import Gateway
from gateway.store import RoundRecord, SQLiteStore
from tests import factories
from tests.servers import Mosquitto, free_port

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VEHICLES = 12
LEAVING = ["veh-0100", "veh-0101"]  # a second fleet that the test stops: they go offline
FAULTY = {"veh-0003": FaultMode.COOLING_DEGRADATION, "veh-0008": FaultMode.CHARGING_FAILURE}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it (servers target)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def _fleet(ids: list[str]) -> list[Vehicle]:
    vehicles, start_ts_s = [], time.time()
    for vehicle_id in ids:
        fault = FaultSpec(FAULTY[vehicle_id], onset_s=600.0, failure_s=1500.0) if (
            vehicle_id in FAULTY) else None
        source = SimulatedVehicle(vehicle_id, seed=1, fault=fault, start_ts_s=start_ts_s)
        vehicles.append(Vehicle(vehicle_id, source, mechanism=None))
    return vehicles


@pytest.fixture
def fleet_page(browser: Browser, mosquitto: Mosquitto,
               tmp_path: Path) -> Iterator[tuple[Page, threading.Event]]:
    """The dashboard open on a running fleet, and the stop event of two vehicles that leave."""
    target = parse_mqtt_url(mosquitto.url)
    store = SQLiteStore(tmp_path / "gateway.db")
    stop, leave = threading.Event(), threading.Event()
    gateway = Gateway(target, store, round_seconds=1.0, min_updates=VEHICLES // 2,
                      client_id="dashboard-test-gateway")
    fleets = [(Fleet(target, _fleet([f"veh-{i:04d}" for i in range(VEHICLES)]), speedup=200),
               stop), (Fleet(target, _fleet(LEAVING), speedup=200), leave)]
    threads = [threading.Thread(target=gateway.run, args=(stop,))] + [
        threading.Thread(target=fleet.run, args=(event,)) for fleet, event in fleets]
    for thread in threads:
        thread.start()
    opened = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        with Dashboard(store, port=free_port(), refresh_seconds=0.5) as dashboard:
            opened.goto(dashboard.url)
            yield opened, leave
    finally:
        opened.close()
        stop.set()
        leave.set()
        for thread in threads:
            thread.join(timeout=20)
        store.close()
    assert not any(t.is_alive() for t in threads), "the gateway or the fleet did not stop"


def _latest_round(page: Page) -> int:
    return int(page.get_attribute("#rounds tbody tr[data-round]", "data-round") or 0)


def _health(page: Page, vehicle: str) -> str | None:
    return page.get_attribute(f'.tile[data-vehicle="{vehicle}"]', "data-health")


def test_vehicles_an_alert_and_rounds_appear_and_update_without_a_reload(fleet_page):
    page, leave = fleet_page
    everyone = VEHICLES + len(LEAVING)
    page.wait_for_function(f"document.querySelectorAll('#vehicles .tile').length === {everyone}",
                           timeout=20_000)
    page.wait_for_selector("#rounds tbody tr[data-round]", timeout=20_000)
    page.evaluate("window.sameDocument = true")
    first_round = _latest_round(page)
    first_version = page.inner_text("#model-version")
    assert [_health(page, v) for v in LEAVING] == ["ok", "ok"]

    leave.set()

    alert = page.wait_for_selector('#alerts li[data-vehicle="veh-0003"][data-subsystem="cooling"]',
                                   timeout=60_000)
    page.wait_for_function(f"Number(document.querySelector('#rounds tbody tr[data-round]')"
                           f".dataset.round) >= {first_round + 2}", timeout=20_000)
    page.wait_for_function("document.querySelectorAll('#chart-rounds .bars path').length > 0",
                           timeout=10_000)
    page.wait_for_function("document.querySelectorAll('.tile[data-health=\"offline\"]').length"
                           f" === {len(LEAVING)}", timeout=10_000)
    page.wait_for_timeout(1_500)  # let the charts settle for the screenshot
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    assert page.evaluate("window.sameDocument") is True, "the page reloaded"
    assert "veh-0003" in alert.inner_text() and "cooling" in alert.inner_text()
    assert _health(page, "veh-0003") in ("watch", "alert")
    assert [_health(page, v) for v in LEAVING] == ["offline", "offline"]
    assert page.inner_text("#model-version") != first_version
    participants = page.inner_text("#rounds tbody tr[data-round] .chips")
    assert "veh-00" in participants
    assert page.inner_text("#live-text") == "live"
    assert page.inner_text("#kpi-saved").endswith("B")  # a byte figure, not a placeholder


def test_clicking_a_vehicle_shows_only_its_alerts_until_the_filter_is_cleared(fleet_page):
    page, _ = fleet_page
    page.wait_for_selector('#alerts li[data-vehicle="veh-0003"]', timeout=60_000)

    page.click('.tile[data-vehicle="veh-0003"]')
    mine = page.eval_on_selector_all("#alerts li", "items => items.map(i => i.dataset.vehicle)")
    page.click('.tile[data-vehicle="veh-0000"]')
    healthy = page.inner_text("#alerts")
    page.click("#alert-filter")

    assert mine and set(mine) == {"veh-0003"}
    assert healthy == "No recent alert from veh-0000."
    assert page.is_hidden("#alert-filter")
    assert page.query_selector(".tile.selected") is None


def test_text_from_vehicles_is_shown_as_text_never_run(browser, tmp_path):
    hostile = "<img src=x onerror=ran=1>"  # a subsystem is free text (up to 32 characters)
    store = SQLiteStore(tmp_path / "gateway.db")
    store.record_alert(Alert("veh-0001", 1.7e9, 9.0, 4.0, hostile,
                             (("coolant_temp_c", 9.0),), 1))
    opened = browser.new_page()
    try:
        with Dashboard(store, port=free_port(), refresh_seconds=0.5) as dashboard:
            opened.goto(dashboard.url)
            badge = opened.wait_for_selector("#alerts .badge", timeout=10_000)
            opened.wait_for_function("document.querySelectorAll('#chart-subsystems .bars path')"
                                     ".length > 0", timeout=10_000)

            assert badge.inner_text() == hostile
            assert opened.evaluate("window.ran") is None
            assert opened.query_selector("img") is None
    finally:
        opened.close()
        store.close()


def test_a_vehicle_at_its_privacy_budget_is_marked_exhausted(browser, tmp_path):
    store = SQLiteStore(tmp_path / "gateway.db")
    for vehicle, total in (("veh-0001", 3.0), ("veh-0002", 1.5)):
        store.record_budget(replace(factories.update(vehicle), epsilon_total=total,
                                    epsilon_budget=3.0))
        store.record_status(Status(vehicle, "online", 1.0, privacy="local", epsilon_total=total,
                                   epsilon_budget=3.0, exhausted=vehicle == "veh-0001"))
    opened = browser.new_page()
    try:
        with Dashboard(store, port=free_port(), refresh_seconds=0.5) as dashboard:
            opened.goto(dashboard.url)
            spent = opened.wait_for_selector('.tile[data-vehicle="veh-0001"]', timeout=10_000)

            assert spent.get_attribute("data-exhausted") == "true"
            assert "ε 3.0/3.0 spent" in spent.inner_text()
            assert _health(opened, "veh-0002") == "ok"
            assert opened.get_attribute('.tile[data-vehicle="veh-0002"]',
                                        "data-exhausted") == "false"
            assert opened.inner_text("#kpi-epsilon-note").endswith("· 1 exhausted")
    finally:
        opened.close()
        store.close()


def _stopped_fleet(store: SQLiteStore) -> None:
    """A fleet after it stopped: 30 vehicles offline, 3 of them after alerting, 5 rounds
    that each of them took part in; and a real device online that sent an alert only."""
    vehicles = [f"veh-{i:04d}" for i in range(30)]
    for number in range(1, 6):
        for vehicle in vehicles:
            store.record_budget(factories.update(vehicle, round_number=number))
        store.record_round(RoundRecord(number, 1.7e9 + 30 * number, 1.7e9 + 30 * number + 30,
                                       len(vehicles), 0, True, number))
    for vehicle in vehicles:
        store.record_status(Status(vehicle, "offline", 1.7e9 + 200))
    for vehicle in vehicles[:3]:
        store.record_alert(factories.alert(vehicle))
    store.record_status(Status("truck-9", "online", 1.7e9 + 210))
    store.record_alert(replace(factories.alert("truck-9"), score=4.03, threshold=4.0,
                               model_version=0))


def test_a_phone_wide_page_fits_counts_every_vehicle_away_and_tells_scores_apart(browser, tmp_path):
    store = SQLiteStore(tmp_path / "gateway.db")
    _stopped_fleet(store)
    opened = browser.new_page(viewport={"width": 420, "height": 900})
    try:
        with Dashboard(store, port=free_port(), refresh_seconds=0.5) as dashboard:
            opened.goto(dashboard.url)
            opened.wait_for_selector("#rounds tbody tr[data-round]", timeout=10_000)
            opened.wait_for_selector('.tile[data-vehicle="truck-9"]', timeout=10_000)
            ARTIFACTS.mkdir(exist_ok=True)
            opened.screenshot(path=str(ARTIFACTS / "dashboard-420px.png"), full_page=True)

            page_width = opened.evaluate("document.documentElement.scrollWidth")
            overflowing = opened.eval_on_selector_all(
                ".kpi .value, .kpi .note", "els => els.filter(e => e.scrollWidth > "
                "e.clientWidth).map(e => e.id)")
            rows = opened.eval_on_selector_all(
                "#rounds tbody tr[data-round]", "rows => rows.map(r => [r.dataset.round, "
                "r.cells[0].getBoundingClientRect().width, r.innerText.includes('veh-')])")
            header = (opened.inner_text("#kpi-online"), opened.inner_text("#kpi-fleet"))
            device = opened.inner_text('.tile[data-vehicle="truck-9"] .meta')
            just_over = opened.inner_text('#alerts li[data-vehicle="truck-9"]')
    finally:
        opened.close()
        store.close()

    assert page_width <= 420
    assert overflowing == []
    assert [(r, width > 0, named) for r, width, named in rows] == [
        (str(n), True, True) for n in range(5, 0, -1)]
    assert header == ("1 / 31", "30 offline")
    assert device == "no update yet"
    assert "score 4.03 (threshold 4.00)" in just_over
