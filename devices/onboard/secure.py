"""A vehicle's releases by secure aggregation: one :class:`SecAggClient` per round it joins.

When the gateway announces a secure round (:class:`~federation.secagg.messages.SecureRound`,
retained) about the model the vehicle holds, a vehicle that owes a release and whose ledger
can pay for it advertises its keys; it then answers each phase the gateway sends it on its
own topic. Its vector is everything it has learned, in the announced model's whitened
coordinates (:mod:`federation.whitening`), clipped, noised and masked by the client. The
release is written to the ledger, as a zCDP spend of the round plan's ``rho``, before the
masked input leaves: a fleet syncs a pass's ledgers first (``Outgoing.paid_for``).

A vehicle refuses a round whose config would cost more a release than its own settings allow
(``bad_params``); a message for a round it is not in, out of turn or forged is refused by
its client (:class:`~federation.secagg.errors.SecAggError`) and counted by the vehicle.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, replace

from devices.onboard.ledger import LedgerError
from devices.onboard.vehicle import Outgoing, Vehicle
from federation import topics
from federation.accounting import Spend
from federation.privacy import public_centre
from federation.secagg import messages
from federation.secagg.client import SecAggClient
from federation.secagg.errors import SecAggError
from federation.secagg.messages import Roster, SecureRound, SharesRelay, UnmaskRequest
from federation.secagg.noise import IntegerNoise
from federation.secagg.params import release_epsilon
from federation.secagg.randomness import RandomBytes
from federation.whitening import Whitening

__all__ = ["SecureReleases"]

log = logging.getLogger(__name__)

# The most a round's announced epsilon may pass the vehicle's own (float rounding only).
_EPSILON_SLACK = 1e-9


@dataclass
class _Joined:
    """A round a vehicle takes part in."""

    client: SecAggClient
    announced: SecureRound


class SecureReleases:
    """The secure releases of the vehicles of one process (their state kept by vehicle id).

    ``epsilon_budget`` over ``releases``, at ``delta``, fixes the most one release may cost
    (:func:`~federation.secagg.params.release_epsilon`); ``tolerated_colluders`` the fewest
    colluders a round must tolerate. ``noise`` and ``random_bytes`` default to secure sources.

    Examples
    --------
    >>> releases = SecureReleases(epsilon_budget=1.0, releases=3, delta=1e-5)
    >>> round(releases.epsilon, 3)
    0.551
    >>> releases.subscriptions("veh-0001")
    [('fleet/v1/global/secagg', 1), ('fleet/v1/secagg/veh-0001', 1)]
    """

    def __init__(self, *, epsilon_budget: float, releases: int, delta: float,
                 tolerated_colluders: float = 0.05, noise: IntegerNoise | None = None,
                 random_bytes: RandomBytes = secrets.token_bytes) -> None:
        self.epsilon = release_epsilon(epsilon_budget, releases, delta)
        self.delta = delta
        self.tolerated_colluders = tolerated_colluders
        self._noise = noise
        self._random = random_bytes
        self._announced: SecureRound | None = None
        self._joined: dict[str, _Joined] = {}
        self._last_joined: dict[str, int] = {}  # vehicle id: the last round it advertised in

    def subscriptions(self, vehicle_id: str) -> list[tuple[str, int]]:
        return [(topics.SECAGG_ROUND_TOPIC, 1), (topics.secagg_reply_topic(vehicle_id), 1)]

    def on_message(self, vehicle: Vehicle, topic: str, payload: bytes) -> list[Outgoing] | None:
        if topic == topics.SECAGG_ROUND_TOPIC:
            self._announce(messages.decode(SecureRound, payload))
            return []
        if topic != topics.secagg_reply_topic(vehicle.vehicle_id):
            return None
        joined = self._joined.get(vehicle.vehicle_id)
        if joined is None:
            raise SecAggError("wrong_round", f"{vehicle.vehicle_id} is in no secure round")
        client = joined.client  # what it takes now follows from its phase
        if client.phase == "share":
            return [self._out(vehicle, client.share_keys(messages.decode(Roster, payload)))]
        if client.phase == "input":
            return self._masked_input(vehicle, joined, messages.decode(SharesRelay, payload))
        unmask = client.unmask(messages.decode(UnmaskRequest, payload))
        del self._joined[vehicle.vehicle_id]
        return [self._out(vehicle, unmask)]

    def joined(self, vehicle: Vehicle) -> bool:
        """Whether ``vehicle`` is in a secure round it has yet to finish, before its
        deadline (a round refused at the gateway sends it nothing more)."""
        entry = self._joined.get(vehicle.vehicle_id)
        return entry is not None and vehicle.clock() < entry.announced.deadline

    def take_part(self, vehicle: Vehicle) -> list[Outgoing]:
        """Advertise keys to the announced round, if the vehicle owes a release, holds the
        round's model, has not joined the round yet, and advertising is still open."""
        announced = self._announced
        if (announced is None or not vehicle.owes_update or not vehicle.federate
                or self._last_joined.get(vehicle.vehicle_id, 0) >= announced.round
                or vehicle.model_version != announced.model_version
                or vehicle.clock() >= announced.advertise_until):
            return []
        self._last_joined[vehicle.vehicle_id] = announced.round
        client = SecAggClient(vehicle.vehicle_id, announced.round, announced.config,
                              noise=self._noise, random_bytes=self._random)
        self._joined[vehicle.vehicle_id] = _Joined(client, announced)
        return [self._out(vehicle, client.advertise())]

    def _announce(self, announced: SecureRound) -> None:
        if announced.epsilon > self.epsilon * (1 + _EPSILON_SLACK) or announced.epsilon <= 0:
            raise SecAggError("bad_params", f"round {announced.round} asks for epsilon "
                              f"{announced.epsilon:.4g} a release; this fleet's is "
                              f"{self.epsilon:.4g}")
        if announced.delta > self.delta or (
                announced.tolerated_colluders < self.tolerated_colluders):
            raise SecAggError("bad_params", f"round {announced.round} asks for a larger delta "
                              "or tolerates fewer colluders than this fleet's")
        self._announced = announced

    def _masked_input(self, vehicle: Vehicle, joined: _Joined,
                      relay: SharesRelay) -> list[Outgoing]:
        """Phase 3: the masked vector, paid for in the ledger before it is handed out."""
        global_model = vehicle.global_model
        centre = (global_model.summary if global_model and global_model.version
                  == joined.announced.model_version else public_centre(vehicle.schema.names))
        summary = vehicle.detector.own_summary()
        masked = joined.client.masked_input(relay, Whitening(centre).pack(summary))
        spends = [Spend("zcdp", joined.client.plan.rho)]
        if not vehicle.ledger.allows(spends):
            log.info("%s: privacy budget %.3g exhausted; no more releases", vehicle.vehicle_id,
                     vehicle.ledger.budget)
            vehicle.exhausted = True
            del self._joined[vehicle.vehicle_id]
            return [vehicle.status("online")]
        try:
            vehicle.ledger.record(joined.announced.round, spends, vehicle.clock())
        except LedgerError as exc:
            vehicle.stop_updates(exc)
            del self._joined[vehicle.vehicle_id]
            return []
        masked = replace(masked, readings=summary.n,
                         replaces_readings=min(vehicle.released_readings, summary.n))
        vehicle.released(joined.announced.round, summary.n)
        # The status says what the vehicle has spent: a secure release carries no total.
        return [self._out(vehicle, masked), vehicle.status("online")]

    @staticmethod
    def _out(vehicle: Vehicle, message: messages.SecAggMessage) -> Outgoing:
        return Outgoing(topics.secagg_topic(vehicle.vehicle_id), message,
                        messages.encode_binary(message))
