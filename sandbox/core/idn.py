"""Internationalised names and addresses (RFC 5890, RFC 6531), sans I/O.

A recipient written ``jörg@bücher.test`` is looked up in DNS by its domain's A-label,
``xn--bcher-kva.test``: DNS holds only ASCII. The conversion is IDNA 2008 with UTS #46
mapping, non-transitional (``ß`` stays ``ß``: ``faß.test`` is ``xn--fa-hia.test``), as Postfix
does it (``midna_domain.c``, ICU's ``uidna_openUTS46`` with ``UIDNA_NONTRANSITIONAL_TO_ASCII``)
and browsers do. Python's own ``idna`` codec is IDNA 2003, which maps ``faß.test`` to
``fass.test``, another domain; so this module uses the ``idna`` package.

The mailbox's own part (``jörg``) is never looked up. A host that takes SMTPUTF8 gets it as
it is; one that does not gets what the sender's profile does (``core.esmtp``): Exim writes it
in Punycode with an ``xn--`` prefix (``utf8.c``, ``string_localpart_utf8_to_alabel``).
"""

from __future__ import annotations

import idna

__all__ = ["address_to_ascii", "domain_to_ascii", "is_ascii"]


def is_ascii(text: str) -> bool:
    return text.isascii()


def domain_to_ascii(domain: str) -> str:
    """The A-label form of ``domain`` (lower case, without a final dot); an ASCII domain as
    it is. Raises ValueError for a name IDNA 2008 cannot encode (``☃.test``, an empty label)."""
    name = domain.rstrip(".")
    if name.isascii():
        return name.lower()
    try:
        return idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as error:
        raise ValueError(f"{domain!r} cannot be written in ASCII (IDNA 2008): {error}") from None


def address_to_ascii(address: str, *, local_part: bool) -> str:
    """``jörg@bücher.test`` with its domain as an A-label (``jörg@xn--bcher-kva.test``); with
    ``local_part``, its mailbox in Punycode too (``xn--jrg-sna@xn--bcher-kva.test``), as
    Exim downconverts."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    if local_part and not local.isascii():
        local = "xn--" + local.encode("punycode").decode("ascii")
    return f"{local}@{domain_to_ascii(domain)}"
