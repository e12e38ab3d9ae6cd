"""The gateway's round cycle without a network, for the replays of :mod:`analytics.replay` and
:mod:`analytics.vectorized`: updates are validated by :class:`gateway.validation.Plausibility`
(one reading per tick), accepted by :class:`gateway.rounds.Round` and merged by the gateway's
strategy (:mod:`gateway.strategy`); what the gateway would publish is handed back encoded, as
the broker would deliver it. With an :class:`~analytics.attacks.Attack`, its attackers' updates
are altered on their way to the gateway; with :class:`~analytics.secure.SecureRounds`, each
round's releases are aggregated by secure aggregation at its close.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TypeVar

import numpy as np

from analytics.attacks import Attack
from analytics.secure import SecureRounds
from federation import messages, topics
from federation.features import Schema
from federation.messages import GlobalModel, MessageError, RoundOpen, Update
from federation.privacy import SeededNoise, public_centre
from federation.summary import ModelSummary
from gateway.private import CLIP_NORM
from gateway.rounds import Round
from gateway.strategy import Strategy, make_strategy
from gateway.validation import TOLERANCE, Plausibility

__all__ = ["RoundCycle", "feasible", "receive"]

Published = list[tuple[str, bytes]]
M = TypeVar("M", RoundOpen, GlobalModel)


class RoundCycle:
    """Open a round every ``round_rows`` ticks; at its close, merge it if it met its quorum.

    ``joined`` gives the tick at which each device first comes online (the gateway hears of
    it); ``rejected`` counts the updates validation refused, by reason, and ``infeasible`` the
    global models outside the feasible region (:func:`feasible`).

    Examples
    --------
    >>> from federation.features import VEHICLE_SCHEMA
    >>> cycle = RoundCycle(30, VEHICLE_SCHEMA, SeededNoise(0))
    >>> [topic for topic, _ in cycle.next_round(0)]
    ['fleet/v1/global/round']
    >>> cycle.rounds, cycle.model is None
    (1, True)
    """

    def __init__(self, round_rows: int, schema: Schema, noise: SeededNoise,
                 strategy: Strategy | None = None, attack: Attack | None = None,
                 joined: Mapping[str, int] | None = None,
                 secure: SecureRounds | None = None) -> None:
        self.round_rows = round_rows
        self.schema = schema
        self.noise = noise
        self.strategy = strategy or make_strategy()
        self.attack = attack
        self.secure = secure
        self.plausibility = Plausibility(readings_per_s=1.0, round_s=float(round_rows),
                                         started_s=0.0)
        for device, tick in (joined or {}).items():
            self.plausibility.heard(device, float(tick))
        self.model: GlobalModel | None = None
        self.round: Round | None = None
        self.rounds = 0
        self.rejected: Counter[str] = Counter()
        self.infeasible = 0
        self.retained: Published = []

    def next_round(self, tick: int) -> Published:
        """Close the open round (merging it if it met its quorum), open the next, and return
        what is published to the vehicles online: the new model, if any, and the round."""
        fresh = []
        if self.round is not None and self.secure is not None:
            self.secure.close(self.round, self.model, self.rejected)
        if self.round is not None and self.round.quorum_met:
            self.model = self.round.merge(self.model, self.strategy, self.schema, float(tick),
                                         self.noise, CLIP_NORM)
            self.infeasible += not feasible(self.model.summary)
            self.plausibility.published(self.model)
            fresh.append((topics.MODEL_TOPIC, messages.encode(self.model)))
        version = self.model.version if self.model else 0
        info = RoundOpen(self.rounds + 1, float(tick), float(tick + self.round_rows), 1, version,
                         self.schema.names, self.schema.digest)
        self.round = Round(info)
        self.rounds += 1
        fresh.append((topics.ROUND_TOPIC, messages.encode(info)))
        published = {topic for topic, _ in fresh}
        self.retained = [(t, p) for t, p in self.retained if t not in published] + fresh
        return fresh

    def offer(self, vehicle_id: str, update: Update) -> None:
        """Validate ``update`` (altered first if its vehicle attacks) and offer it to the round,
        at the tick of its ``sent_at``."""
        assert self.round is not None
        if self.attack is not None:
            centre = self.model.summary if self.model else public_centre(self.schema.names)
            update = self.attack.alter(update, centre)
        reason = self.plausibility.reason(update, update.sent_at)
        if reason is None:
            reason = self.round.offer(vehicle_id, update)
        if reason is None:
            self.plausibility.accepted(update, update.sent_at)
        else:
            self.rejected[reason] += 1


def feasible(summary: ModelSummary) -> bool:
    """Whether scaled readings could have ``summary``: means in [0, 1], variances at most 1/4,
    a positive semi-definite covariance (to rounding).

    >>> from federation.features import FEATURE_NAMES
    >>> feasible(public_centre(FEATURE_NAMES))
    True
    """
    variances = np.diag(summary.cov)
    return bool(summary.mean.min() >= 0 and summary.mean.max() <= 1
                and variances.max() <= 0.25 + TOLERANCE
                and np.linalg.eigvalsh(summary.cov).min() >= -TOLERANCE)


def receive(kind: type[M], payload: bytes, schema: Schema) -> tuple[M | None, str | None]:
    """A message as every vehicle of ``schema`` decodes it, or why each rejects it (the reasons
    :meth:`devices.onboard.vehicle.Vehicle.on_message` counts)."""
    try:
        return messages.decode(kind, payload, schema), None
    except MessageError as exc:
        return None, exc.reason
    except Exception:
        return None, "internal_error"
