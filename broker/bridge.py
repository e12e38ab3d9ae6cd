"""A region's Mosquitto broker bridged to the top broker, for a two-level fleet.

The region's vehicles and its region gateway (``fedfleet gateway --role worker``) talk to the
region broker only. Its bridge, one outgoing connection to the top broker, carries up what the
top gateway needs from the region (partials, forwarded releases, statuses, alerts) and down
what the vehicles need from the top gateway (the round and the model, retained). The region's
updates never cross it: the region gateway merges them.

The bridge speaks MQTT 5 (``bridge_protocol_version mqttv50``), so the top broker keeps the
retain flag of what it forwards (retain-as-published): a model the top gateway publishes while
the bridge is up is retained on the region broker too, for vehicles that join later.

>>> print(bridge_config(Bridge("north", "top.example", 1883)))  # doctest: +ELLIPSIS
# The bridge of region north to the top broker (fedfleet, broker/bridge.py).
connection fedfleet-north
address top.example:1883
remote_clientid fedfleet-bridge-north
...
topic fleet/v1/global/# in 1
...
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Bridge", "bridge_config"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}")


@dataclass(frozen=True, slots=True)
class Bridge:
    """One region's bridge: its name, the top broker, and how it logs in there.

    ``root`` is the protocol's topic root; ``cafile`` (a PEM CA on the region's broker host)
    makes the bridge verify the top broker over TLS; ``username``/``password`` its login there,
    or ``certfile``/``keyfile`` a client certificate whose common name is its login (the ACL
    must let it publish what goes up and read what comes down: ``fedfleet broker-setup
    --region NAME`` writes that login and this bridge)."""

    region: str
    host: str
    port: int
    root: str = "fleet/v1"
    username: str = ""
    password: str = ""
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.region):
            raise ValueError(f"invalid region name {self.region!r}: use 1-41 of A-Z a-z 0-9 _ . -")
        if not 1 <= self.port <= 65535 or not self.host or any(c.isspace() for c in self.host):
            raise ValueError(f"the top broker must be a host and a TCP port, got "
                             f"{self.host!r}:{self.port}")


def bridge_config(bridge: Bridge) -> str:
    """The ``mosquitto.conf`` lines that bridge the region broker to the top broker."""
    root = bridge.root
    lines = [
        f"# The bridge of region {bridge.region} to the top broker (fedfleet, broker/bridge.py).",
        f"connection fedfleet-{bridge.region}",
        f"address {bridge.host}:{bridge.port}",
        f"remote_clientid fedfleet-bridge-{bridge.region}",
        "bridge_protocol_version mqttv50",
        "cleansession false",  # the top broker queues what comes down while the bridge is away
        "restart_timeout 1 30",
        "notifications false",
        # Up: the region gateway's partials and forwarded releases, the vehicles' presence
        # and alerts (the top gateway records them). Not their updates: merged in the region.
        f"topic {root}/gateway/# out 1",
        f"topic {root}/vehicles/+/status out 1",
        f"topic {root}/vehicles/+/alert out 1",
        # Down: the open round and the global model, retained on the region broker too.
        f"topic {root}/global/# in 1",
    ]
    if bridge.username:
        lines.append(f"remote_username {bridge.username}")
    if bridge.password:
        lines.append(f"remote_password {bridge.password}")
    if bridge.cafile:
        lines += [f"bridge_cafile {bridge.cafile}", "bridge_insecure false"]
    if bridge.certfile:
        lines += [f"bridge_certfile {bridge.certfile}", f"bridge_keyfile {bridge.keyfile}"]
    return "\n".join(lines) + "\n"
