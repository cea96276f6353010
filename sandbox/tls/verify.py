"""The sender's verdict on a server certificate (PKIX: RFC 5280 paths, RFC 6125 names).

An MTA at ``may`` or ``encrypt`` completes the handshake whatever the certificate, and only
then decides whether it matters (Postfix logs "Untrusted TLS connection established" and goes
on). So the sender handshakes without verification (``CertificateAuthority.client_context``)
and asks :func:`judge` afterwards. The verdict is the first thing wrong, in the order OpenSSL
finds it:

====================  ==============================================  =====================
verdict               when                                            OpenSSL's words
====================  ==============================================  =====================
self-signed           the certificate is its own issuer, not trusted  self-signed certificate
untrusted             no path to a trusted CA                         unable to get local
                                                                      issuer certificate
expired               a certificate on the path is outside its dates  certificate has expired
wrong-name            no DNS name of the certificate names the host   hostname mismatch
valid                 none of these, and a strict verifier agrees     —
====================  ==============================================  =====================

"A strict verifier" is cryptography's ``x509.verification`` (a Rust port of webpki's rules):
our own checks say *why* a certificate fails, the verifier makes sure that *valid* means
valid. Names follow RFC 6125 §6.4 strictly: DNS names from the subjectAltName (the common name
only when there is none), and a wildcard only as the whole left-most label, matching one label.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import DNSName, verification
from cryptography.x509.oid import NameOID

from sandbox.core.mta_sts import matches_mx
from sandbox.core.tls import CertificateVerdict

__all__ = [
    "CertificateCheck",
    "dns_names",
    "judge",
    "names_host",
    "peer_chain",
    "signed_by",
    "valid_at",
]

_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class CertificateCheck:
    """The verdict on a chain, in OpenSSL's words (``detail``), and what the certificate
    names."""

    verdict: CertificateVerdict
    detail: str
    names: tuple[str, ...]


def judge(
    chain: Sequence[bytes],
    host: str,
    trusted: Sequence[bytes],
    at: datetime.datetime,
) -> CertificateCheck:
    """The verdict on ``chain`` (DER, the server's certificate first) for ``host``, with the
    CA certificates ``trusted`` (DER), at the moment ``at``."""
    if not chain:
        return CertificateCheck("untrusted", "no certificate", ())
    certificates = [x509.load_der_x509_certificate(der) for der in chain]
    anchors = [x509.load_der_x509_certificate(der) for der in trusted]
    leaf = certificates[0]
    names = dns_names(leaf)
    path = _path_to_anchor(certificates, anchors)
    if path is None:
        if leaf.issuer == leaf.subject and signed_by(leaf, leaf.public_key()):
            return CertificateCheck("self-signed", "self-signed certificate", names)
        return CertificateCheck("untrusted", "unable to get local issuer certificate", names)
    for certificate in path:
        if not valid_at(certificate, at):
            too_early = at < certificate.not_valid_before_utc
            words = "certificate is not yet valid" if too_early else "certificate has expired"
            return CertificateCheck("expired", words, names)
    if not names_host(leaf, host):
        shown = ", ".join(names) or "no DNS name"
        return CertificateCheck("wrong-name", f"hostname mismatch: {host} is not {shown}", names)
    refused = _strict_refusal(certificates, anchors, host, at)
    if refused is not None:
        return CertificateCheck("untrusted", refused, names)
    return CertificateCheck("valid", "certificate verified", names)


def dns_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate is for: its subjectAltName, else its common name."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(a.value).lower() for a in common)
    return tuple(name.lower() for name in san.value.get_values_for_type(x509.DNSName))


def names_host(certificate: x509.Certificate, *hosts: str) -> bool:
    """True when one of the certificate's DNS names names one of ``hosts`` (RFC 6125)."""
    return any(matches_mx(name, host) for name in dns_names(certificate) for host in hosts)


def valid_at(certificate: x509.Certificate, at: datetime.datetime) -> bool:
    return certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc


def signed_by(certificate: x509.Certificate, key: object) -> bool:
    """True when ``key`` (a public key) made the certificate's signature."""
    signature, data = certificate.signature, certificate.tbs_certificate_bytes
    hash_algorithm = certificate.signature_hash_algorithm
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and hash_algorithm is not None:
            key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and hash_algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except Exception:  # InvalidSignature, or a padding the key cannot do: not signed by it
        return False
    return True


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    return certificate.issuer == issuer.subject and signed_by(certificate, issuer.public_key())


def _path_to_anchor(
    chain: list[x509.Certificate], anchors: list[x509.Certificate]
) -> list[x509.Certificate] | None:
    """The certificates from the leaf up to (not including) a trusted anchor, or None."""
    path = [chain[0]]
    while len(path) <= _MAX_DEPTH:
        current = path[-1]
        if any(_issued_by(current, anchor) for anchor in anchors):
            return path
        issuer = next((c for c in chain[1:] if c not in path and _issued_by(current, c)), None)
        if issuer is None:
            return None
        path.append(issuer)
    return None


def _strict_refusal(
    chain: list[x509.Certificate],
    anchors: list[x509.Certificate],
    host: str,
    at: datetime.datetime,
) -> str | None:
    """What a strict PKIX verifier holds against a chain our checks passed, or None."""
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(anchors))
            .time(at)
            .build_server_verifier(DNSName(host.rstrip(".")))
        )
        verifier.verify(chain[0], chain[1:])
    except (verification.VerificationError, ValueError) as error:
        return f"certificate verify failed: {error}"
    return None


def peer_chain(ssl_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """The certificates the server sent (DER, its own first), unverified.

    Python 3.13 offers ``get_unverified_chain`` on the SSL object itself; 3.11 and 3.12 keep it
    on the private ``_sslobj`` (an ``_ssl.Certificate`` list). Without either, only the
    server's own certificate is known."""
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        chain = getter() or []
        return tuple(
            c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
            for c in chain
        )
    leaf = ssl_object.getpeercert(binary_form=True)
    return (leaf,) if leaf else ()
