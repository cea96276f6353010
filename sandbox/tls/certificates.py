"""The world's certificate authority, and each mail host's certificate for each ``tls:`` value.

Theory of operation
===================

Every run and every serve makes its own certificate authority with trustme, so nothing it
signs is trusted anywhere else. The CA's certificate and every host certificate are written to
one temporary directory (Python's ``ssl`` loads certificates from files), and :meth:`close`
removes it; ``serve`` prints :attr:`CertificateAuthority.ca_file` so that a real MTA (Postfix's
``smtp_tls_CAfile``) can trust the sandbox, and only the sandbox.

A host's certificate, per ``tls:`` value (``core.tls.HostTls``):

=================  ========================================================================
``tls:``           the certificate the host presents after STARTTLS
=================  ========================================================================
valid              signed by the CA, names the host, valid from 2000 to 3000
expired            signed by the CA, names the host, valid only in 2020
self-signed        signed by its own key, names the host
wrong-name         signed by the CA, valid, but names ``wrong-name.invalid`` only
handshake-failure  the valid certificate: the host breaks the handshake (``hosts.starttls``)
none               none: the host does not offer STARTTLS
=================  ========================================================================

The chain a host sends is its certificate followed by the CA's (RFC 7672 §3.1.2: a DANE-TA
trust anchor is in the chain the server sends); a self-signed certificate goes alone.

Stable keys
-----------
A host's key is derived from its name (an EC P-256 key whose secret is a SHA-512 of the name),
so it is the same in every run and every variant. That is what lets a scenario's zone text
carry a TLSA record that matches: ``3 1 1`` (DANE-EE, the key's SHA-256) for a host is a
constant that ``tlsa_record`` prints. The price is that these keys are public knowledge: the
certificates are for the sandbox only, which is also why the CA is thrown away after each
run and must never join a system trust store. trustme's ``issue_cert`` always makes a fresh
key, so the host certificates are issued here, with the trustme CA's own key.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sandbox.core.tls import HostTls

__all__ = [
    "EXPIRED_UNTIL",
    "VALID_UNTIL",
    "WRONG_NAME",
    "CertVariant",
    "CertificateAuthority",
    "ServerCertificate",
    "certificate_variant",
    "host_key",
]

CertVariant = Literal["valid", "expired", "self-signed", "wrong-name"]

UTC = datetime.UTC
VALID_FROM = datetime.datetime(2000, 1, 1, tzinfo=UTC)
VALID_UNTIL = datetime.datetime(3000, 1, 1, tzinfo=UTC)  # trustme's own horizon
EXPIRED_FROM = datetime.datetime(2020, 1, 1, tzinfo=UTC)
EXPIRED_UNTIL = datetime.datetime(2021, 1, 1, tzinfo=UTC)
WRONG_NAME = "wrong-name.invalid"  # RFC 2606: a name that is nobody's

_KEY_LABEL = b"mxsandbox host key v1\x00"
# The order of the P-256 group: a private value is an integer in [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def certificate_variant(tls: HostTls) -> CertVariant | None:
    """The certificate a host with this ``tls:`` presents; None when it offers no TLS."""
    if tls == "none":
        return None
    if tls == "handshake-failure":
        return "valid"  # it never gets as far as presenting it
    return tls


@functools.lru_cache(maxsize=256)
def host_key(name: str) -> ec.EllipticCurvePrivateKey:
    """The stable key of host ``name`` (see "Stable keys" above)."""
    canonical = name.lower().rstrip(".").encode()
    digest = hashlib.sha512(_KEY_LABEL + canonical).digest()
    secret = int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(secret, ec.SECP256R1())


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """One host's certificate in one variant: the files a server context loads, and the DER
    bytes of what it sends (``chain[0]`` is the host's own certificate)."""

    host: str
    variant: CertVariant
    chain_file: Path
    key_file: Path
    chain: tuple[bytes, ...]

    @property
    def der(self) -> bytes:
        return self.chain[0]


class CertificateAuthority:
    """A throwaway CA and the certificates of the hosts of one world.

    Certificates and server contexts are made on first use and kept; everything lives in
    one temporary directory until :meth:`close`."""

    def __init__(self, *, label: str = "MX Sandbox") -> None:
        self._ca = trustme.CA(
            organization_name=label, organization_unit_name=f"{label} CA, this run only"
        )
        self._ca_key = serialization.load_pem_private_key(self._ca.private_key_pem.bytes(), None)
        self._ca_cert = x509.load_pem_x509_certificate(self._ca.cert_pem.bytes())
        self._directory = Path(tempfile.mkdtemp(prefix="mxsandbox-tls-"))
        self.ca_file = self._directory / "ca.pem"
        self.ca_file.write_bytes(self._ca.cert_pem.bytes())
        self._certificates: dict[tuple[str, CertVariant], ServerCertificate] = {}
        self._contexts: dict[tuple[str, CertVariant], ssl.SSLContext] = {}
        self._client_context: ssl.SSLContext | None = None
        self._closed = False

    # -- what the world hands out -----------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def ca_der(self) -> bytes:
        return self._ca_cert.public_bytes(serialization.Encoding.DER)

    def server_certificate(self, host: str, variant: CertVariant) -> ServerCertificate:
        """The certificate of ``host`` in ``variant``, issued on first use."""
        host = host.lower().rstrip(".")
        key = (host, variant)
        found = self._certificates.get(key)
        if found is None:
            found = self._issue(host, variant, index=len(self._certificates))
            self._certificates[key] = found
        return found

    def server_context(self, host: str, tls: HostTls) -> ssl.SSLContext | None:
        """The server side of STARTTLS for ``host`` with ``tls:`` (None: no STARTTLS)."""
        variant = certificate_variant(tls)
        if variant is None:
            return None
        key = (host.lower().rstrip("."), variant)
        context = self._contexts.get(key)
        if context is None:
            certificate = self.server_certificate(host, variant)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate.chain_file, certificate.key_file)
            self._contexts[key] = context
        return context

    def client_context(self) -> ssl.SSLContext:
        """The sender's side of STARTTLS. It accepts any certificate, as an MTA at ``may``
        does: the sender judges the certificate afterwards (``tls.verify``), so that an
        untrusted one can still carry the mail when the policy allows it.

        One context serves every session (it holds no per-connection state): making one
        cost about as much as the rest of the sender's STARTTLS work."""
        if self._client_context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self._client_context = context
        return self._client_context

    def trusting_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA alone and checks host names (HTTPS, where
        RFC 8461 §3.3 requires a valid certificate)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=self._ca.cert_pem.bytes().decode())
        return context

    def close(self) -> None:
        """Remove every file; the contexts already made stay usable (they have read them)."""
        if not self._closed:
            self._closed = True
            shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> CertificateAuthority:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- issuing ------------------------------------------------------------------------------

    def _issue(self, host: str, variant: CertVariant, *, index: int) -> ServerCertificate:
        if self._closed:
            raise RuntimeError("the certificate authority is closed")
        key = host_key(host)
        if variant == "self-signed":
            certificate = _self_signed(host, key)
            chain: tuple[x509.Certificate, ...] = (certificate,)
        else:
            name = WRONG_NAME if variant == "wrong-name" else host
            start, end = (
                (EXPIRED_FROM, EXPIRED_UNTIL) if variant == "expired" else (VALID_FROM, VALID_UNTIL)
            )
            certificate = self._signed(name, key, start, end)
            chain = (certificate, self._ca_cert)
        stem = self._directory / f"host{index}-{variant}"
        chain_file = stem.with_suffix(".pem")
        key_file = stem.with_suffix(".key")
        chain_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        _write_private(key_file, _private_pem(key))
        return ServerCertificate(
            host,
            variant,
            chain_file,
            key_file,
            tuple(c.public_bytes(serialization.Encoding.DER) for c in chain),
        )

    def _signed(
        self,
        name: str,
        key: ec.EllipticCurvePrivateKey,
        start: datetime.datetime,
        end: datetime.datetime,
    ) -> x509.Certificate:
        ca_key = self._ca_key
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ski = self._ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = _leaf_builder(name, key, start, end).issuer_name(self._ca_cert.subject)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
            critical=False,
        )
        return builder.sign(ca_key, hashes.SHA256())


def _leaf_builder(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    start: datetime.datetime,
    end: datetime.datetime,
) -> x509.CertificateBuilder:
    """A server certificate for ``name``, the extensions a strict verifier asks for."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _self_signed(host: str, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    builder = _leaf_builder(host, key, VALID_FROM, VALID_UNTIL)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    return builder.issuer_name(subject).sign(key, hashes.SHA256())


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with contextlib.closing(os.fdopen(descriptor, "wb")) as file:
        file.write(data)
