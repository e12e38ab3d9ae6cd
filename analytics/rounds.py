"""The gateway's round cycle without a network, for the replays of :mod:`analytics.replay` and
:mod:`analytics.vectorized`: updates are accepted by :class:`gateway.rounds.Round` and merged by
the gateway's :class:`gateway.strategy.ExactMerge`; what the gateway would publish is handed back
encoded, as the broker would deliver it.
"""

from __future__ import annotations

from typing import TypeVar

from federation import messages, topics
from federation.features import Schema
from federation.messages import GlobalModel, MessageError, RoundOpen, Update
from federation.privacy import SeededNoise
from gateway.rounds import Round
from gateway.strategy import ExactMerge

__all__ = ["RoundCycle", "receive"]

Published = list[tuple[str, bytes]]
M = TypeVar("M", RoundOpen, GlobalModel)


class RoundCycle:
    """Open a round every ``round_rows`` ticks; at its close, merge it if it met its quorum.

    Examples
    --------
    >>> from federation.features import VEHICLE_SCHEMA
    >>> cycle = RoundCycle(30, VEHICLE_SCHEMA, SeededNoise(0))
    >>> [topic for topic, _ in cycle.next_round(0)]
    ['fleet/v1/global/round']
    >>> cycle.rounds, cycle.model is None
    (1, True)
    """

    def __init__(self, round_rows: int, schema: Schema, noise: SeededNoise) -> None:
        self.round_rows = round_rows
        self.schema = schema
        self.noise = noise
        self.strategy = ExactMerge()
        self.model: GlobalModel | None = None
        self.round: Round | None = None
        self.rounds = 0
        self.retained: Published = []

    def next_round(self, tick: int) -> Published:
        """Close the open round (merging it if it met its quorum), open the next, and return
        what is published to the vehicles online: the new model, if any, and the round."""
        fresh = []
        if self.round is not None and self.round.quorum_met:
            self.model = self.round.merge(self.model, self.strategy, self.schema, float(tick),
                                         self.noise)
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
        assert self.round is not None
        self.round.offer(vehicle_id, update)


def receive(kind: type[M], payload: bytes, schema: Schema) -> tuple[M | None, str | None]:
    """A message as every vehicle of ``schema`` decodes it, or why each rejects it (the reasons
    :meth:`devices.vehicle.Vehicle.on_message` counts)."""
    try:
        return messages.decode(kind, payload, schema), None
    except MessageError as exc:
        return None, exc.reason
    except Exception:
        return None, "internal_error"
