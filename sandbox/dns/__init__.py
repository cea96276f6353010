"""DNS for the sandbox: the embedded authoritative server (and, beside it, the sender's resolver).

The server answers from the scenario's zones on real loopback sockets; see ``server`` for
how it decides each answer.
"""

from __future__ import annotations

from sandbox.dns.server import Authority, DnsServer

__all__ = ["Authority", "DnsServer"]
