"""A vehicle's privacy ledger: what it has spent, round by round, kept on its own disk.

The ledger is a JSON Lines file, one line per round the vehicle released something in, written
and flushed to disk *before* the release is published: a vehicle that dies in between has
counted a release it never made (safe), never the other way round. A restarted vehicle reads
the file back and goes on from its total, so it never spends again what it already spent.

What the vehicle paid for is kept too, so that a restart reuses it instead of paying again:
each line holds the randomized alert answer drawn with it, and the latest release itself (the
update as published) is kept beside the ledger (``<name>.release``, replaced atomically after
its line is written). A vehicle that died before its update reached the broker sends that
same update again while its round is open, at no new cost.

Totals are composed by the accountant (:mod:`federation.accounting`) at the ledger's
``delta``. A line cut short by a crash while being written is the last one and describes a
release that was never published: it is dropped with a warning. Any other damage makes the
ledger unreadable (:class:`LedgerError`), and a vehicle with an unreadable ledger publishes
nothing: it fails closed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from federation.accounting import Spend, epsilon_spent

__all__ = ["Answer", "LedgerEntry", "LedgerError", "PrivacyLedger", "Release"]

log = logging.getLogger(__name__)


class LedgerError(RuntimeError):
    """A ledger file that cannot be read or written."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A randomized answer drawn for ``day`` (of the vehicle's reading clock) to "did I
    alert today?" when the truth was ``truth``: ``value`` is what it said."""

    day: int
    truth: bool
    value: bool


@dataclass(frozen=True, slots=True)
class Release:
    """The update a round's spending paid for, as published (its encoded payload)."""

    round: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """The releases of one round, and the alert answer drawn with them, if one was."""

    round: int
    ts: float
    spends: tuple[Spend, ...]
    answer: Answer | None = None

    def to_line(self) -> str:
        obj: dict[str, object] = {"v": 1, "round": self.round, "ts": self.ts,
                                  "spends": [s.to_json() for s in self.spends]}
        if self.answer is not None:
            a = self.answer
            obj["answer"] = {"day": a.day, "truth": a.truth, "value": a.value}
        return json.dumps(obj) + "\n"

    @classmethod
    def from_line(cls, line: str) -> LedgerEntry:
        obj = json.loads(line)
        if not isinstance(obj, dict) or obj.get("v") != 1:
            raise ValueError("not a version 1 ledger line")
        spends = tuple(Spend(str(s["kind"]), float(s["parameter"])) for s in obj["spends"])
        a = obj.get("answer")
        answer = None if a is None else Answer(int(a["day"]), _bool(a["truth"]),
                                               _bool(a["value"]))
        return cls(int(obj["round"]), float(obj["ts"]), spends, answer)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


