"""A vehicle's privacy ledger: what it has spent, round by round, kept on its own disk.

The ledger is a JSON Lines file, one line per round the vehicle released something in, written
and flushed to disk *before* the release is published: a vehicle that dies in between has
counted a release it never made (safe), never the other way round. A restarted vehicle reads
the file back and goes on from its total, so it never spends again what it already spent.

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

__all__ = ["LedgerEntry", "LedgerError", "PrivacyLedger"]

log = logging.getLogger(__name__)


class LedgerError(RuntimeError):
    """A ledger file that cannot be read or written."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """The releases of one round."""

    round: int
    ts: float
    spends: tuple[Spend, ...]

    def to_line(self) -> str:
        return json.dumps({"v": 1, "round": self.round, "ts": self.ts,
                           "spends": [s.to_json() for s in self.spends]}) + "\n"

    @classmethod
    def from_line(cls, line: str) -> LedgerEntry:
        obj = json.loads(line)
        if not isinstance(obj, dict) or obj.get("v") != 1:
            raise ValueError("not a version 1 ledger line")
        spends = tuple(Spend(str(s["kind"]), float(s["parameter"])) for s in obj["spends"])
        return cls(int(obj["round"]), float(obj["ts"]), spends)


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
    """

    def __init__(self, path: Path | None, *, budget: float, delta: float) -> None:
        if not budget > 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        self.path = path
        self.budget = budget
        self.delta = delta
        self.entries: list[LedgerEntry] = self._load() if path is not None else []
        self._spends = [s for e in self.entries for s in e.spends]

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

    @property
    def epsilon_total(self) -> float:
        """Everything spent so far, composed."""
        return epsilon_spent(self._spends, self.delta)

    @property
    def last_round(self) -> int:
        return self.entries[-1].round if self.entries else 0

    def allows(self, spends: Sequence[Spend]) -> bool:
        """Whether spending ``spends`` too would keep the total within the budget."""
        if self.budget == math.inf:
            return True
        return epsilon_spent([*self._spends, *spends], self.delta) <= self.budget

    def record(self, round_number: int, spends: Sequence[Spend], ts: float) -> None:
        """Write the round's spending to disk (flushed and synced), then count it."""
        entry = LedgerEntry(round_number, ts, tuple(spends))
        if self.path is not None:
            self._append(entry.to_line())
        self.entries.append(entry)
        self._spends.extend(spends)

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
