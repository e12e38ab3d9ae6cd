"""Privacy settings made into vehicles' mechanisms and ledgers, and the fleet's budget report."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devices.onboard.ledger import PrivacyLedger
from devices.onboard.secure import SecureReleases
from federation.privacy import Mechanism, calibrated
from federation.randomized_response import RandomizedResponse
from federation.secagg.params import release_epsilon
from gateway.store import Budget, Store

__all__ = ["budget_report", "describe", "ledgers", "secure_epsilon", "vehicle_options"]


def mechanism(settings: dict[str, Any]) -> Mechanism | None:
    """The release mechanism the settings ask for (``None`` with ``privacy = "off"``): its
    ``releases`` releases compose to the vehicle's ``epsilon_budget``."""
    if settings["privacy"] == "off":
        return None
    return calibrated(settings["mechanism"], settings["epsilon_budget"], settings["releases"],
                      settings["delta"], settings["clip_norm"])


def vehicle_options(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for :class:`devices.onboard.vehicle.Vehicle`: the mechanism, central or
    local noise or secure aggregation (one :class:`~devices.onboard.secure.SecureReleases`
    for all the vehicles these options make), and randomized alert answers."""
    mech = mechanism(settings)
    rr_epsilon = settings["alert_report_epsilon"]
    kwargs: dict[str, Any] = {"mechanism": mech, "central": settings["privacy"] == "central",
                              "federate": settings["federation"] == "on"}
    if settings["privacy"] == "secagg":
        kwargs["secure"] = SecureReleases(epsilon_budget=settings["epsilon_budget"],
                                          releases=settings["releases"],
                                          delta=settings["delta"])
    for key in ("first_release_readings", "release_growth"):  # 0: the device tuning's
        if settings[key]:
            kwargs[key] = settings[key]
    if mech is not None and rr_epsilon > 0:
        kwargs["alert_report"] = RandomizedResponse.for_epsilon(rr_epsilon)
    return kwargs


def ledgers(settings: dict[str, Any], folder: Path) -> Callable[[str], PrivacyLedger | None]:
    """Each vehicle id's ledger, ``<folder>/<vehicle_id>.jsonl`` (``None`` without privacy)."""
    budget, delta = settings["epsilon_budget"], settings["delta"]
    if settings["privacy"] == "off":
        return lambda vehicle_id: None
    return lambda vehicle_id: PrivacyLedger(folder / f"{vehicle_id}.jsonl", budget=budget,
                                            delta=delta)


def describe(settings: dict[str, Any]) -> str:
    """One line on what the settings protect and what they cost.

    >>> from fedfleet.config import resolve
    >>> settings = resolve("fleet", {}, environ={})
    >>> for part in describe(settings).split("; "):
    ...     print(part)
    central: the gateway noises the aggregate with gaussian noise
    budget 1 per vehicle at delta 1e-05, for 3 releases (epsilon 0.548 each)
    clip norm 4, noise std 51.7 per release, over the number of vehicles in it
    >>> describe(resolve("fleet", {"privacy": "off"}, environ={}))
    'off: exact summaries, no privacy guarantee'
    """
    mech = mechanism(settings)
    if mech is None:
        return "off: exact summaries, no privacy guarantee"
    if settings["privacy"] == "secagg":
        return (f"secagg: vehicles mask their releases, the gateway unmasks only their sum, "
                f"which carries their shares of discrete Gaussian noise; budget "
                f"{settings['epsilon_budget']:g} per vehicle at delta {mech.delta:g}, for "
                f"{settings['releases']} releases (epsilon {secure_epsilon(settings):.3g} "
                f"each, zCDP); clip norm {mech.clip_norm:g}")
    central = settings["privacy"] == "central"
    where = ("central: the gateway noises the aggregate with" if central
             else "local: each vehicle noises its releases with")
    spread = ", over the number of vehicles in it" if central else " (relative)"
    return (f"{where} {mech.name} noise; budget {settings['epsilon_budget']:g} per vehicle at "
            f"delta {mech.delta:g}, for {settings['releases']} releases (epsilon "
            f"{mech.epsilon:.3g} each); clip norm {mech.clip_norm:g}, noise std "
            f"{mech.noise_std:.3g} per release{spread}")


def secure_epsilon(settings: dict[str, Any]) -> float:
    """One secure release's epsilon: the lifetime budget over the releases, in zCDP."""
    return release_epsilon(settings["epsilon_budget"], settings["releases"], settings["delta"])


def budget_report(store: Store) -> str:
    """The fleet's budget table, the exhausted vehicles and the global model's noise level."""
    budgets = store.budgets()
    lines = [f"{'vehicle':<12} {'privacy':<8} {'mechanism':<9} {'updates':>7} {'spent':>8} "
             f"{'budget':>8} {'remaining':>9}  state"]
    lines += [_row(b) for b in budgets.values()]
    exhausted = sorted(b.vehicle_id for b in budgets.values() if b.exhausted)
    private = [b for b in budgets.values() if b.privacy != "off"]
    lines.append("")
    lines.append(f"{len(budgets)} vehicles, {len(private)} with a privacy guarantee, "
                 f"{len(exhausted)} exhausted" + (f": {', '.join(exhausted)}" if exhausted else ""))
    if private:
        spent = [b.epsilon_total for b in private]
        lines.append(f"epsilon spent: max {max(spent):.3g}, mean {sum(spent) / len(spent):.3g}")
    lines.append(_round_modes(store))
    model = store.latest_model()
    lines.append("global model: none yet" if model is None else
                 f"global model v{model.version} (round {model.round}, {model.summary.n:,.0f} "
                 f"readings): privacy noise std {model.noise_std:.3g} per coordinate")
    return "\n".join(lines)


def _round_modes(store: Store, limit: int = 100) -> str:
    """How the last ``limit`` rounds' releases were protected, newest mode first.

    >>> from gateway.store import RoundRecord, SQLiteStore
    >>> store = SQLiteStore(":memory:")
    >>> for n, mode in enumerate(["central", "secagg", "secagg", ""], 1):
    ...     store.record_round(RoundRecord(n, 0.0, 1.0, 3, 0, mode != "", n, privacy=mode))
    >>> _round_modes(store)
    'last 4 rounds by privacy: none 1, secagg 2 (2 merged), central 1 (1 merged)'
    """
    rounds = store.rounds(limit)
    if not rounds:
        return "rounds: none closed yet"
    counts: dict[str, list[int]] = {}
    for r in rounds:
        seen = counts.setdefault(r.privacy or "none", [0, 0])
        seen[0] += 1
        seen[1] += r.quorum_met
    parts = [f"{mode} {n}" + (f" ({merged} merged)" if merged else "")
             for mode, (n, merged) in counts.items()]
    return f"last {len(rounds)} rounds by privacy: {', '.join(parts)}"


def _row(b: Budget) -> str:
    if b.privacy == "off":
        spent = budget = remaining = "-"
    else:
        spent = f"{b.epsilon_total:.3f}"
        budget = f"{b.epsilon_budget:g}" if b.epsilon_budget > 0 else "none"
        remaining = f"{b.remaining:.3f}" if math.isfinite(b.remaining) else "-"
    state = "exhausted" if b.exhausted else "sharing" if b.privacy != "off" else "no guarantee"
    return (f"{b.vehicle_id:<12} {b.privacy:<8} {b.mechanism:<9} {b.updates:>7} {spent:>8} "
            f"{budget:>8} {remaining:>9}  {state}")
