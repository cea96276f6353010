"""The sandbox's network: which real loopback socket stands for each zone address.

MX records carry no port, so a mail host is an address. DNS answers with the zone's own
addresses (192.0.2.10, 2001:db8::25: what ``dig`` shows matches the zone text); this map
tells the sender which loopback (host, port) plays each of them. The sender connects only
through it, and every server binds only after ``ensure_loopback``: nothing leaves loopback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Literal

from sandbox.errors import NotInSandbox, NotLoopback

__all__ = ["AddressMap", "Service", "canonical", "ensure_loopback", "is_loopback"]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ensure_loopback(host: str) -> None:
    """Refuse to bind or connect anywhere but 127.0.0.0/8 or ::1."""
    if not is_loopback(host):
        raise NotLoopback(
            f"{host!r} is not a loopback address; the sandbox binds and connects only on "
            "127.0.0.0/8 or ::1"
        )


def canonical(address: str) -> str:
    """One spelling per address, so that 2001:DB8::0:25 and 2001:db8::25 are the same key."""
    return str(ipaddress.ip_address(address))


# What a socket serves at a zone address: SMTP (the mail hosts), or HTTPS (the MTA-STS
# policy server at the address of ``mta-sts.<domain>``).
Service = Literal["smtp", "https"]


class AddressMap:
    """zone address (and service) → the loopback (host, port) of the socket that plays it.

    The sender tells the map of every connection attempt it made (:meth:`attempted`), so that
    a host that refuses or times out, which sees no session, can still count the attempts
    (phases that end after ``times`` of them)."""

    def __init__(self) -> None:
        self._sockets: dict[tuple[str, Service], tuple[str, int]] = {}
        self._observers: dict[str, Callable[[], None]] = {}

    def add(
        self,
        zone_address: str,
        listen: tuple[str, int],
        on_attempt: Callable[[], None] | None = None,
        *,
        service: Service = "smtp",
    ) -> None:
        """``zone_address`` is played at ``listen`` for ``service``; ``on_attempt`` hears of
        every SMTP connection attempt to it, once its outcome is known."""
        ensure_loopback(listen[0])
        key = canonical(zone_address)
        self._sockets[(key, service)] = listen
        if on_attempt is not None:
            self._observers[key] = on_attempt

    def attempted(self, zone_address: str) -> None:
        """The sender's connect to ``zone_address`` has ended (connected, refused or timed
        out)."""
        try:
            observer = self._observers.get(canonical(zone_address))
        except ValueError:
            return
        if observer is not None:
            observer()

    def socket_for(self, zone_address: str, service: Service = "smtp") -> tuple[str, int]:
        try:
            return self._sockets[(canonical(zone_address), service)]
        except (KeyError, ValueError):
            what = "host" if service == "smtp" else f"{service} server"
            raise NotInSandbox(f"no sandbox {what} plays {zone_address}") from None

    def __contains__(self, zone_address: object) -> bool:
        try:
            return (canonical(str(zone_address)), "smtp") in self._sockets
        except ValueError:
            return False
