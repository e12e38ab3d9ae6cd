"""Which coordinator acts: a lease retained on the broker, renewed, taken over once it lapses.

Coordinators that share a fleet (``fedfleet gateway --workers K --gateway-id ID
--lease-seconds S``) all follow the rounds; one of them, the lease's holder, opens and closes
them and publishes. The holder publishes a :class:`~federation.messages.Lease` retained on
``fleet/v1/gateway/lease`` every quarter of the lease. A standby that has heard no renewal
for a whole lease (timed on its own clock from when it last heard one, or last connected)
claims the next term; after a quarter of a lease more without hearing a better claim, and
once the broker has acknowledged its claim, it acts. The better of two claims is the higher
term, and of one term the lower holder id: every coordinator hears every claim in the
broker's order and decides alike. A holder that hears a better claim steps down at once, and
one whose renewals the broker has not acknowledged for three quarters of a lease stops
acting, a quarter of a lease before any standby may take over.

This module decides, from what is heard and when; :mod:`gateway.coordinator` publishes.
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.messages import Lease

__all__ = ["LeaseState"]


def _beats(term: int, holder: str, other_term: int, other_holder: str) -> bool:
    """Whether the claim ``(term, holder)`` wins over ``(other_term, other_holder)``."""
    return term > other_term or (term == other_term and holder < other_holder)


@dataclass
class LeaseState:
    """One coordinator's view of the lease; no I/O, times in seconds of a monotonic clock.

    Examples
    --------
    Two coordinators start together; ``a`` claims first, ``b`` hears it and stands by:

    >>> a, b = LeaseState("a", 4.0, now_s=0.0), LeaseState("b", 4.0, now_s=0.0)
    >>> claim = a.to_send(now_s=4.0, wall_s=100.0)
    >>> claim.term, b.heard(claim, now_s=4.0)
    (1, False)
    >>> a.acked(sent_s=4.0); a.holds(now_s=4.5), a.holds(now_s=5.0), b.holds(now_s=5.0)
    (False, True, False)

    ``a`` dies; ``b`` claims term 2 a whole lease after it last heard ``a``:

    >>> b.to_send(now_s=7.9, wall_s=0.0) is None, b.to_send(now_s=8.0, wall_s=0.0).term
    (True, 2)

    ``a`` comes back, hears term 2, and steps down:

    >>> a.heard(Lease("b", 2, 4.0, 0.0), now_s=8.1), a.holds(now_s=8.1)
    (True, False)
    """

    holder: str
    lease_s: float
    now_s: float
    term: int = 0  # the best term heard or claimed
    leader: str | None = None  # who holds it, as far as this coordinator knows
    claimed_at: float | None = None  # when this coordinator claimed ``term``
    sent_at: float | None = None  # when it last sent its claim or a renewal
    acked_at: float | None = None  # the send time of its last renewal the broker acknowledged

    def __post_init__(self) -> None:
        if self.lease_s <= 0:
            raise ValueError(f"a lease lasts more than 0 s, got {self.lease_s}")
        self.heard_at = self.now_s  # a new coordinator waits a whole lease before it claims

    @property
    def renew_s(self) -> float:
        """How often the holder renews; also how long a claim waits for a better one."""
        return self.lease_s / 4

    @property
    def mine(self) -> bool:
        """Whether this coordinator holds, or has claimed, the best term it knows."""
        return self.leader == self.holder and self.claimed_at is not None

    def heard(self, lease: Lease, now_s: float) -> bool:
        """Take in a lease heard on the broker; ``True`` if it made this holder step down.

        A renewal of the best term restarts the wait; a better claim replaces it; an older
        term's, or a claim that loses the tie, is ignored (its holder steps down on hearing
        the better one). A lease this coordinator's id held before a restart is another's:
        it waits it out too."""
        if (lease.term, lease.holder) == (self.term, self.leader):
            if not self.mine:
                self.heard_at = now_s
            return False
        if self.leader is not None and not _beats(lease.term, lease.holder, self.term,
                                                  self.leader):
            return False
        stepped_down = self.mine
        self.term, self.leader, self.heard_at = lease.term, lease.holder, now_s
        self.claimed_at = self.sent_at = self.acked_at = None
        return stepped_down

    def connected(self, now_s: float) -> None:
        """(Re)connected: a standby waits a whole lease again, for the retained lease."""
        if not self.mine:
            self.heard_at = now_s

    def to_send(self, now_s: float, wall_s: float) -> Lease | None:
        """The lease to publish now, if any: a claim once the lease has lapsed, or a renewal;
        ``wall_s`` (Unix seconds) dates ``expires_at``. Call it while connected only."""
        if not self.mine:
            if now_s - self.heard_at < self.lease_s:
                return None
            self.term, self.leader, self.claimed_at = self.term + 1, self.holder, now_s
            self.acked_at = None
        elif self.sent_at is not None and now_s - self.sent_at < self.renew_s:
            return None
        self.sent_at = now_s
        return Lease(self.holder, self.term, self.lease_s, wall_s + self.lease_s)

    def acked(self, sent_s: float) -> None:
        """The broker acknowledged the claim or renewal sent at ``sent_s``."""
        if self.mine:
            self.acked_at = max(self.acked_at or sent_s, sent_s)

    def holds(self, now_s: float) -> bool:
        """Whether this coordinator may act now: its claim has stood a quarter of a lease and
        the broker acknowledged a renewal less than three quarters of a lease ago."""
        if not self.mine or self.acked_at is None or self.claimed_at is None:
            return False
        return self.claimed_at + self.renew_s <= now_s < self.acked_at + self.lease_s - (
            self.renew_s)
