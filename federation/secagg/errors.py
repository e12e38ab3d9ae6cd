"""The one error of secure aggregation.

Exceptions::

    ValueError
    └── federation.messages.MessageError
        └── SecAggError       (reason, as a counter label: the codec's too_large, not_json,
                               not_object, bad_version, missing_field, wrong_type,
                               out_of_range, bad_shape, malformed; and the protocol's
                               wrong_kind, wrong_round, wrong_phase, not_addressed,
                               unknown_vehicle, duplicate, full, forged, bad_share,
                               bad_params, too_few, below_threshold)

Every message a party of the protocol receives, from the network or from a peer through the
gateway, either is accepted or raises :class:`SecAggError` and leaves the party as it was.
"""

from __future__ import annotations

from federation.messages import MessageError

__all__ = ["SecAggError"]


class SecAggError(MessageError):
    """A secure-aggregation message that is malformed, replayed, forged or out of turn, or a
    round that cannot go on (too few vehicles left to keep its promises).

    >>> SecAggError("wrong_phase", "the round is past advertising").reason
    'wrong_phase'
    """
