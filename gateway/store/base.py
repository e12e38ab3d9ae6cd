"""The store's interface and its records: what every backend keeps and gives back."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from federation.messages import Alert, GlobalModel, RoundOpen, Status, Update
from gateway.store.traffic import Traffic

__all__ = ["Budget", "OpenRound", "Rollback", "RoundRecord", "Store", "StoreError", "VehicleRecord"]


class StoreError(RuntimeError):
    """A store could not be opened or written."""


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """What happened in one round.

    ``dropped`` names the vehicles the round expected (online when it opened, or heard from
    while it was open) that went offline before it closed without sending it an update
    (vehicles past their privacy budget excepted). ``privacy`` is how its releases were
    protected: ``"secagg"`` for a secure round, else the modes of the updates it accepted
    (``"central"``, ``"local"``, ``"off"``, joined by ``+`` when mixed; ``""`` for none).
    """

    round: int
    opened_at: float
    closed_at: float
    accepted: int
    rejected: int
    quorum_met: bool
    model_version: int
    dropped: tuple[str, ...] = ()
    privacy: str = ""


@dataclass(frozen=True, slots=True)
class Rollback:
    """A stored model ``restored`` as the newest version ``published`` at ``ts``, over the
    model that was newest until then (``replaced``)."""

    ts: float
    restored: int
    published: int
    replaced: int


@dataclass(frozen=True, slots=True)
class OpenRound:
    """A round the store saw opened and not closed, with the updates accepted into it so far:
    what a restarted gateway resumes."""

    info: RoundOpen
    accepted: tuple[Update, ...]


@dataclass(frozen=True, slots=True)
class VehicleRecord:
    """What the store knows of one vehicle, from its statuses, alerts and accepted updates.

    ``state`` is ``"online"`` or ``"offline"`` from its latest status (``status_ts``, the
    vehicle's clock), or ``"unknown"`` when none was stored. ``updates`` counts the rounds its
    update was accepted into; ``epsilon_spent`` is the total its latest accepted update
    reported.
    """

    vehicle_id: str
    state: str
    status_ts: float | None
    alerts: int
    last_alert: Alert | None
    updates: int
    epsilon_spent: float


@dataclass(frozen=True, slots=True)
class Budget:
    """One vehicle's privacy, as its updates and statuses reported it.

    ``privacy`` is ``"local"``, ``"central"`` or ``"off"`` (exact summaries: no guarantee);
    ``epsilon_total`` is what it has spent (composed, at ``delta``) out of ``epsilon_budget``
    (0: none set); ``exhausted`` says it has stopped publishing updates; ``updates`` counts its
    accepted updates and ``last_round`` is the latest round one was accepted into.

    >>> Budget("veh-0001", "local", "gaussian", 2.5, 10.0, 1e-5, 3, 7, False).remaining
    7.5
    """

    vehicle_id: str
    privacy: str
    mechanism: str
    epsilon_total: float
    epsilon_budget: float
    delta: float
    updates: int
    last_round: int
    exhausted: bool

    @property
    def remaining(self) -> float:
        """What is left to spend (infinite without a budget)."""
        if self.epsilon_budget <= 0:
            return float("inf")
        return max(0.0, self.epsilon_budget - self.epsilon_total)


class Store(abc.ABC):
    """Persistence for everything the gateway learns; writes never raise for bad content.

    Writes become durable at :meth:`flush`, which the gateway calls before it acknowledges
    the messages they came from.
    """

    @abc.abstractmethod
    def record_open_round(self, info: RoundOpen) -> None:
        """The round just opened (before it is announced): its number is never used again,
        and until :meth:`record_round` closes it, :meth:`open_round` gives it back."""

    @abc.abstractmethod
    def record_accepted(self, update: Update, payload: bytes | None = None) -> None:
        """An update accepted into the open round, kept until the round closes; ``payload``
        is the update as it arrived (validated), kept as it is rather than encoded again."""

    @abc.abstractmethod
    def open_round(self) -> OpenRound | None:
        """The round opened and not closed, with its accepted updates (``None``: none)."""

    @abc.abstractmethod
    def record_secure(self, round_number: int, kind: str, vehicle_id: str | None,
                      payload: bytes) -> None:
        """One entry of the open secure round's journal (:mod:`gateway.secure`): its
        announcement, a vehicle's phase message as it arrived, or a phase's close; kept until
        a later round opens."""

    @abc.abstractmethod
    def secure_journal(self, round_number: int) -> list[tuple[str, str | None, bytes]]:
        """The journal of secure round ``round_number``, in the order it was written: each
        entry's kind, vehicle (or ``None``) and payload."""

    @abc.abstractmethod
    def record_round(self, record: RoundRecord) -> None:
        """A closed round; it closes the open round of that number, if any."""

    @abc.abstractmethod
    def record_model(self, model: GlobalModel) -> None: ...

    @abc.abstractmethod
    def record_alert(self, alert: Alert) -> bool:
        """Store an alert; ``False`` if it was stored already (a message delivered again:
        same vehicle, reading time, subsystem and score)."""

    @abc.abstractmethod
    def record_status(self, status: Status) -> None: ...

    @abc.abstractmethod
    def record_budget(self, update: Update) -> None: ...

    @abc.abstractmethod
    def record_rejection(self, ts: float, reason: str, vehicle_id: str | None,
                         count: int = 1) -> None:
        """``count`` messages rejected for ``reason`` (from ``vehicle_id``, if known) up to
        ``ts``: the gateway writes its rejections as counts, not a row per message."""

    @abc.abstractmethod
    def record_traffic(self, ts: float, kind: str, traffic: Traffic) -> None:
        """Add ``traffic`` to the running totals of ``kind`` (``update``, ``alert``, ...)."""

    @abc.abstractmethod
    def latest_model(self) -> GlobalModel | None:
        """The newest stored global model, to resume from after a restart."""

    @abc.abstractmethod
    def model(self, version: int) -> GlobalModel | None:
        """The stored global model of ``version`` (``None``: none)."""

    @abc.abstractmethod
    def record_rollback(self, rollback: Rollback) -> None: ...

    @abc.abstractmethod
    def rollbacks(self) -> list[Rollback]:
        """Every rollback, newest first."""

    @abc.abstractmethod
    def rounds(self, limit: int = 100) -> list[RoundRecord]:
        """The most recent rounds, newest first."""

    @abc.abstractmethod
    def alerts(self, limit: int = 100) -> list[Alert]:
        """The most recent alerts, newest first."""

    @abc.abstractmethod
    def budgets(self) -> dict[str, Budget]:
        """Each vehicle's privacy: mode, spending and budget from its latest update, and
        whether it is exhausted from its latest status (an offline status, whose figures
        date from when the vehicle connected, never lowers the total or clears exhaustion)."""

    @abc.abstractmethod
    def statuses(self) -> dict[str, str]:
        """Each vehicle's last reported state."""

    @abc.abstractmethod
    def rejection_counts(self) -> dict[str, int]:
        """How many messages were rejected, by reason."""

    @abc.abstractmethod
    def vehicles(self) -> list[VehicleRecord]:
        """Every vehicle seen in a status, an alert or an accepted update, by id."""

    @abc.abstractmethod
    def participants(self, limit: int = 20) -> dict[int, list[str]]:
        """The vehicles (sorted) whose updates were accepted, for each of the ``limit`` most
        recent rounds that accepted any."""

    @abc.abstractmethod
    def traffic(self) -> dict[str, Traffic]:
        """The totals of :meth:`record_traffic`, by kind."""

    def flush(self) -> None:  # noqa: B027 - stores that write through need nothing
        """Make everything recorded so far durable."""

    def close(self) -> None:
        self.flush()
