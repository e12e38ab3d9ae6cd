"""One secure round's phases at the gateway, against a clock: no I/O.

:class:`SecureRun` collects the vehicles' advertised keys until the advertise deadline (or
until ``expected`` vehicles have advertised), then plans the round for those that did and
runs a :class:`~federation.secagg.server.SecAggServer` for it: each later phase closes at its
own deadline, or as soon as every vehicle still in the round has answered. Each close
returns the gateway's answers to send; the last leaves the unmasked :attr:`aggregate`, or a
:attr:`failure` (fewer vehicles left than the plan's quorum, a secret that cannot be rebuilt),
which the gateway logs.

A message that does not fit (wrong kind for the phase, another round, a vehicle not in the
round, twice, or not from the vehicle whose topic it came on) raises
:class:`~federation.secagg.errors.SecAggError` and changes nothing.

The run holds nothing secret and nothing random: what it is follows from the announcement, the
messages it took and where its phases closed, in order. :meth:`SecureRun.resumed` rebuilds it
from that journal, as a gateway restarted mid-round does (:mod:`gateway.secure`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

from federation.secagg import messages
from federation.secagg.errors import SecAggError
from federation.secagg.messages import (
    Advertise,
    MaskedInput,
    SecAggMessage,
    SecureRound,
    ShareKeys,
    UnmaskShares,
)
from federation.secagg.server import Aggregate, SecAggServer

__all__ = ["PHASES", "SecureRun"]

log = logging.getLogger(__name__)

# A phase, what vehicles send in it, and whom the gateway waits for before closing it early.
PHASES = ("advertise", "share", "input", "unmask")
_EXPECTS: dict[str, type[SecAggMessage]] = {
    "advertise": Advertise, "share": ShareKeys, "input": MaskedInput, "unmask": UnmaskShares}


class SecureRun:
    """The gateway's side of the secure round ``announced``.

    Examples
    --------
    >>> from federation.secagg import SecAggConfig
    >>> announced = SecureRound.about(5, 0, SecAggConfig(3, 1.0), (10.0, 20.0, 30.0, 40.0))
    >>> run = SecureRun(announced)
    >>> run.phase, run.advance(11.0), run.failure
    ('advertise', {}, 'below_threshold: 0 vehicles advertised keys; a round needs 4')
    """

    def __init__(self, announced: SecureRound, expected: int | None = None) -> None:
        self.announced = announced
        self.expected = expected
        self.phase = PHASES[0]
        self.server: SecAggServer | None = None
        self.aggregate: Aggregate | None = None
        self.failure: str | None = None
        self.readings: dict[str, tuple[float, float]] = {}  # vehicle: (readings, replaced)
        self._advertised: dict[str, Advertise] = {}
        self._keys: set[bytes] = set()
        self._waiting: set[str] = set()  # who is yet to answer the open phase

    @classmethod
    def resumed(cls, announced: SecureRound, expected: int | None,
                journal: Iterable[tuple[str, str | None, bytes]], until: float,
                ) -> tuple[SecureRun, Mapping[str, SecAggMessage]]:
        """The run of ``announced`` as ``journal`` left it (``("message", vehicle, payload)``
        for each message it took, ``("close", None, phase)`` where a phase closed, in order),
        its open phases given until ``until`` at least; and the answers of its last close, to
        send again: they may not have left before the gateway stopped."""
        deadlines = ("advertise_until", "share_until", "input_until", "deadline")
        run = cls(replace(announced, **{k: max(getattr(announced, k), until) for k in deadlines}),
                  expected)
        answers: Mapping[str, SecAggMessage] = {}
        for kind, vehicle, payload in journal:
            try:
                if kind == "message" and vehicle is not None:
                    run.receive(vehicle, payload)
                elif kind == "close":
                    answers = run.advance(math.inf)
            except SecAggError as exc:  # taken once, so only a journal from elsewhere
                log.warning("secure round %d: a journal entry no longer fits: %s",
                            announced.round, exc)
        return run, answers

    @property
    def over(self) -> bool:
        return self.aggregate is not None or self.failure is not None

    def receive(self, vehicle: str, payload: bytes) -> None:
        """Take ``vehicle``'s message of the open phase."""
        if self.over:
            raise SecAggError("wrong_phase", f"secure round {self.announced.round} is over")
        message = messages.decode(_EXPECTS[self.phase], payload)
        if message.vehicle_id != vehicle:
            raise SecAggError("topic_mismatch", f"{message.vehicle_id} on {vehicle}'s topic")
        if isinstance(message, Advertise):
            self._advertise(message)
        else:
            assert self.server is not None  # made when advertising closed
            self.server.receive(message)
            if isinstance(message, MaskedInput):
                self.readings[vehicle] = (message.readings, message.replaces_readings)
        self._waiting.discard(vehicle)

    def advance(self, now_s: float) -> Mapping[str, SecAggMessage]:
        """Close the open phase if its deadline has passed or nobody is left to answer it;
        return the answers to send each vehicle (none once the round is over)."""
        if self.over or not (now_s >= self._deadline() or self._all_in()):
            return {}
        try:
            return self._close()
        except SecAggError as exc:
            self.failure = str(exc)  # the gateway logs it (gateway.secure)
            return {}

    @property
    def took_part(self) -> bool:
        """Whether any vehicle advertised keys to the round."""
        return bool(self.server or self._advertised)

    def _advertise(self, message: Advertise) -> None:
        if message.round != self.announced.round:
            raise SecAggError("wrong_round", f"round {message.round}, not "
                              f"{self.announced.round}")
        if message.vehicle_id in self._advertised:
            raise SecAggError("duplicate", f"{message.vehicle_id} already advertised keys")
        keys = {message.cipher_key, message.mask_key}
        if len(keys) < 2 or keys & self._keys:
            raise SecAggError("duplicate", "a public key already advertised")
        self._advertised[message.vehicle_id] = message
        self._keys |= keys

    def _deadline(self) -> float:
        a = self.announced
        return {"advertise": a.advertise_until, "share": a.share_until,
                "input": a.input_until, "unmask": a.deadline}[self.phase]

    def _all_in(self) -> bool:
        if self.phase == "advertise":
            return self.expected is not None and len(self._advertised) >= self.expected
        return not self._waiting

    def _close(self) -> Mapping[str, SecAggMessage]:
        answers: Mapping[str, SecAggMessage]
        if self.phase == "advertise":
            answers = self._plan().rosters()
        elif self.phase == "unmask":
            assert self.server is not None
            self.aggregate = self.server.result()
            log.info("secure round %d unmasked the sum of %d inputs", self.announced.round,
                     self.aggregate.inputs)
            return {}
        else:
            assert self.server is not None
            answers = (self.server.relays() if self.phase == "share"
                       else self.server.unmask_requests())
        self.phase = PHASES[PHASES.index(self.phase) + 1]
        self._waiting = set(answers)
        return answers

    def _plan(self) -> SecAggServer:
        """The server, planned for the vehicles that advertised, with their keys."""
        if len(self._advertised) < 4:
            raise SecAggError("below_threshold", f"{len(self._advertised)} vehicles "
                              "advertised keys; a round needs 4")
        try:
            self.server = SecAggServer(self.announced.round, self.announced.config,
                                       len(self._advertised))
        except ValueError as exc:
            raise SecAggError("bad_params", str(exc)) from None
        for message in self._advertised.values():
            self.server.receive(message)
        return self.server
