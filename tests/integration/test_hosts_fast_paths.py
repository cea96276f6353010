"""The mail hosts' shortcuts through aiosmtpd's per-session costs change nothing on the wire.

A host lists only its ``smtp_*`` and ``auth_*`` names to aiosmtpd, and keeps the addresses it
has parsed (see ``PatchedSMTP`` in ``sandbox/hosts/aiosmtpd_patches.py``). The reference is a
bare aiosmtpd server on the same loop: every command it knows, and every verdict on a MAIL or
RCPT argument, must be the same at our host, the first time and every time after.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiosmtpd.smtp import SMTP

from sandbox.hosts.host import MailHost
from sandbox.scenario.model import Behaviour, Timeline

pytestmark = pytest.mark.looptime

# Well-formed, empty, with parameters, and broken in several ways.
ARGUMENTS = [
    "MAIL FROM:<bob@example.net>",
    "MAIL FROM:<>",
    "MAIL FROM:<bob@example.net> SIZE=100",
    "MAIL FROM:bob@example.net",
    "MAIL FROM:<bob@@example.net>",
    "MAIL FROM:<unclosed@example.net",
    "MAIL FROM:<bob@example.net> NOSUCHPARAM=1",
    "MAIL FROM:",
]
RECIPIENTS = [
    "RCPT TO:<alice@example.test>",
    "RCPT TO:alice@example.test",
    "RCPT TO:<alice@@example.test>",
    'RCPT TO:<"quoted local"@example.test>',
    "RCPT TO:",
]


class Accept:
    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: object
    ) -> str:
        return "250 OK"


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[tuple[tuple[str, int], tuple[str, int]]]:
    """(our host, a bare aiosmtpd server), both on 127.0.0.1 port 0."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    host = MailHost(
        "mx1.example.test",
        "192.0.2.10",
        Timeline.constant(Behaviour()),
        clock=lambda: loop.time() - start,
    )
    await host.start()
    bare = await loop.create_server(lambda: SMTP(Accept(), hostname="bare"), "127.0.0.1", 0)
    try:
        yield host.listen, bare.sockets[0].getsockname()[:2]
    finally:
        bare.close()
        await bare.wait_closed()
        await host.close()


async def conversation(address: tuple[str, int], lines: list[str]) -> list[str]:
    """The reply to each line, the session restarted (RSET) before each MAIL."""
    reader, writer = await asyncio.open_connection(*address)

    async def reply() -> str:
        text = []
        while True:
            line = (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\r\n")
            text.append(line)
            if line[3:4] != "-":
                return "\n".join(text)

    try:
        await reply()  # the greeting
        writer.write(b"EHLO client.example.net\r\n")
        await reply()
        answers = []
        for line in lines:
            if line.startswith("MAIL"):
                writer.write(b"RSET\r\n")
                await reply()
            writer.write(line.encode() + b"\r\n")
            answers.append(await reply())
        writer.write(b"QUIT\r\n")
        await reply()
        return answers
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def codes(replies: list[str]) -> list[str]:
    return [r[:3] for r in replies]


async def test_help_lists_every_command_aiosmtpd_knows() -> None:
    lines = ["HELP", "HELP MAIL", "HELP RCPT", "HELP EHLO", "HELP DATA"]
    async with listening() as (ours, bare):
        ours_help = await conversation(ours, lines)
        bare_help = await conversation(bare, lines)
    assert ours_help == bare_help
    assert ours_help[0].split(": ")[1].split() == [
        "AUTH",
        "DATA",
        "EHLO",
        "HELO",
        "HELP",
        "MAIL",
        "NOOP",
        "QUIT",
        "RCPT",
        "RSET",
        "VRFY",
    ]


async def test_mail_and_rcpt_arguments_get_aiosmtpds_verdict_every_time() -> None:
    rounds = 2
    mails = [line for line in ARGUMENTS for _ in range(rounds)]
    rcpts = ["MAIL FROM:<bob@example.net>"] + [line for line in RECIPIENTS for _ in range(rounds)]
    async with listening() as (ours, bare):
        # Two sessions to our host: the second finds every argument already parsed.
        ours_mail = [await conversation(ours, mails) for _ in range(2)]
        bare_mail = await conversation(bare, mails)
        ours_rcpt = [await conversation(ours, rcpts) for _ in range(2)]
        bare_rcpt = await conversation(bare, rcpts)
    for replies in ours_mail:
        assert codes(replies) == codes(bare_mail)
        # Errors come from aiosmtpd itself: the same text too.
        assert [r for r in replies if r[0] == "5"] == [r for r in bare_mail if r[0] == "5"]
    for replies in ours_rcpt:
        assert codes(replies) == codes(bare_rcpt)
        assert [r for r in replies if r[0] == "5"] == [r for r in bare_rcpt if r[0] == "5"]
    assert "250" in codes(bare_mail) and "553" in codes(bare_mail)
