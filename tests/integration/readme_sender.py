"""``my_sender`` of the README's first plugin example: the smallest sender a user might write.

It asks the DNS server it is given for the MX records (dnslib builds and reads the packets),
walks them in preference order, asks each host's address, and delivers with aiosmtplib to
the first host that takes the message. It needs nothing beyond what ``mxsandbox`` itself
installs, so that the README's example runs in a fresh environment with only
``pip install 'mxsandbox[pytest]'``.

The tests copy this file as ``my_sender.py`` next to the README's example; with
``SKIP_PRIMARY = True`` it is the broken sender the example must catch: it ignores the best
MX and goes straight to the next one.
"""

from __future__ import annotations

import asyncio
import socket
from email.message import EmailMessage

import aiosmtplib
import dnslib

SKIP_PRIMARY = False


async def deliver(recipient: str, *, dns: tuple[str, int], smtp_port: int) -> str:
    """Deliver a "Hello" message to ``recipient``; return the host that took it."""
    domain = recipient.rpartition("@")[2]
    records = await _ask(dns, domain, "MX")
    hosts = [
        str(r.rdata.label).rstrip(".") for r in sorted(records, key=lambda r: r.rdata.preference)
    ]
    if SKIP_PRIMARY:
        hosts = hosts[1:]
    for host in hosts:
        for record in await _ask(dns, host, "A"):
            if await _send(str(record.rdata), smtp_port, recipient):
                return host
    raise RuntimeError(f"no MX host of {domain} took the message")


async def _ask(dns: tuple[str, int], name: str, rdtype: str) -> list[dnslib.RR]:
    query = dnslib.DNSRecord.question(name, rdtype)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_sendto(sock, query.pack(), dns)
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
    return [
        rr for rr in dnslib.DNSRecord.parse(data).rr if rr.rtype == dnslib.QTYPE.reverse[rdtype]
    ]


async def _send(address: str, port: int, recipient: str) -> bool:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bob@example.net", recipient, "Hello"
    message.set_content("Hi Alice.\n")
    try:
        await aiosmtplib.send(message, hostname=address, port=port, start_tls=False, timeout=5)
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True
