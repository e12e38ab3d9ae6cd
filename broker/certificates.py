"""A development certificate authority: the broker's server certificate and client certificates.

Keys are ECDSA P-256: as strong as RSA-3072 for these purposes, and their handshakes cost
the broker and small devices less. Certificates carry what strict verifiers ask for (key
identifiers, key usage, extended key usage, and the host names and addresses as subject
alternative names).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA_DAYS", "LEAF_DAYS", "CertificateAuthority", "Issued"]

CA_DAYS = 3650
# The longest validity that common TLS clients still accept for a leaf certificate.
LEAF_DAYS = 825


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM-encoded."""

    certificate_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedfleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class CertificateAuthority:
    """A self-signed CA that issues the broker's and the clients' certificates.

    Examples
    --------
    >>> ca = CertificateAuthority.create("fedfleet development CA")
    >>> server = ca.issue_server(["broker.example", "127.0.0.1"])
    >>> cert = x509.load_pem_x509_certificate(server.certificate_pem)
    >>> names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    >>> [str(n.value) for n in names]
    ['broker.example', '127.0.0.1']
    >>> client = x509.load_pem_x509_certificate(ca.issue_client("veh-0001").certificate_pem)
    >>> client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    'veh-0001'
    """

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self._key = key

    @classmethod
    def create(cls, common_name: str, days: int = CA_DAYS) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        builder = (
            _builder(_name(common_name), _name(common_name), public, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        return cls(builder.sign(key, hashes.SHA256()), key)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self._key)

    def issue_server(self, hosts: Sequence[str], days: int = LEAF_DAYS) -> Issued:
        """A certificate for a server reached by any of ``hosts`` (names or IP addresses)."""
        if not hosts:
            raise ValueError("a server certificate needs at least one host name or address")
        return self._issue(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, days,
                           x509.SubjectAlternativeName([_alt_name(h) for h in hosts]))

    def issue_client(self, common_name: str, days: int = LEAF_DAYS) -> Issued:
        """A client certificate whose common name is the login (Mosquitto's identity)."""
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, days, None)

    def _issue(self, common_name: str, usage: x509.ObjectIdentifier, days: int,
               alt_names: x509.SubjectAlternativeName | None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        ca_key_id = self.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value
        builder = (
            _builder(_name(common_name), self.certificate.subject, public, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=False, crl_sign=False,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
                critical=False)
        )
        if alt_names is not None:
            builder = builder.add_extension(alt_names, critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        return Issued(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _builder(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public)
            .serial_number(x509.random_serial_number())
            # An hour back, so that a client whose clock runs a little slow accepts it.
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days)))
