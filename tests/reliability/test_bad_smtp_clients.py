"""Bad clients against a mail host: it answers them, records them, and serves everyone else.

Each test starts one ``MailHost`` on 127.0.0.1 port 0 and plays a client that misbehaves
(garbage, an overlong line, bare LF, everything pipelined, 10 MB of content, 200 connections,
one byte a second) next to a client that behaves. The host must keep serving the good client,
and its transcript must say what the bad one did. The slow client runs on a virtual clock
(looptime), so a ten-minute trickle costs no wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from sandbox import Event, HostSession
from sandbox.hosts.host import MailHost
from sandbox.hosts.transcript import SessionRecord
from sandbox.scenario.model import Behaviour, Timeline

SENDER = "bob@example.net"
RCPT = "alice@example.test"
BODY = b"Subject: hello\r\n\r\nHi Alice.\r\n"
CONNECTIONS = 200
TEN_MB = 10 * 1024 * 1024


def run_clock() -> Callable[[], float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    return lambda: loop.time() - start


@contextlib.asynccontextmanager
async def mail_host(
    events: list[Event] | None = None, behaviour: Behaviour | None = None
) -> AsyncIterator[MailHost]:
    host = MailHost(
        "mx1.example.test",
        "192.0.2.10",
        Timeline.constant(behaviour or Behaviour()),
        clock=run_clock(),
        emit=events.append if events is not None else None,
    )
    await host.start()
    try:
        yield host
    finally:
        await host.close()


class Client:
    """A byte-level SMTP client that sends exactly what it is told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: MailHost) -> Client:
        reader, writer = await asyncio.open_connection(*host.listen, limit=2**20)
        return cls(reader, writer)

    async def reply(self, timeout: float = 30) -> tuple[int, str]:
        """One reply, multi-line ones joined; EOFError when the host hung up."""
        lines = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                raise EOFError("the host closed the connection")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str | bytes) -> tuple[int, str]:
        await self.send(line if isinstance(line, bytes) else line.encode() + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def client(host: MailHost) -> AsyncIterator[Client]:
    c = await Client.open(host)
    try:
        yield c
    finally:
        await c.close()


async def deliver(c: Client, body: bytes = BODY, rcpt: str = RCPT) -> tuple[int, str]:
    """A whole, polite transaction on an open connection; the reply to the final dot."""
    assert (await c.cmd("EHLO good.example.net"))[0] == 250
    assert (await c.cmd(f"MAIL FROM:<{SENDER}>"))[0] == 250
    assert (await c.cmd(f"RCPT TO:<{rcpt}>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    await c.send(body + b".\r\n")
    return await c.reply()


async def good_client_delivers(host: MailHost, rcpt: str = "good@example.test") -> None:
    async with client(host) as c:
        assert (await c.reply())[0] == 220
        assert (await deliver(c, rcpt=rcpt))[0] == 250
        assert (await c.cmd("QUIT"))[0] == 221


def said(record: SessionRecord, side: str) -> list[str]:
    return [line for _, s, line in record.transcript if s == side]


def session_of(host: MailHost, index: int) -> SessionRecord:
    return host.sessions[index]


async def all_closed(host: MailHost) -> None:
    """Wait (boundedly) for the host to see every connection end."""
    for _ in range(1000):
        if all(s.closed is not None for s in host.sessions):
            return
        await asyncio.sleep(0)
    raise AssertionError("a session is still open")


# --- garbage -------------------------------------------------------------------------------

GARBAGE = (
    b"\x00\x01\x02\x03\r\n",
    b"\xff\xfe\xfd not utf-8\r\n",
    b"GET / HTTP/1.1\r\n",
    b"\r\n",
    b"RCPT TO:<early@example.test>\r\n",  # before MAIL
    b"DATA\r\n",  # before RCPT: refused, so what follows is a command again
    b"MAIL FROM:<<<>>>\r\n",
    b"\x1b[31mred\x1b[0m\r\n",
    b"\xff\xf4\xff\xfd\x06\r\n",  # a telnet interrupt
    b"HELO\r\n",
)


async def test_garbage_gets_error_replies_and_the_transcript_keeps_it() -> None:
    async with mail_host() as host:
        async with client(host) as bad:
            assert (await bad.reply())[0] == 220
            codes = []
            for line in GARBAGE:
                await bad.send(line)
                try:
                    codes.append((await bad.reply())[0])
                except EOFError:  # too many unrecognised commands: the host hangs up
                    break
                await good_client_delivers(host, rcpt=f"good{len(codes)}@example.test")
        await all_closed(host)
        record = session_of(host, 0)
    assert codes and all(code >= 500 for code in codes), codes
    client_lines = said(record, "C")
    for line in GARBAGE[: len(codes)]:
        assert line.rstrip(b"\r\n").decode("utf-8", "replace") in client_lines
    assert len([s for s in said(record, "S") if s[:1] == "5"]) >= len(codes)
    assert len(host.mailbox) == len(codes)  # the good client, served between every line
    assert record.closed is not None


# --- an overlong line ----------------------------------------------------------------------


async def test_an_overlong_command_line_is_refused_and_recorded() -> None:
    long_line = b"X" * 100_000
    async with mail_host() as host:
        async with client(host) as bad:
            assert (await bad.reply())[0] == 220
            await bad.send(long_line[:50_000])
            await good_client_delivers(host)  # served while half a line is pending
            await bad.send(long_line[50_000:] + b"\r\n")
            code, text = await bad.reply()
            assert code == 500 and "too long" in text
            assert (await bad.cmd("NOOP"))[0] == 250  # the session goes on
            assert (await deliver(bad))[0] == 250
        await all_closed(host)
        record = session_of(host, 0)
    # Recorded in pieces, never buffered whole: every X is there, and a piece ends in "…".
    assert sum(line.count("X") for line in said(record, "C")) == len(long_line)
    assert any(line.endswith("…") for line in said(record, "C"))
    assert len(host.mailbox) == 2


async def test_an_overlong_content_line_is_refused_after_the_dot() -> None:
    body = b"Subject: long\r\n\r\n" + b"Y" * 5000 + b"\r\n"
    async with mail_host() as host, client(host) as bad:
        assert (await bad.reply())[0] == 220
        code, text = await deliver(bad, body)
        assert code == 500 and "too long" in text.lower()
        assert (await deliver(bad))[0] == 250
        await bad.cmd("QUIT")
        await all_closed(host)
        record = session_of(host, 0)
        assert len(host.mailbox) == 1
    assert f"<message: {len(body)} bytes>" in said(record, "C")


# --- bare LF -------------------------------------------------------------------------------


async def test_bare_lf_commands_work_and_a_bare_lf_dot_does_not_end_the_message() -> None:
    # "\n.\n" is not the end of the data (RFC 5321 §4.1.1.4): a host that took it for one
    # would let a second, smuggled message in.
    content = b"Subject: lf\n\nline one\n.\nMAIL FROM:<evil@example.net>\nline two\r\n"
    async with mail_host() as host, client(host) as c:
        assert (await c.reply())[0] == 220
        for line in ("EHLO lf.example.net", f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RCPT}>"):
            assert (await c.cmd(line.encode() + b"\n"))[0] == 250
        assert (await c.cmd(b"DATA\n"))[0] == 354
        await c.send(content + b".\r\n")
        assert (await c.reply())[0] == 250
        assert (await c.cmd(b"QUIT\n"))[0] == 221
        await all_closed(host)
        (stored,) = host.mailbox
        record = session_of(host, 0)
    assert stored.data == content
    assert stored.sender == SENDER
    assert f"<message: {len(content)} bytes>" in said(record, "C")
    assert "MAIL FROM:<evil@example.net>" not in said(record, "C")


# --- pipelining ----------------------------------------------------------------------------


async def test_pipelined_transactions_are_answered_in_order_and_recorded_right() -> None:
    everything = (
        b"EHLO pipe.example.net\r\n"
        b"MAIL FROM:<bob@example.net>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
        b"DATA\r\nSubject: one\r\n\r\nfirst\r\n.\r\n"
        b"MAIL FROM:<bob@example.net>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n"
        b"Subject: two\r\n\r\nsecond\r\n.\r\n"
        b"QUIT\r\n"
    )
    async with mail_host() as host, client(host) as c:
        await c.send(everything)  # before the greeting, even
        codes = []
        with contextlib.suppress(EOFError):
            while True:
                codes.append((await c.reply())[0])
        await all_closed(host)
        record = session_of(host, 0)
        assert [m.recipients for m in host.mailbox] == [
            ("a@example.test", "b@example.test"),
            ("c@example.test",),
        ]
    assert codes == [220, 250, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    first, second = (b"Subject: one\r\n\r\nfirst\r\n", b"Subject: two\r\n\r\nsecond\r\n")
    assert said(record, "C") == [
        "EHLO pipe.example.net",
        "MAIL FROM:<bob@example.net>",
        "RCPT TO:<a@example.test>",
        "RCPT TO:<b@example.test>",
        "DATA",
        f"<message: {len(first)} bytes>",
        "MAIL FROM:<bob@example.net>",
        "RCPT TO:<c@example.test>",
        "DATA",
        f"<message: {len(second)} bytes>",
        "QUIT",
    ]


async def test_content_pipelined_behind_a_refused_data_is_read_as_commands() -> None:
    async with mail_host() as host, client(host) as c:
        assert (await c.reply())[0] == 220
        await c.send(b"EHLO pipe.example.net\r\nDATA\r\nnot content at all\r\nNOOP\r\nQUIT\r\n")
        codes = []
        with contextlib.suppress(EOFError):
            while True:
                codes.append((await c.reply())[0])
        await all_closed(host)
        record = session_of(host, 0)
    assert codes == [250, 503, 500, 250, 221]
    assert said(record, "C") == [
        "EHLO pipe.example.net",
        "DATA",
        "not content at all",
        "NOOP",
        "QUIT",
    ]


async def test_a_data_line_too_long_to_be_a_command_holds_nothing_back() -> None:
    too_long = "DATA " + "x" * 600
    async with mail_host() as host, client(host) as c:
        assert (await c.reply())[0] == 220
        await c.send(f"EHLO pipe.example.net\r\n{too_long}\r\nNOOP\r\n".encode())
        assert [(await c.reply())[0] for _ in range(3)] == [250, 500, 250]
        # NOOP is in the transcript while the session is still open: nothing waits for a
        # reply to a DATA that aiosmtpd never took for one.
        assert said(session_of(host, 0), "C") == ["EHLO pipe.example.net", too_long, "NOOP"]


# --- a 10 MB message -----------------------------------------------------------------------


def big_body(size: int) -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n"
    header = b"Subject: a big one\r\n\r\n"
    return header + line * ((size - len(header)) // len(line) + 1)


async def test_a_ten_megabyte_message_is_stored_whole_while_others_are_served() -> None:
    body = big_body(TEN_MB)
    assert len(body) >= TEN_MB
    async with mail_host() as host:
        async with client(host) as big:
            assert (await big.reply())[0] == 220
            for line in ("EHLO big.example.net", f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RCPT}>"):
                assert (await big.cmd(line))[0] == 250
            assert (await big.cmd("DATA"))[0] == 354
            big.writer.write(body[: len(body) // 2])
            await good_client_delivers(host)  # in the middle of the 10 MB
            await big.send(body[len(body) // 2 :] + b".\r\n")
            code, _ = await big.reply(timeout=120)
            assert code == 250
        await all_closed(host)
        stored = [m for m in host.mailbox if m.recipients == (RCPT,)]
        assert [m.data for m in stored] == [body]
        record = session_of(host, 0)
    assert f"<message: {len(body)} bytes>" in said(record, "C")
    assert len(host.mailbox) == 2


# --- 200 connections -----------------------------------------------------------------------


async def test_two_hundred_connections_at_once() -> None:
    async with mail_host() as host:
        clients: list[Client] = []
        try:
            # Opened fifty at a time (all stay open): the listen backlog is 100, and a SYN
            # the kernel drops is retried only after a second.
            for _ in range(CONNECTIONS // 50):
                batch = await asyncio.gather(*(Client.open(host) for _ in range(50)))
                clients += batch
                greetings = await asyncio.gather(*(c.reply() for c in batch))
                assert {code for code, _ in greetings} == {220}
            assert len(host.sessions) == CONNECTIONS
            assert all(s.closed is None for s in host.sessions)
            await good_client_delivers(host)  # someone else, with 200 open
            replies = await asyncio.gather(
                *(deliver(c, rcpt=f"r{i}@example.test") for i, c in enumerate(clients))
            )
            assert {code for code, _ in replies} == {250}
            quits = await asyncio.gather(*(c.cmd("QUIT") for c in clients))
            assert {code for code, _ in quits} == {221}
        finally:
            await asyncio.gather(*(c.close() for c in clients))
        await all_closed(host)
        assert host.connections == CONNECTIONS + 1
        assert len(host.mailbox) == CONNECTIONS + 1
        assert {m.recipients[0] for m in host.mailbox} >= {
            f"r{i}@example.test" for i in range(CONNECTIONS)
        }
        for record in host.sessions:
            assert said(record, "S")[-1].startswith("221")


# --- one byte a second (virtual time) ------------------------------------------------------


@pytest.mark.looptime
async def test_a_client_sending_one_byte_a_second_does_not_hold_up_others() -> None:
    clock_of_test = run_clock()
    transaction = (
        b"EHLO slow.example.net\r\nMAIL FROM:<slow@example.net>\r\nRCPT TO:<alice@example.test>\r\n"
    )
    async with mail_host() as host, client(host) as slow:
        assert (await slow.reply())[0] == 220
        good = asyncio.create_task(good_client_delivers(host))
        for index, byte in enumerate(transaction):
            slow.writer.write(bytes([byte]))
            await asyncio.sleep(1)
            if index == 10:
                await good  # done long before the slow client has finished its first line
                assert host.mailbox[0].t < 1
        codes = [(await slow.reply())[0] for _ in range(3)]
        assert codes == [250, 250, 250]
        assert (await slow.cmd("DATA"))[0] == 354
        await slow.send(BODY + b".\r\n")
        assert (await slow.reply())[0] == 250
        await slow.cmd("QUIT")
        await all_closed(host)
        record = session_of(host, 0)
    assert clock_of_test() >= len(transaction)
    (t_ehlo,) = [t for t, side, line in record.transcript if line == "EHLO slow.example.net"]
    assert t_ehlo >= len(b"EHLO slow.example.net\r\n") - 1  # logged when the line was whole
    assert [m.sender for m in host.mailbox] == [SENDER, "slow@example.net"]


@pytest.mark.looptime
async def test_a_line_that_trickles_past_the_idle_timeout_ends_only_that_session() -> None:
    # aiosmtpd times a session out when a command takes longer than its idle timeout (600 s,
    # like Postfix's smtpd_timeout): one byte a second for 700 s is too slow.
    async with mail_host() as host, client(host) as slow:
        assert (await slow.reply())[0] == 220
        ended = False
        for _ in range(700):
            if slow.reader.at_eof():
                ended = True
                break
            slow.writer.write(b"N")
            await asyncio.sleep(1)
        assert ended or await asyncio.wait_for(slow.reader.read(), 5) == b""
        await all_closed(host)
        record = session_of(host, 0)
        await good_client_delivers(host)
    assert record.closed is not None and 590 <= record.closed <= 700
    assert any(line.startswith("NNN") for line in said(record, "C"))  # the partial line
    assert len(host.mailbox) == 1


async def test_every_session_is_reported_when_it_ends() -> None:
    events: list[Event] = []
    async with mail_host(events) as host:
        async with client(host) as c:
            await c.reply()
            await c.send(b"\x00garbage\r\n")
            await c.reply()
        await good_client_delivers(host)
        await all_closed(host)
    sessions = [e for e in events if isinstance(e, HostSession)]
    assert len(sessions) == 2
    assert ("C", "\x00garbage") in [(side, line) for _, side, line in sessions[0].transcript]


@pytest.mark.looptime
async def test_a_client_that_leaves_during_a_late_greeting_ends_its_session_at_once() -> None:
    # aiosmtpd ends the conversation at the client's EOF, but before its command loop (here,
    # while the greeting waits ten minutes) it left the connection open until the idle timeout.
    late = Behaviour(delays={"greeting": 600.0})
    async with mail_host(behaviour=late) as host:
        c = await Client.open(host)
        await c.send(b"EHLO impatient.example.net\r\n")
        await c.close()
        await all_closed(host)
        (record,) = host.sessions
    assert record.closed is not None and record.closed < 1
    assert said(record, "C") == ["EHLO impatient.example.net"] and not said(record, "S")


# --- message content, read the way aiosmtpd reads it ------------------------------------------


class Keep:
    """A bare aiosmtpd server's handler: keeps each message's content."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.contents.append(envelope.original_content)
        return "250 2.0.0 Ok"


async def replies_to(address: tuple[str, int], data: bytes) -> list[int]:
    reader, writer = await asyncio.open_connection(*address, limit=2**20)
    c = Client(reader, writer)
    try:
        codes = [(await c.reply())[0]]
        await c.send(data + b"QUIT\r\n")
        with contextlib.suppress(EOFError):
            while True:
                codes.append((await c.reply(timeout=120))[0])
    finally:
        await c.close()
    return codes


TRANSACTION = b"MAIL FROM:<bob@example.net>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
# content, and the reply to its final dot
CONTENTS = {
    "dot-stuffed": (b"..one dot stays\r\n.\tand this\r\n...\r\nplain\r\n", 250),
    "bare LF": (b"a\nb\r\n.\nc\r\n", 250),
    "1001 bytes a line": (b"x" * 999 + b"\r\n", 250),
    "1002 bytes a line": (b"x" * 1000 + b"\r\n", 500),
    "a 5000-byte line": (b"y" * 5000 + b"\r\n", 500),
    "too much": ((b"w" * 998 + b"\r\n") * (33 * 1024 + 10), 552),  # past SIZE 33554432
}


@pytest.mark.parametrize(("content", "verdict"), CONTENTS.values(), ids=CONTENTS)
async def test_content_is_read_as_aiosmtpd_reads_it(content: bytes, verdict: int) -> None:
    # The hosts keep the content in one buffer, not a bytearray per line as aiosmtpd does
    # (aiosmtpd_patches.PatchedSMTP.smtp_DATA): same replies, same content, less memory.
    data = b"EHLO same.example.net\r\n" + TRANSACTION + content + b".\r\n" + TRANSACTION
    data += b"second\r\n.\r\n"
    keep = Keep()
    loop = asyncio.get_running_loop()
    bare = await loop.create_server(lambda: SMTP(keep, hostname="bare"), "127.0.0.1", 0)
    try:
        async with mail_host() as host:
            ours = await replies_to(host.listen, data)
            theirs = await replies_to(bare.sockets[0].getsockname()[:2], data)
            assert ours == theirs
            assert ours[5] == verdict  # 220, EHLO, MAIL, RCPT, DATA, then the dot
            assert [m.data for m in host.mailbox] == keep.contents
    finally:
        bare.close()
        await bare.wait_closed()
