"""The scripted mail hosts on real loopback sockets, in virtual time (looptime).

Each test starts its hosts on 127.0.0.1 port 0 and talks to them as a client would: with
aiosmtplib, or with raw streams where the exact bytes matter. Every behaviour is checked from
the wire (codes, texts, refused/hanging connects, EOF) and from the host's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage

import aiosmtplib
import pytest

from sandbox import Event, HostAccepted, HostSession, SandboxError
from sandbox.hosts.host import MailHost
from sandbox.hosts.transcript import SessionRecord
from sandbox.scenario.model import Behaviour, Phase, Reply, Stage, Timeline

pytestmark = pytest.mark.looptime

ACCEPT = Behaviour()
SENDER = "bob@example.net"
RCPT = "alice@example.test"
BODY = b"Subject: hello\r\n\r\nHi Alice.\r\n"


def reply(text: str) -> Reply:
    code, _, rest = text.partition(" ")
    return Reply(int(code), rest)


def run_clock() -> Callable[[], float]:
    """Virtual seconds since the test started (looptime moves loop.time())."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    return lambda: loop.time() - start


@contextlib.asynccontextmanager
async def serving(
    behaviour: Behaviour | Timeline[Behaviour],
    *,
    clock: Callable[[], float] | None = None,
    events: list[Event] | None = None,
    bind: tuple[str, int] = ("127.0.0.1", 0),
) -> AsyncIterator[MailHost]:
    if isinstance(behaviour, Behaviour):
        behaviour = Timeline.constant(behaviour)
    host = MailHost(
        "mx1.example.test",
        "192.0.2.10",
        behaviour,
        clock=clock or run_clock(),
        emit=events.append if events is not None else None,
        bind=bind,
    )
    await host.start()
    try:
        yield host
    finally:
        await host.close()


class Wire:
    """A byte-level SMTP client: one line out, one (possibly multi-line) reply in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: MailHost) -> Wire:
        reader, writer = await asyncio.open_connection(*host.listen)
        return cls(reader, writer)

    async def reply(self, timeout: float = 10) -> tuple[int, str]:
        lines = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                raise EOFError("connection closed")
            line = raw.decode().rstrip("\r\n")
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode() + b"\r\n"
        self.writer.write(data)

    async def cmd(self, line: str) -> tuple[int, str]:
        self.send(line)
        return await self.reply()

    async def at_eof(self) -> bool:
        """True when the host closed the connection without sending anything more."""
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def wire(host: MailHost) -> AsyncIterator[Wire]:
    w = await Wire.open(host)
    try:
        yield w
    finally:
        await w.close()


async def walk_to(w: Wire, stage: Stage) -> tuple[int, str]:
    """Go through a normal session up to ``stage``; return that stage's reply."""
    steps: list[tuple[Stage, str]] = [
        ("ehlo", "EHLO client.example.net"),
        ("mail", f"MAIL FROM:<{SENDER}>"),
        ("rcpt", f"RCPT TO:<{RCPT}>"),
        ("data", "DATA"),
    ]
    got = await w.reply()
    if stage == "greeting":
        return got
    assert got[0] == 220
    for name, line in steps:
        got = await w.cmd(line)
        if name == stage:
            return got
        assert got[0] in (250, 354), (name, got)
    w.send(BODY + b".\r\n")
    return await w.reply()


def lines_of(record: SessionRecord, side: str) -> list[str]:
    return [line for _, s, line in record.transcript if s == side]


def smtp_client(host: MailHost, timeout: float = 60) -> aiosmtplib.SMTP:
    hostname, port = host.listen
    return aiosmtplib.SMTP(
        hostname=hostname,
        port=port,
        local_hostname="client.example.net",
        start_tls=False,
        timeout=timeout,
    )


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = RCPT
    msg["Subject"] = "hello"
    msg.set_content("Hi Alice.\n")
    return msg


def port_is_bound(address: tuple[str, int]) -> bool:
    probe = socket.socket()
    try:
        probe.bind(address)
    except OSError:
        return True
    finally:
        probe.close()
    return False


# --- accept ----------------------------------------------------------------------------


