"""DANE for SMTP (RFC 7672, RFC 7671, RFC 6698): TLSA records and a server's certificate chain.

A TLSA record at ``_25._tcp.<mx host>`` says which certificate the host may present:

==========  =========================================================================
field       values
==========  =========================================================================
usage       2 DANE-TA: a trust anchor in the chain (a CA); 3 DANE-EE: the host's own.
            0 and 1 (PKIX-TA, PKIX-EE) are unusable in SMTP (RFC 7672 §3.1.3)
selector    0: the whole certificate (DER); 1: its SubjectPublicKeyInfo (DER)
matching    0: the bytes themselves; 1: their SHA-256; 2: their SHA-512
==========  =========================================================================

A record with an unknown usage, selector or matching type, or a digest of the wrong length,
is unusable (RFC 7672 §2.2, Postfix "TLSA records unusable"). Unusable records count as none
when matching, but their presence still tells a sender that the host means to offer TLS:
``core.tls.plan_host`` makes that "encrypt".

:func:`check` decides a chain against the usable records (RFC 7672 §3.1):

- DANE-EE (3): the server's own certificate (or key) matches. Nothing else is checked: no
  names, no dates (§3.1.1), so an expired or self-signed certificate with the published key
  authenticates the host.
- DANE-TA (2): a certificate of the chain above the server's matches (or, for ``2 1 0``, the
  record holds the anchor's key itself), the path from the server's certificate up to it is
  signed link by link, every certificate below the anchor is within its dates, and the
  server's certificate names one of the reference identifiers (§3.2.2: the MX host name and
  the TLSA base domain; Postfix adds the next-hop domain).
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox.core.tls import DaneState, DaneVerdict
from sandbox.tls.verify import names_host, signed_by, valid_at

__all__ = [
    "DaneCheck",
    "Tlsa",
    "association",
    "association_of_key",
    "check",
    "lookup_state",
    "record_for",
]

USAGES = {2: "DANE-TA", 3: "DANE-EE"}
SELECTORS = {0: "Cert", 1: "SPKI"}
MATCHING = {0: "Full", 1: "SHA2-256", 2: "SHA2-512"}
_DIGEST_SIZES = {1: 32, 2: 64}
_TEXT = re.compile(r"\s*(\d{1,3})\s+(\d{1,3})\s+(\d{1,3})\s+([0-9A-Fa-f\s]+?)\s*")


@dataclass(frozen=True, slots=True)
class Tlsa:
    """One TLSA record's data."""

    usage: int
    selector: int
    matching: int
    data: bytes

    @classmethod
    def parse(cls, text: str) -> Tlsa:
        """``3 1 1 0123…`` as a zone file writes it (white space in the hex is allowed)."""
        found = _TEXT.fullmatch(text)
        if found is None:
            raise ValueError(
                f"'{text}' is not TLSA data: write usage, selector, matching type and hex, "
                "like '3 1 1 2b7e…'"
            )
        usage, selector, matching = (int(v) for v in found.groups()[:3])
        digits = re.sub(r"\s", "", found.group(4))
        if max(usage, selector, matching) > 255 or len(digits) % 2:
            raise ValueError(f"'{text}' is not TLSA data: fields are 0-255, hex is whole bytes")
        return cls(usage, selector, matching, bytes.fromhex(digits))

    @property
    def usable(self) -> bool:
        """RFC 7672 §3.1: DANE-TA or DANE-EE, a known selector and matching type, a digest of
        the right length."""
        if self.usage not in USAGES or self.selector not in SELECTORS:
            return False
        if self.matching not in MATCHING or not self.data:
            return False
        size = _DIGEST_SIZES.get(self.matching)
        return size is None or len(self.data) == size

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.matching} {self.data.hex().upper()}"


@dataclass(frozen=True, slots=True)
class DaneCheck:
    """The verdict, in words, and the record that matched (None on a mismatch)."""

    verdict: DaneVerdict
    detail: str
    matched: Tlsa | None = None


def association(certificate_der: bytes, selector: int, matching: int) -> bytes:
    """The data a TLSA record with ``selector`` and ``matching`` holds for this certificate."""
    certificate = x509.load_der_x509_certificate(certificate_der)
    if selector == 0:
        selected = certificate_der
    elif selector == 1:
        selected = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        raise ValueError(f"unknown TLSA selector {selector}")
    return _matched(selected, matching)


