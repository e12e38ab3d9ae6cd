"""How every component reaches the broker: the MQTT URL and a configured paho client.

>>> parse_mqtt_url("mqtt://gw:secret@broker.local:1884")
MqttTarget(host='broker.local', port=1884, username='gw', password='secret', tls=False)
>>> parse_mqtt_url("mqtts://broker.local").port
8883
>>> parse_mqtt_url("http://x")
Traceback (most recent call last):
...
ValueError: MQTT URL must start with mqtt:// or mqtts://, got 'http://x'
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

__all__ = ["DEFAULT_MQTT_URL", "MqttTarget", "make_client", "parse_mqtt_url"]

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse ``mqtt[s]://[user[:password]@]host[:port]``; raise ``ValueError`` if malformed."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"MQTT URL has an invalid port: {url!r}") from None
    if not parts.hostname:
        raise ValueError(f"MQTT URL has no host: {url!r}")
    tls = parts.scheme == "mqtts"
    return MqttTarget(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


def make_client(
    client_id: str,
    target: MqttTarget,
    will: tuple[str, bytes] | None = None,
) -> mqtt.Client:
    """A paho client (MQTT 3.1.1, callback API v2) set up for ``target``; not yet connected.

    ``will`` is a ``(topic, payload)`` Last Will, published retained with QoS 1.
    """
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
    )
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set()
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client