async def test_accept_stores_the_message_and_records_the_transcript() -> None:
    events: list[Event] = []
    async with serving(ACCEPT, events=events) as host:
        client = smtp_client(host)
        await client.connect()
        errors, text = await client.send_message(message())
        await client.quit()

        assert errors == {}
        assert len(host.mailbox) == 1
        stored = host.mailbox[0]
        assert f"queued as {stored.message_id}" in text
        assert (stored.sender, stored.recipients, stored.client) == (SENDER, (RCPT,), "127.0.0.1")
        assert stored.email["Subject"] == "hello"
        assert stored.email.get_content() == "Hi Alice.\n"
        assert host.connections == 1

    [record] = host.sessions
    assert record.closed is not None and record.closed >= record.opened
    assert record.behaviour == "accept"
    client_lines = lines_of(record, "C")
    assert client_lines[0] == "EHLO client.example.net"
    assert client_lines[1].startswith(f"MAIL FROM:<{SENDER}>")
    assert client_lines[2] == f"RCPT TO:<{RCPT}>"
    assert client_lines[3] == "DATA"
    assert client_lines[4] == f"<message: {len(stored.data)} bytes>"
    assert client_lines[5] == "QUIT"
    server_lines = lines_of(record, "S")
    assert server_lines[0] == "220 mx1.example.test ESMTP MX Sandbox"
    assert "250 2.1.0 Ok" in server_lines and "250 2.1.5 Ok" in server_lines
    assert any(line.startswith("354") for line in server_lines)
    assert f"250 2.0.0 Ok: queued as {stored.message_id}" in server_lines
    assert b"Hi Alice." not in repr(record.transcript).encode()

    [accepted] = [e for e in events if isinstance(e, HostAccepted)]
    assert accepted.message_id == stored.message_id and accepted.recipients == (RCPT,)
    [session] = [e for e in events if isinstance(e, HostSession)]
    assert session.transcript == record.transcript and session.client == "127.0.0.1"


async def test_several_messages_per_session_with_rset_and_quit() -> None:
    async with serving(ACCEPT) as host, wire(host) as w:
        assert (await walk_to(w, "message"))[0] == 250
        assert (await w.cmd("MAIL FROM:<carol@example.net>"))[0] == 250
        assert (await w.cmd("RSET"))[0] == 250
        assert (await w.cmd("MAIL FROM:<dave@example.net>"))[0] == 250
        assert (await w.cmd("RCPT TO:<Erin@Example.Test>"))[0] == 250
        assert (await w.cmd("DATA"))[0] == 354
        w.send(b"Subject: two\r\n\r\n..dot-stuffed\r\n.\r\n")
        code, text = await w.reply()
        assert code == 250 and text.startswith("2.0.0 Ok: queued as ")
        assert await w.cmd("QUIT") == (221, "Bye")
        assert await w.at_eof()

        assert [(m.sender, m.recipients) for m in host.mailbox] == [
            (SENDER, (RCPT,)),
            ("dave@example.net", ("Erin@Example.Test",)),
        ]
        assert host.mailbox[1].data == b"Subject: two\r\n\r\n.dot-stuffed\r\n"
        assert host.mailbox[0].message_id != host.mailbox[1].message_id


async def test_sessions_are_visible_while_open() -> None:
    async with serving(ACCEPT) as host, wire(host) as w:
        await w.reply()
        await w.cmd("EHLO client.example.net")
        [record] = host.sessions
        assert record.closed is None
        assert lines_of(record, "C") == ["EHLO client.example.net"]
        assert lines_of(record, "S")[0].startswith("220 ")


# --- connection behaviours ---------------------------------------------------------------


async def test_refuse_gives_connection_refused_and_keeps_the_port() -> None:
    async with serving(Behaviour(connection="refuse")) as host:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*host.listen)
        assert host.connections == 0
        assert port_is_bound(host.listen)


async def test_timeout_makes_the_connect_hang_until_the_client_gives_up() -> None:
    loop = asyncio.get_running_loop()
    async with serving(Behaviour(connection="timeout")) as host:
        started = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection(*host.listen), 30)
        assert loop.time() - started == pytest.approx(30)
        assert host.connections == 0