class PrivacyLedger:
    """A vehicle's spending against its budget, on disk at ``path`` (``None``: in memory).

    Parameters
    ----------
    path
        The JSON Lines file; created with its folder on first spending.
    budget
        The most total epsilon (at ``delta``) the vehicle may ever spend (``math.inf``: no
        limit, for tests and benchmarks).
    delta
        The delta at which totals are composed.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "veh-0001.jsonl"
    >>> laplace = Spend("laplace", 1.0)  # epsilon 1 per release
    >>> ledger = PrivacyLedger(path, budget=2.0, delta=1e-5)
    >>> ledger.allows([laplace])
    True
    >>> ledger.record(1, [laplace], ts=0.0); ledger.record(2, [laplace], ts=1.0)
    >>> ledger.allows([laplace]), round(ledger.epsilon_total, 3)
    (False, 2.0)
    >>> again = PrivacyLedger(path, budget=2.0, delta=1e-5)  # after a restart
    >>> again.last_round, again.allows([laplace])
    (2, False)

    What was paid for comes back after a restart too: alert answers, and the last release.

    >>> ledger = PrivacyLedger(path.with_name("veh-0002.jsonl"), budget=5.0, delta=1e-5)
    >>> ledger.record(7, [laplace], ts=0.0, answer=Answer(19_700, True, False),
    ...               release=b'{"v": 1}')
    >>> again = PrivacyLedger(ledger.path, budget=5.0, delta=1e-5)
    >>> again.answers(), again.release
    ({(19700, True): False}, Release(round=7, payload=b'{"v": 1}'))
    """

    def __init__(self, path: Path | None, *, budget: float, delta: float) -> None:
        if not budget > 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        self.path = path
        self.budget = budget
        self.delta = delta
        self.entries: list[LedgerEntry] = self._load() if path is not None else []
        self._spends = [s for e in self.entries for s in e.spends]
        self.release = self._load_release() if path is not None else None

    @property
    def release_path(self) -> Path | None:
        """Where the latest release is kept (``None`` for a ledger in memory)."""
        return None if self.path is None else self.path.with_suffix(".release")

    def _load(self) -> list[LedgerEntry]:
        assert self.path is not None
        try:
            lines = self.path.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise LedgerError(f"cannot read privacy ledger {self.path}: {exc}") from None
        entries = []
        for number, line in enumerate(lines, 1):
            try:
                entries.append(LedgerEntry.from_line(line))
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines) and not line.endswith("\n"):
                    log.warning("%s: dropping a line cut short by a crash (never published)",
                                self.path)
                    continue
                raise LedgerError(f"privacy ledger {self.path} line {number} is damaged: "
                                  f"{exc}") from None
        return entries

    def _load_release(self) -> Release | None:
        """The release of the last round spent on, if it was kept; anything else is ignored
        (it only spares a round: the ledger alone says what was spent)."""
        assert self.release_path is not None
        try:
            obj = json.loads(self.release_path.read_text())
            release = Release(int(obj["round"]), str(obj["payload"]).encode())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: ignoring a damaged release (%s)", self.release_path, exc)
            return None
        return release if release.round == self.last_round else None

    def answers(self) -> dict[tuple[int, bool], bool]:
        """The alert answers drawn on the latest day the ledger holds any for, by
        ``(day, truth)``: repeating them costs nothing."""
        drawn = [e.answer for e in self.entries if e.answer is not None]
        latest = max((a.day for a in drawn), default=None)
        return {(a.day, a.truth): a.value for a in drawn if a.day == latest}

    @property
    def epsilon_total(self) -> float:
        """Everything spent so far, composed."""
        return epsilon_spent(self._spends, self.delta)

    def epsilon_after(self, spends: Sequence[Spend]) -> float:
        """The total once ``spends`` are spent too."""
        return epsilon_spent([*self._spends, *spends], self.delta)

    @property
    def last_round(self) -> int:
        return self.entries[-1].round if self.entries else 0

    def allows(self, spends: Sequence[Spend]) -> bool:
        """Whether spending ``spends`` too would keep the total within the budget."""
        if self.budget == math.inf:
            return True
        return self.epsilon_after(spends) <= self.budget

    def record(self, round_number: int, spends: Sequence[Spend], ts: float,
               answer: Answer | None = None, release: bytes | None = None) -> None:
        """Write the round's spending and the alert ``answer`` it pays for to disk (flushed
        and synced), count it, then keep ``release``, the update it pays for."""
        entry = LedgerEntry(round_number, ts, tuple(spends), answer)
        if self.path is not None:
            self._append(entry.to_line())
        self.entries.append(entry)
        self._spends.extend(spends)
        if release is not None:
            self._keep(Release(round_number, release))

    def _append(self, line: str) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as file:
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            raise LedgerError(f"cannot write privacy ledger {self.path}: {exc}") from None

    def _keep(self, release: Release) -> None:
        """Replace the kept release atomically: a crash leaves the old one or the new one."""
        self.release = release
        if self.release_path is None:
            return
        temporary = self.release_path.with_suffix(".release.tmp")
        try:
            with temporary.open("w") as file:
                json.dump({"v": 1, "round": release.round,
                           "payload": release.payload.decode()}, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.release_path)
        except OSError as exc:
            raise LedgerError(f"cannot keep the release beside {self.path}: {exc}") from None
