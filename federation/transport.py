"""How every component reaches the broker: the MQTT URL and a configured paho client.

>>> parse_mqtt_url("mqtt://gw:secret@broker.local:1884")  # doctest: +ELLIPSIS
MqttTarget(host='broker.local', port=1884, username='gw', password='secret', tls=False, ...)
>>> parse_mqtt_url("mqtts://broker.local").port
8883
>>> parse_mqtt_url("http://x")
Traceback (most recent call last):
...
ValueError: MQTT URL must start with mqtt:// or mqtts://, got 'http://x'
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

__all__ = ["DEFAULT_MQTT_URL", "MqttTarget", "TlsError", "check_tls", "make_client",
           "parse_mqtt_url", "tls_context"]

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None  # None: the system's trusted CAs
    cert_file: str | None = None  # a client certificate (its key too, unless key_file)
    key_file: str | None = None


class TlsError(ConnectionError):
    """The TLS handshake with the broker failed: a certificate, or not a TLS listener."""


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
    clean_session: bool = True,
) -> mqtt.Client:
    """A paho client (MQTT 3.1.1, callback API v2) set up for ``target``; not yet connected.

    ``will`` is a ``(topic, payload)`` Last Will, published retained with QoS 1. With
    ``clean_session=False`` the broker keeps the client's session (its subscriptions, and
    QoS 1 messages for it while it is away) under ``client_id``.
    """
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
        clean_session=clean_session,
    )
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set_context(tls_context(target))
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def tls_context(target: MqttTarget) -> ssl.SSLContext:
    """The TLS settings for ``target``: verify the broker (host name included) against
    ``ca_file`` alone, or the system's CAs; present ``cert_file`` if given.

    ``OSError`` if a file cannot be read, ``ssl.SSLError`` if it holds no certificate or key.
    """
    context = ssl.create_default_context(cafile=target.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if target.cert_file:
        context.load_cert_chain(target.cert_file, target.key_file)
    return context


# After the handshake, how long to wait for a broker to refuse the client's certificate: in
# TLS 1.3 the server's verdict on it arrives after the client has finished its handshake.
_VERDICT_S = 0.5


def check_tls(target: MqttTarget, timeout_s: float = 10.0) -> None:
    """Shake hands with ``target``'s TLS listener; raise :class:`TlsError` in one line if
    the broker's certificate is not trusted, the broker refuses this client's, or the port
    does not speak TLS. A broker that cannot be reached is not a TLS problem: return, and
    let the client's own connection report it.

    No MQTT CONNECT is sent: where client ids are bound to logins, it would replace the
    session of the very component that is about to connect.

    >>> check_tls(MqttTarget("127.0.0.1", 1, tls=True), timeout_s=1.0) is None  # nobody there
    True
    """
    where = f"{target.host}:{target.port}"
    context = tls_context(target)
    deadline = time.monotonic() + timeout_s
    try:
        raw = socket.create_connection((target.host, target.port), timeout=timeout_s)
    except OSError:
        return
    try:
        raw.settimeout(max(deadline - time.monotonic(), 0.01))
        with context.wrap_socket(raw, server_hostname=target.host,
                                 do_handshake_on_connect=False) as sock:
            _handshake(sock, where)
            sock.settimeout(min(_VERDICT_S, max(deadline - time.monotonic(), 0.01)))
            try:
                sock.recv(1)
            except TimeoutError:
                pass
            except ssl.SSLError as exc:
                raise TlsError(f"TLS: the broker at {where} refused this client's certificate "
                               f"({_reason(exc)}); check --cert-file and --key-file") from None
    finally:
        raw.close()


def _handshake(sock: ssl.SSLSocket, where: str) -> None:
    try:
        sock.do_handshake()
    except ssl.SSLCertVerificationError as exc:
        raise TlsError(f"TLS: the certificate of the broker at {where} is not trusted "
                       f"({exc.verify_message}); give the CA that signed it with --ca-file, "
                       "and reach the broker by a name its certificate lists") from None
    except (ssl.SSLError, ConnectionError) as exc:
        raise TlsError(f"TLS: the handshake with {where} failed ({_reason(exc)}): is it a TLS "
                       "listener, and does it accept this client?") from None
    except TimeoutError:
        raise TlsError(f"TLS: no handshake with {where} in time: is it a TLS "
                       "listener?") from None


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return exc.strerror or type(exc).__name__