async def test_silent_accepts_but_never_greets() -> None:
    loop = asyncio.get_running_loop()
    async with serving(Behaviour(connection="silent")) as host, wire(host) as w:
        started = loop.time()
        with pytest.raises(TimeoutError):
            await w.reply(timeout=300)
        assert loop.time() - started == pytest.approx(300)
        w.send("EHLO client.example.net")
        with pytest.raises(TimeoutError):
            await w.reply(timeout=300)
        assert host.connections == 1
        [record] = host.sessions
        assert record.behaviour == "silent"
        assert lines_of(record, "S") == []
        assert lines_of(record, "C") == ["EHLO client.example.net"]


# --- scripted replies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "scripted"),
    [
        ("greeting", "554 5.3.2 Not accepting mail"),
        ("ehlo", "550 5.7.1 Go away"),
        ("mail", "451 4.3.0 Try again later"),
        ("rcpt", "550 5.1.1 No such user"),
        ("data", "452 4.3.1 Insufficient storage"),
        ("message", "554 5.7.1 Spam"),
    ],
)
async def test_a_stage_reply_is_answered_at_that_stage(stage: Stage, scripted: str) -> None:
    async with serving(Behaviour(replies={stage: reply(scripted)})) as host, wire(host) as w:
        code, text = await walk_to(w, stage)
        assert f"{code} {text}" == scripted
        assert host.mailbox == []
        assert host.sessions[0].behaviour == f"{stage}→{scripted[:3]}"


async def test_a_scripted_data_reply_does_not_read_message_content() -> None:
    behaviour = Behaviour(replies={"data": reply("451 4.3.0 Later")})
    async with serving(behaviour) as host, wire(host) as w:
        assert (await walk_to(w, "data"))[0] == 451
        assert await w.cmd("NOOP") == (250, "OK")  # still reading commands, not content
        assert await w.cmd("DATA") == (451, "4.3.0 Later")


async def test_the_ehlo_reply_also_applies_to_helo() -> None:
    behaviour = Behaviour(replies={"ehlo": reply("550 5.7.1 Not you")})
    async with serving(behaviour) as host, wire(host) as w:
        await w.reply()
        assert await w.cmd("HELO client.example.net") == (550, "5.7.1 Not you")
        assert await w.cmd("EHLO client.example.net") == (550, "5.7.1 Not you")


async def test_a_positive_scripted_reply_replaces_only_the_text() -> None:
    behaviour = Behaviour(
        replies={
            "ehlo": reply("250 mx1.example.test at your service"),
            "message": reply("250 2.0.0 Thanks"),
        }
    )
    async with serving(behaviour) as host, wire(host) as w:
        await w.reply()
        assert await w.cmd("EHLO client.example.net") == (
            250,
            "mx1.example.test at your service",
        )
        assert (await w.cmd("MAIL FROM:<a@example.net>"))[0] == 250
        assert (await w.cmd("RCPT TO:<b@example.test>"))[0] == 250
        assert (await w.cmd("DATA"))[0] == 354
        w.send(BODY + b".\r\n")
        assert await w.reply() == (250, "2.0.0 Thanks")
        assert len(host.mailbox) == 1


@pytest.mark.parametrize("stage", ["greeting", "mail", "rcpt", "message"])
async def test_a_421_reply_closes_the_connection(stage: Stage) -> None:
    behaviour = Behaviour(replies={stage: reply("421 4.3.2 Shutting down")})
    async with serving(behaviour) as host, wire(host) as w:
        assert await walk_to(w, stage) == (421, "4.3.2 Shutting down")
        assert await w.at_eof()
        assert host.sessions[-1].closed is not None


