"""Fixtures: the real servers that integration tests start themselves."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from broker.embedded import EmbeddedBroker
from tests.processes import kill_leftovers
from tests.servers import Elm327Emulator, Mosquitto, VictoriaMetrics

# Commands started by tests serve no dashboard unless a test asks for one on a free port, so
# that no test needs port 8080 (which a running demo may hold).
os.environ.setdefault("FEDFLEET_HTTP_PORT", "0")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns groups into work units
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``: ``--dist loadgroup``), the integration tests run one
    after another on one worker, as in a run of their own. Their rounds, demos and deadlines
    are in wall-clock time: two side by side would take each other's cores, and a fleet that
    falls behind its speedup changes what a round holds. The other worker runs the rest
    (unit tests, replays, doctests) meanwhile."""
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.xdist_group("integration"))


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """A test that fails midway still ends every ``fedfleet`` process it started."""
    yield
    kill_leftovers()


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    with Mosquitto() as server:
        yield server


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=0) as server:
        yield server


@pytest.fixture(params=["mosquitto", "embedded"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """The URL of each broker in turn; only the one a test runs on is started."""
    fixture = "mosquitto" if request.param == "mosquitto" else "embedded_broker"
    return str(request.getfixturevalue(fixture).url)


@pytest.fixture
def victoria_metrics() -> Iterator[VictoriaMetrics]:
    """A fresh time-series server for each test: what one test wrote, no other reads."""
    with VictoriaMetrics() as server:
        yield server


@pytest.fixture(scope="session")
def elm327() -> Iterator[Elm327Emulator]:
    """An ELM327 adapter and car, shared by the tests that only read from it."""
    with Elm327Emulator() as emulator:
        yield emulator
