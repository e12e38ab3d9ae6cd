"""A gateway killed in the middle of a secure round (``kill -9``) goes on with it when it is
back: the round's journal in its store rebuilds every phase, and the vehicles, which never
noticed, finish the round."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from federation.secagg import SecAggClient, SecAggConfig
from federation.secagg import messages as codec
from federation.secagg.messages import SecureRound
from federation.secagg.noise import SeededIntegerNoise
from federation.secagg.randomness import SeededBytes
from federation.secagg.server import Aggregate
from federation.transport import parse_mqtt_url
from gateway.secure_round import PHASES, SecureRun
from tests.processes import Command, read_store, wait_until
from tests.secagg_clients import Vehicles
from tests.servers import Mosquitto

VEHICLES = 8


class Held(Vehicles):
    """Test vehicles that stop, before answering ``phase``, until :attr:`release` is set."""

    def __init__(self, *args: object, phase: str, **kwargs: object) -> None:
        self.phase, self.release, self.holding = phase, threading.Event(), threading.Event()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _answer(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        client = self.clients.get(topic.rsplit("/", 1)[1])
        if client is not None and client.phase == self.phase and not self.release.is_set():
            self.holding.set()
            self.release.wait(60)
        return super()._answer(topic, payload)


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("phase", ["input", "unmask"])
def test_a_secure_round_survives_its_gateway_being_killed_before_a_phase(tmp_path: Path, phase):
    with Mosquitto() as broker:
        gateway = Command("gateway", "--mqtt", broker.url, "--round-seconds", "30",
                          "--target-updates", str(VEHICLES), "--store", "sqlite:///gw.db",
                          "--privacy", "secagg", "--http-port", "0", "--log-level", "INFO",
                          cwd=tmp_path)
        vehicles = None
        try:
            rng = np.random.default_rng(0)
            vectors = {f"veh-{i:03d}": rng.uniform(-0.5, 0.5, 54) for i in range(VEHICLES)}
            vehicles = Held(parse_mqtt_url(broker.url), vectors, phase=phase)
            # The gateway closed the phase before: every vehicle holds its answer to it.
            wait_until(vehicles.holding.is_set, 20, f"the vehicles at the {phase} phase")
            gateway.kill()
            journal = read_store(tmp_path / "gw.db", "SELECT kind, COUNT(*) FROM "
                                 "secure_journal WHERE round = 1 GROUP BY kind")
            restarted = time.monotonic()
            gateway.start()
            gateway.wait_for(f"resuming secure round 1 in its {phase} phase", 20, restarted)
            vehicles.release.set()
            gateway.wait_for(rf"round 1: {VEHICLES} merged", 40, restarted)
        finally:
            if vehicles is not None:
                vehicles.release.set()
                vehicles.close()
            gateway.stop()

    closes = {"input": 2, "unmask": 3}[phase]  # advertise and share, then input too
    assert dict(journal) == {"announce": 1, "close": closes, "message": VEHICLES * closes}
    assert read_store(tmp_path / "gw.db", "SELECT privacy, accepted, quorum_met FROM rounds "
                      "WHERE round = 1") == [("secagg", VEHICLES, 1)]
    assert gateway.matching(f"secure round 1 unmasked the sum of {VEHICLES} inputs", restarted)



IDS = [f"veh-{i:02d}" for i in range(6)]


def _respond(phase: str, client: SecAggClient, answer: object, vector: np.ndarray) -> object:
    if phase == "advertise":
        return client.advertise()
    if phase == "share":
        return client.share_keys(answer)  # type: ignore[arg-type]
    if phase == "input":
        return client.masked_input(answer, vector)  # type: ignore[arg-type]
    return client.unmask(answer)  # type: ignore[arg-type]


def _secure_round(restart_before: str | None) -> tuple[Aggregate, list[dict]]:
    """A round of 6 seeded vehicles, every message journalled as the gateway journals it;
    the gateway's run rebuilt from the journal before ``restart_before`` (if given)."""
    announced = SecureRound.about(3, 0, SecAggConfig(4, 1.0, 1.0), (10.0, 20.0, 30.0, 40.0))
    clients = {v: SecAggClient(v, 3, announced.config, noise=SeededIntegerNoise(i),
                               random_bytes=SeededBytes((3, i))) for i, v in enumerate(IDS)}
    vectors = np.random.default_rng(1).uniform(-0.4, 0.4, (len(IDS), 4))
    run, journal, answers, sent = SecureRun(announced), [], {}, []
    for phase in PHASES:
        if phase == restart_before:
            run, again = SecureRun.resumed(announced, None, journal, until=0.0)
            assert again == answers and run.phase == phase
        for k, (vehicle, client) in enumerate(clients.items()):
            payload = codec.encode_binary(_respond(phase, client, answers.get(vehicle),
                                                   vectors[k]))  # type: ignore[arg-type]
            run.receive(vehicle, payload)
            journal.append(("message", vehicle, payload))
        answers = run.advance(50.0)  # past every deadline
        journal.append(("close", None, phase.encode()))
        sent.append(dict(answers))
    assert run.aggregate is not None
    return run.aggregate, sent


@pytest.mark.parametrize("phase", ["share", "input", "unmask"])
def test_a_run_rebuilt_from_its_journal_goes_on_exactly_as_the_one_that_stopped(phase):
    whole, answers = _secure_round(None)

    resumed, answers_resumed = _secure_round(phase)

    assert answers_resumed == answers
    assert np.array_equal(resumed.total, whole.total) and resumed.noise_std == whole.noise_std
    assert resumed.vehicle_ids == whole.vehicle_ids == tuple(IDS)


def _refused_run(number: int, advertising: int) -> SecureRun:
    announced = SecureRound.about(number, 0, SecAggConfig(4, 1.0), (10.0, 20.0, 30.0, 40.0))
    run = SecureRun(announced)
    for i in range(advertising):
        client = SecAggClient(f"veh-{i:02d}", number, announced.config,
                              random_bytes=SeededBytes((number, i)))
        run.receive(client.vehicle_id, codec.encode_binary(client.advertise()))
    run.advance(11.0)  # advertising closes with too few
    return run


def test_a_refusal_repeated_round_after_round_is_a_warning_once(caplog):
    from gateway.secure import SecureGateway
    from gateway.store import SQLiteStore

    gateway = SecureGateway(parse_mqtt_url("mqtt://127.0.0.1:1"), SQLiteStore(":memory:"),
                            epsilon=0.5)
    caplog.set_level("DEBUG", logger="gateway.secure")

    for number, advertising in ((1, 0), (2, 3), (3, 2), (4, 3)):
        gateway._log_outcome(_refused_run(number, advertising))

    levels = [(r.levelname, r.getMessage().split(" refused")[0]) for r in caplog.records]
    assert levels == [("DEBUG", "secure round 1"), ("WARNING", "secure round 2"),
                      ("DEBUG", "secure round 3"), ("DEBUG", "secure round 4")]


def test_a_journal_that_does_not_decode_starts_the_round_afresh(caplog):
    from gateway.secure import SecureGateway
    from gateway.store import SQLiteStore

    store = SQLiteStore(":memory:")
    store.record_secure(1, "announce", None, b"not an announcement")
    gateway = SecureGateway(parse_mqtt_url("mqtt://127.0.0.1:1"), store, epsilon=0.5)

    gateway._open_round()

    assert gateway.secure is not None and gateway.secure.announced.round == 1
    assert gateway.secure.phase == "advertise"
    assert [kind for kind, _, _ in store.secure_journal(1)] == ["announce", "announce"]
    assert "cannot be resumed from its journal" in caplog.text