async def test_after_a_554_greeting_every_command_but_quit_gets_503() -> None:
    behaviour = Behaviour(replies={"greeting": reply("554 5.3.2 No service")})
    async with serving(behaviour) as host, wire(host) as w:
        assert await w.reply() == (554, "5.3.2 No service")
        assert await w.cmd("EHLO client.example.net") == (503, "5.5.1 Bad sequence of commands")
        assert await w.cmd(f"MAIL FROM:<{SENDER}>") == (503, "5.5.1 Bad sequence of commands")
        assert await w.cmd("BOGUS") == (503, "5.5.1 Bad sequence of commands")
        assert await w.cmd("QUIT") == (221, "2.0.0 Bye")
        assert await w.at_eof()
        assert lines_of(host.sessions[0], "C") == [
            "EHLO client.example.net",
            f"MAIL FROM:<{SENDER}>",
            "BOGUS",
            "QUIT",
        ]


async def test_a_client_that_talks_before_a_554_greeting_still_gets_503() -> None:
    behaviour = Behaviour(
        replies={"greeting": reply("554 5.3.2 No service")}, delays={"greeting": 5}
    )
    async with serving(behaviour) as host, wire(host) as w:
        w.send("EHLO early.example.net")  # RFC 5321 says wait; this client does not
        assert await w.reply() == (554, "5.3.2 No service")
        assert await w.reply() == (503, "5.5.1 Bad sequence of commands")


async def test_a_recipient_reply_applies_to_that_mailbox_only() -> None:
    behaviour = Behaviour(recipients={"carol@example.test": reply("550 5.1.1 No such user")})
    async with serving(behaviour) as host, wire(host) as w:
        assert (await walk_to(w, "mail"))[0] == 250
        assert await w.cmd("RCPT TO:<CAROL@Example.Test>") == (550, "5.1.1 No such user")
        assert await w.cmd(f"RCPT TO:<{RCPT}>") == (250, "2.1.5 Ok")
        assert (await w.cmd("DATA"))[0] == 354
        w.send(BODY + b".\r\n")
        assert (await w.reply())[0] == 250
        assert host.mailbox[0].recipients == (RCPT,)


# --- disconnects -----------------------------------------------------------------------


async def test_disconnect_at_greeting_sends_nothing() -> None:
    async with serving(Behaviour(disconnect="greeting")) as host, wire(host) as w:
        assert await w.at_eof()
        assert host.connections == 1
        assert lines_of(host.sessions[0], "S") == []


async def test_disconnect_at_rcpt_drops_the_connection_without_a_reply() -> None:
    async with serving(Behaviour(disconnect="rcpt")) as host, wire(host) as w:
        assert (await walk_to(w, "mail"))[0] == 250
        w.send(f"RCPT TO:<{RCPT}>")
        assert await w.at_eof()
        assert host.mailbox == []
        assert lines_of(host.sessions[0], "C")[-1] == f"RCPT TO:<{RCPT}>"


async def test_disconnect_at_message_stores_the_message_but_never_confirms_it() -> None:
    async with serving(Behaviour(disconnect="message")) as host, wire(host) as w:
        assert (await walk_to(w, "data"))[0] == 354
        w.send(BODY + b".\r\n")
        assert await w.at_eof()
        assert len(host.mailbox) == 1  # the duplicate-delivery lesson
        assert host.mailbox[0].data == BODY
        assert not any(s.startswith("250 2.0.0") for s in lines_of(host.sessions[0], "S"))


# --- delays and greylisting ------------------------------------------------------------


async def test_a_greeting_delay_is_measured_on_the_virtual_clock() -> None:
    # Longer than aiosmtpd's default idle timeout (300 s): the host must still answer.
    loop = asyncio.get_running_loop()
    async with serving(Behaviour(delays={"greeting": 400})) as host, wire(host) as w:
        started = loop.time()
        code, _ = await w.reply(timeout=1000)
        assert code == 220
        assert loop.time() - started == pytest.approx(400)
        assert (await w.cmd("EHLO client.example.net"))[0] == 250


async def test_a_message_delay_outlasting_the_client_still_delivers() -> None:
    loop = asyncio.get_running_loop()
    async with serving(Behaviour(delays={"message": 700})) as host, wire(host) as w:
        assert (await walk_to(w, "data"))[0] == 354
        w.send(BODY + b".\r\n")
        started = loop.time()
        with pytest.raises(TimeoutError):
            await w.reply(timeout=600)  # Postfix's wait after the dot
        assert loop.time() - started == pytest.approx(600)
        assert len(host.mailbox) == 1


