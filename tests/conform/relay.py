"""A small MTA for testing ``mxsandbox conform --smtp``: it takes mail over SMTP and delivers
each message with our own sender (``mxsandbox send --queue --dsn``, in process), so that
bounces go back to the envelope sender through its MX, as a real MTA's do.

It listens on 127.0.0.1 at a port the OS picks (or the one given), on the running loop
(aiosmtpd's protocol on ``loop.create_server``, never its threaded controller). In process it
learns where DNS and the mail hosts are from the conformance run's ``on_ready``; run as a
program inside a network namespace it is told, the way an MTA there knows them from
resolv.conf and port 25::

    python -m tests.conform.relay --listen 127.0.0.1:2525 --dns 127.0.0.1:53 --smtp-port 25

It prints ``ready HOST:PORT`` once it listens, and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from sandbox.core.policy import PROFILES
from sandbox.sender.oneshot import (
    DNS_TIMEOUT,
    TIMEOUT_FLOOR,
    SendRequest,
    scaled_profile,
    send_message,
)

__all__ = ["Relay"]


class Relay:
    """An SMTP server that relays every message it accepts with our sender."""

    def __init__(
        self,
        *,
        profile: str = "postfix",
        time_scale: float = 100.0,
        self_address: str | None = None,
    ) -> None:
        base = PROFILES[profile].with_overrides({"address": self_address})
        self.profile = scaled_profile(base, time_scale, timeout_floor=TIMEOUT_FLOOR)
        self.time_scale = time_scale
        self.dns: tuple[str, int] | None = None
        self.smtp_port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def ready(self, dns: tuple[str, int], smtp_port: int) -> None:
        """``Options.on_ready``: where the conformance run serves DNS and the mail hosts."""
        self.dns, self.smtp_port = dns, smtp_port

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self, listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(_Handler(self), hostname="relay.test", enable_SMTPUTF8=True), *listen
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def relay(self, sender: str, recipients: tuple[str, ...], data: bytes) -> None:
        assert self.dns is not None, "the conformance run has not said where DNS is"
        request = SendRequest(
            dns=self.dns,
            smtp_port=self.smtp_port,
            sender=sender,
            recipients=recipients,
            data=data,
            profile=self.profile,
            queue=True,
            dsn=True,
            dns_timeout=DNS_TIMEOUT / self.time_scale,
        )
        task = asyncio.get_running_loop().create_task(send_message(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.accepted += 1


class _Handler:
    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        self._relay.relay(
            str(envelope.mail_from or ""), tuple(str(r) for r in envelope.rcpt_tos), data
        )
        return "250 2.0.0 Ok: queued"


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _serve(args: argparse.Namespace) -> None:
    relay = Relay(time_scale=args.time_scale, self_address=args.self_address)
    relay.ready(args.dns, args.smtp_port)
    await relay.start(args.listen)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    host, port = relay.address
    print(f"ready {host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await relay.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conform.relay")
    parser.add_argument("--listen", type=_host_port, default=("127.0.0.1", 0))
    parser.add_argument("--dns", type=_host_port, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--time-scale", type=float, default=100.0)
    parser.add_argument("--self", dest="self_address")
    asyncio.run(_serve(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