def association_of_key(key: ec.EllipticCurvePrivateKey, selector: int, matching: int) -> bytes:
    """The data a TLSA record holds for a host whose key is ``key``, for selector 1 (the
    key); b"" for selector 0, whose certificate depends on the run (its CA, its serial)."""
    if selector != 1:
        return b""
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _matched(spki, matching)


def _matched(selected: bytes, matching: int) -> bytes:
    if matching == 0:
        return selected
    if matching == 1:
        return hashlib.sha256(selected).digest()
    if matching == 2:
        return hashlib.sha512(selected).digest()
    raise ValueError(f"unknown TLSA matching type {matching}")


def record_for(
    certificate_der: bytes, usage: int = 3, selector: int = 1, matching: int = 1
) -> Tlsa:
    """The TLSA record that pins this certificate (``3 1 1``: DANE-EE, SHA-256 of the key)."""
    return Tlsa(usage, selector, matching, association(certificate_der, selector, matching))


def lookup_state(records: Sequence[Tlsa], *, secure: bool, failed: bool = False) -> DaneState:
    """What a TLSA look-up means for DANE (RFC 7672 §2.2): ``secure`` when the answer (or the
    denial) was DNSSEC-validated (the AD bit), ``failed`` when there was no usable answer at
    all (SERVFAIL, a timeout)."""
    if failed:
        return "error"
    if not secure:
        return "insecure"
    if not records:
        return "none"
    return "usable" if any(r.usable for r in records) else "unusable"


def check(
    chain: Sequence[bytes],
    records: Sequence[Tlsa],
    names: Sequence[str],
    at: datetime.datetime,
) -> DaneCheck:
    """The DANE verdict on ``chain`` (DER, the server's certificate first) against
    ``records``; ``names`` are the reference identifiers for DANE-TA."""
    usable = [r for r in records if r.usable]
    if not chain:
        return DaneCheck("mismatch", "the server sent no certificate")
    for record in usable:
        if record.usage == 3 and association(chain[0], record.selector, record.matching) == (
            record.data
        ):
            return DaneCheck("match", f"DANE-EE: the server's certificate matches {record}", record)
    failures: list[str] = []
    for record in usable:
        if record.usage == 2:
            verdict = _trust_anchor(chain, record, names, at)
            if verdict.verdict == "match":
                return verdict
            if verdict.detail:
                failures.append(verdict.detail)
    if failures:
        return DaneCheck("mismatch", failures[0])
    if not usable:
        return DaneCheck("mismatch", "no usable TLSA record")
    ours = record_for(chain[0])
    return DaneCheck(
        "mismatch",
        f"no TLSA record matches the chain (its key is {ours.usage} 1 1 …"
        f"{ours.data.hex().upper()[-8:]})",
    )


def _trust_anchor(
    chain: Sequence[bytes], record: Tlsa, names: Sequence[str], at: datetime.datetime
) -> DaneCheck:
    """DANE-TA: find the anchor, then check the path below it, its dates and the names."""
    certificates = [x509.load_der_x509_certificate(der) for der in chain]
    depth = next(
        (
            i
            for i in range(1, len(chain))
            if association(chain[i], record.selector, record.matching) == record.data
        ),
        None,
    )
    anchor_key: object
    if depth is not None:
        anchor_key = certificates[depth].public_key()
        below = certificates[:depth]
    elif record.selector == 1 and record.matching == 0:
        # "2 1 0": the record holds the anchor's key; the anchor need not be sent.
        try:
            anchor_key = serialization.load_der_public_key(record.data)
        except ValueError:
            return DaneCheck("mismatch", f"{record}: the record's key cannot be read")
        below = certificates
        while len(below) > 1 and not signed_by(below[-1], anchor_key):
            below = below[:-1]
    else:
        return DaneCheck("mismatch", "")
    for lower, upper in itertools.pairwise(below):
        if not signed_by(lower, upper.public_key()):
            return DaneCheck("mismatch", f"DANE-TA {record}: the chain below it is broken")
    if not signed_by(below[-1], anchor_key):
        return DaneCheck("mismatch", f"DANE-TA {record}: the anchor did not sign the chain")
    for certificate in below:
        if not valid_at(certificate, at):
            return DaneCheck("mismatch", f"DANE-TA {record}: a certificate has expired")
    if not names_host(certificates[0], *names):
        wanted = ", ".join(names)
        return DaneCheck("mismatch", f"DANE-TA {record}: the certificate names none of {wanted}")
    return DaneCheck("match", f"DANE-TA: the chain is anchored by {record}", record)