async def test_greylisting_defers_a_triple_until_its_period_is_over() -> None:
    loop = asyncio.get_running_loop()
    clock = run_clock()

    async def rcpt(host: MailHost, sender: str, recipient: str) -> int:
        async with wire(host) as w:
            assert (await walk_to(w, "ehlo"))[0] == 250
            assert (await w.cmd(f"MAIL FROM:<{sender}>"))[0] == 250
            code, text = await w.cmd(f"RCPT TO:<{recipient}>")
            if code == 451:
                assert text == "4.7.1 Greylisted, please try again later"
            return code

    async with serving(Behaviour(greylist=300), clock=clock) as host:
        assert await rcpt(host, SENDER, RCPT) == 451
        await asyncio.sleep(299 - clock())
        assert await rcpt(host, SENDER, RCPT) == 451
        assert await rcpt(host, SENDER, "carol@example.test") == 451  # a new triple
        await asyncio.sleep(300 - clock())
        assert loop.time() > 0 and clock() == pytest.approx(300)
        assert await rcpt(host, SENDER.upper(), RCPT) == 250
        assert await rcpt(host, SENDER, "carol@example.test") == 451
        host.set_behaviour(Behaviour(greylist=300))  # the first-seen times survive
        assert await rcpt(host, SENDER, RCPT) == 250


# --- phases and runtime changes --------------------------------------------------------


async def test_phases_refuse_for_two_hours_then_accept() -> None:
    clock = run_clock()
    timeline = Timeline((Phase(7200.0, Behaviour(connection="refuse")), Phase(None, ACCEPT)))
    async with serving(timeline, clock=clock) as host:
        listen = host.listen
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*listen)
        await asyncio.sleep(7201 - clock())
        assert host.listen == listen
        async with wire(host) as w:
            assert (await w.reply())[0] == 220
        assert host.connections == 1
        assert host.sessions[0].opened == pytest.approx(7201)


async def test_phases_move_through_every_socket_state_on_one_port() -> None:
    clock = run_clock()
    timeline = Timeline(
        (
            Phase(100.0, ACCEPT),
            Phase(200.0, Behaviour(connection="timeout")),
            Phase(300.0, Behaviour(connection="silent")),
            Phase(400.0, Behaviour(connection="refuse")),
            Phase(None, ACCEPT),
        )
    )
    async with serving(timeline, clock=clock) as host:
        listen = host.listen
        async with wire(host) as w:
            assert (await w.reply())[0] == 220

        await asyncio.sleep(150 - clock())
        assert host.behaviour_now().connection == "timeout"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection(*listen), 30)

        await asyncio.sleep(250 - clock())
        async with wire(host) as w:
            with pytest.raises(TimeoutError):
                await w.reply(timeout=10)

        await asyncio.sleep(350 - clock())
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*listen)

        await asyncio.sleep(450 - clock())
        async with wire(host) as w:
            assert (await w.reply())[0] == 220
        assert host.listen == listen
        assert [s.behaviour for s in host.sessions] == ["accept", "silent", "accept"]


async def test_a_session_open_across_a_boundary_lives_on() -> None:
    clock = run_clock()
    timeline = Timeline((Phase(60.0, ACCEPT), Phase(None, Behaviour(connection="refuse"))))
    async with serving(timeline, clock=clock) as host, wire(host) as w:
        assert (await walk_to(w, "ehlo"))[0] == 250
        await asyncio.sleep(61 - clock())
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*host.listen)
        assert (await w.cmd(f"MAIL FROM:<{SENDER}>"))[0] == 250


