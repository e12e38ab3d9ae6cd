"""The MQTT broker every component talks through.

- :mod:`broker.embedded` — :class:`EmbeddedBroker`, the pure-Python broker (amqtt) that
  ``fedfleet demo`` and ``fedfleet broker`` start when no broker is given: anonymous, in
  memory, on a thread of its own; for development, tests and demos.
- ``mosquitto.conf`` and ``mosquitto.acl`` — the Mosquitto 2 configuration for real
  deployments: authenticated clients only, each vehicle confined to its own topics, the
  gateway alone publishing the global round and model.

This package imports no component of fedfleet; clients reach either broker through
:mod:`federation.transport` with an ``mqtt://`` URL.
"""

from broker.embedded import BrokerError, EmbeddedBroker

__all__ = ["BrokerError", "EmbeddedBroker"]
