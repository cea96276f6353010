"""Serve mode's address plan: which loopback address plays each zone address, and what DNS
answers for it. Pure functions of the zone addresses; ``sandbox.serve.world`` binds the plan.

MX records carry no port, so an external sender connects to port 25 (or the one SMTP port it
is told about) at whatever address DNS gives. Each mail host address therefore listens on a
loopback address of its own, all at one port. Zone addresses outside 127.0.0.0/8 are assigned
loopback addresses counted up from a first address; a zone address that already is loopback
keeps its own. An IPv6 zone address is played by an IPv4 loopback address (Linux has only
one IPv6 loopback address, ::1), and its AAAA record answers with the IPv4-mapped form
``::ffff:127.x.y.z``, which a dual-stack client reaches on that same IPv4 socket.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from sandbox.core.addresses import canonical
from sandbox.errors import NotLoopback

__all__ = [
    "BIND_ATTEMPTS",
    "CLI_FIRST_ADDRESS",
    "DEFAULT_DNS",
    "DEFAULT_SMTP_PORT",
    "Placement",
    "answer_for",
    "extend_plan",
    "loopback_plan",
]

# Not 5353: that is multicast DNS's port, which avahi and other mDNS daemons hold on many
# desktops. 10053 reads as "53" and is no well-known service's.
DEFAULT_DNS = ("127.0.0.1", 10053)
DEFAULT_SMTP_PORT = 2525
# `mxsandbox serve` numbers hosts from here, so that the addresses a person reads in the table
# stay the same from one start to the next. 127.0.0.1 is left to "localhost" and the DNS server.
CLI_FIRST_ADDRESS = "127.0.0.2"
# How many layouts (port, address block) to try when another program holds what we picked.
BIND_ATTEMPTS = 8

_LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")
_MAPPED_PREFIX = "::ffff:"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one address of one mail host is served.

    ``zone_address`` is the address the zone gives; ``address`` and ``port`` are where the
    host listens; ``answer`` is what the DNS server says for it (``address``, or its
    IPv4-mapped IPv6 form for an AAAA record).
    """

    name: str
    zone_address: str
    address: str
    port: int
    answer: str

    @property
    def listen(self) -> tuple[str, int]:
        return (self.address, self.port)


def loopback_plan(zone_addresses: Iterable[str], first: str) -> dict[str, str]:
    """zone address → the loopback address that plays it.

    Loopback zone addresses keep their own; the others get addresses counted up from
    ``first`` (an IPv4 address in 127.0.0.0/8), skipping those already kept, 127.0.0.1, and
    the .0 and .255 of every /24.
    """
    return extend_plan({}, zone_addresses, first)


def extend_plan(
    plan: Mapping[str, str], zone_addresses: Iterable[str], first: str, taken: Iterable[str] = ()
) -> dict[str, str]:
    """``plan`` with the zone addresses it lacks, placed as ``loopback_plan`` places them:
    the new addresses never take one that the plan, a kept loopback address or ``taken``
    already holds (a zone changed while serve runs)."""
    addresses = [a for a in dict.fromkeys(canonical(a) for a in zone_addresses) if a not in plan]
    kept = {a for a in addresses if ipaddress.ip_address(a).is_loopback}
    free = _free_addresses(ipaddress.IPv4Address(first), {*plan.values(), *kept, *taken})
    return {**plan, **{a: a if a in kept else next(free) for a in addresses}}


def _free_addresses(first: ipaddress.IPv4Address, taken: set[str]) -> Iterator[str]:
    if first not in _LOOPBACK_NET:
        raise NotLoopback(f"{first} is not in 127.0.0.0/8; serve mode numbers hosts there")
    candidate = first
    while candidate in _LOOPBACK_NET:
        text = str(candidate)
        last = int(candidate) & 0xFF
        if last not in (0, 255) and text != "127.0.0.1" and text not in taken:
            yield text
        candidate += 1
    raise NotLoopback("more mail host addresses than 127.0.0.0/8 can hold from here")


def answer_for(zone_address: str, listen_address: str) -> str:
    """What DNS answers for a zone address played at ``listen_address``: an A record keeps
    the IPv4 address; an AAAA record gets the IPv4-mapped form unless it stays on ::1."""
    zone_ip = ipaddress.ip_address(zone_address)
    listen_ip = ipaddress.ip_address(listen_address)
    if zone_ip.version == 6 and listen_ip.version == 4:
        return f"{_MAPPED_PREFIX}{listen_address}"
    return listen_address