async def test_set_behaviour_at_runtime() -> None:
    async with serving(ACCEPT) as host:
        async with wire(host) as w:
            assert (await walk_to(w, "ehlo"))[0] == 250
            host.set_behaviour(Behaviour(replies={"mail": reply("451 4.3.0 Later")}))
            # An open session reads the behaviour in force at each command.
            assert await w.cmd(f"MAIL FROM:<{SENDER}>") == (451, "4.3.0 Later")

        host.set_behaviour(Behaviour(connection="refuse"))
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*host.listen)

        host.set_behaviour(Behaviour(connection="timeout"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection(*host.listen), 30)

        host.set_behaviour(ACCEPT)
        async with wire(host) as w:
            assert (await walk_to(w, "message"))[0] == 250
        assert len(host.mailbox) == 1


async def test_set_behaviour_with_a_timeline_keeps_run_relative_times() -> None:
    clock = run_clock()
    async with serving(ACCEPT, clock=clock) as host:
        await asyncio.sleep(50)
        host.set_behaviour(
            Timeline((Phase(100.0, Behaviour(connection="refuse")), Phase(None, ACCEPT)))
        )
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*host.listen)
        await asyncio.sleep(100 - clock())  # t=100 is 50 s after the change, not 100
        async with wire(host) as w:
            assert (await w.reply())[0] == 220


# --- robustness and cleanup --------------------------------------------------------------


async def test_garbage_does_not_stop_the_host() -> None:
    async with serving(ACCEPT) as host:
        async with wire(host) as bad:
            await bad.reply()
            bad.send(b"\xff\xfe\x00garbage\r\n")
            assert (await bad.reply())[0] == 500
            bad.send(b"NOOP\n")  # bare LF
            assert (await bad.reply())[0] == 250
            bad.send(b"MAIL FROM:<broken\r\n")
            assert (await bad.reply())[0] in (501, 503, 553)
            bad.send(b"x" * 5000 + b"\r\n")
            assert (await bad.reply())[0] == 500
        async with wire(host) as good:
            assert (await walk_to(good, "message"))[0] == 250
        assert len(host.mailbox) == 1


def socket_fds() -> set[str]:
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                fds.add(fd)
    return fds


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_close_leaves_no_sockets_or_tasks() -> None:
    before_fds = socket_fds()
    before_tasks = asyncio.all_tasks()
    clock = run_clock()
    timeline = Timeline(
        (
            Phase(10.0, ACCEPT),
            Phase(20.0, Behaviour(connection="silent")),
            Phase(None, Behaviour(connection="timeout")),
        )
    )
    host = MailHost("mx1.example.test", "192.0.2.10", timeline, clock=clock)
    await host.start()
    smtp = await Wire.open(host)
    assert (await smtp.reply())[0] == 220
    await asyncio.sleep(15)
    silent = await Wire.open(host)
    await asyncio.sleep(25 - clock())  # now in the timeout state, with its filler
    assert host.connections == 2

    await host.close()

    assert await smtp.at_eof() and await silent.at_eof()
    await smtp.close()
    await silent.close()
    assert all(s.closed is not None for s in host.sessions)
    assert asyncio.all_tasks() - before_tasks <= {asyncio.current_task()}
    gc.collect()  # an unclosed socket would raise a ResourceWarning (an error here)
    assert socket_fds() <= before_fds
    await asyncio.sleep(3600)  # no phase timer fires after close()
    assert socket_fds() <= before_fds


def test_binding_outside_loopback_is_refused() -> None:
    with pytest.raises(SandboxError):
        MailHost(
            "mx1.example.test",
            "192.0.2.10",
            Timeline.constant(ACCEPT),
            clock=lambda: 0.0,
            bind=("192.0.2.10", 0),
        )


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1 on this machine")
async def test_ipv6_loopback_serves_and_refuses() -> None:
    async with serving(ACCEPT, bind=("::1", 0)) as host:
        async with wire(host) as w:
            assert (await walk_to(w, "message"))[0] == 250
        assert host.mailbox[0].client == "::1"
        host.set_behaviour(Behaviour(connection="timeout"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection(*host.listen), 30)
        host.set_behaviour(Behaviour(connection="refuse"))
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*host.listen)


async def test_a_port_in_use_is_reported_as_a_sandbox_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        host = MailHost(
            "mx1.example.test",
            "192.0.2.10",
            Timeline.constant(ACCEPT),
            clock=run_clock(),
            bind=taken.getsockname(),
        )
        with pytest.raises(SandboxError, match="cannot listen"):
            await host.start()
        await host.close()
