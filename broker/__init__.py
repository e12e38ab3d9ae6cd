"""The MQTT broker every component talks through.

- :mod:`broker.embedded` — :class:`EmbeddedBroker`, the pure-Python broker (amqtt) that
  ``fedfleet demo`` and ``fedfleet broker`` start when no broker is given: anonymous, in
  memory, on a thread of its own; for development, tests and demos.
- :mod:`broker.access` — a Mosquitto 2 setup for a real deployment, written by
  ``fedfleet broker-setup``: TLS, a login per client bound to its client id, each vehicle
  confined to its own topics, the gateway alone publishing the global round and model;
  with :mod:`broker.certificates` (the development CA) and :mod:`broker.passwords`
  (Mosquitto's password-file format).

This package imports no component of fedfleet; clients reach either broker through
:mod:`federation.transport` with an ``mqtt://`` or ``mqtts://`` URL.
"""

from broker.embedded import BrokerError, EmbeddedBroker

__all__ = ["BrokerError", "EmbeddedBroker"]
