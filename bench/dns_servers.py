"""A DNS server in its own process, for the DNS benchmark: ``python -m bench.dns_servers
ours|ours-unpacked|dnslib``. It prints its UDP port on one line, then serves until its stdin
closes.

- ``ours``: the sandbox's ``DnsServer`` on a plain asyncio loop, recording its ``DnsServed``
  events as a sandbox does;
- ``ours-unpacked``: the same, with the reuse of packed replies turned off, so that every
  query goes through dnslib's codec (to show what that reuse is worth);
- ``dnslib``: dnslib's own threaded ``DNSServer`` (socketserver, a thread per query), silent,
  answering from the same ``Authority``, so that both send the same bytes.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from dnslib.server import BaseResolver, DNSLogger, DNSServer

from sandbox import Event
from sandbox.dns.server import Authority, DnsServer
from sandbox.dns.zone import parse_zone

__all__ = ["APEX", "ZONE", "authority", "main"]

APEX = "example.test"
ZONE = """$TTL 3600
@    IN MX 10 mx1
@    IN MX 20 mx2
mx1  IN A    192.0.2.10
mx1  IN AAAA 2001:db8::10
mx2  IN A    192.0.2.11
www  IN CNAME mx1
"""


def authority() -> Authority:
    return Authority([parse_zone(APEX, ZONE)])


class _SameAnswers(BaseResolver):  # type: ignore[misc]
    def __init__(self, answers: Authority) -> None:
        self._answers = answers

    def resolve(self, request: Any, handler: Any) -> Any:
        return self._answers.resolve(request)


class _Unpacked(DnsServer):
    def _remember(self, key: Any, reply: Any) -> None:
        return None


async def _ours(server_class: type[DnsServer]) -> None:
    events: list[Event] = []
    server = server_class(authority(), emit=events.append)
    await server.start("127.0.0.1", 0)
    print(server.address[1], flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await server.close()


def _dnslib() -> None:
    quiet = DNSLogger("-request,-reply,-truncated,-error", prefix=False)
    server = DNSServer(_SameAnswers(authority()), address="127.0.0.1", port=0, logger=quiet)
    server.start_thread()
    print(server.server.server_address[1], flush=True)
    sys.stdin.read()
    server.stop()
    server.server.server_close()


def main(argv: list[str]) -> int:
    if argv == ["ours"]:
        asyncio.run(_ours(DnsServer))
    elif argv == ["ours-unpacked"]:
        asyncio.run(_ours(_Unpacked))
    elif argv == ["dnslib"]:
        _dnslib()
    else:
        print("usage: python -m bench.dns_servers ours|ours-unpacked|dnslib", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
