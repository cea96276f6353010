"""The trap that brings errors raised inside the servers back to the test: both of its doors
(the loop's exception handler and the loggers), with real servers on loopback whose event
callback raises, and what it leaves alone (errors from the test's own code)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiosmtplib
import pytest

from sandbox import Event, HostAccepted, HostSession, ServerError
from sandbox.hosts.host import MailHost
from sandbox.scenario.model import ACCEPT, Timeline
from sandbox.serve.trap import ServerErrorTrap


def raising_at(kind: type[Event]) -> Callable[[Event], None]:
    def emit(event: Event) -> None:
        if isinstance(event, kind):
            raise RuntimeError(f"broken at {event.kind}")

    return emit


def mail_host(emit: Callable[[Event], None]) -> MailHost:
    loop = asyncio.get_running_loop()
    start = loop.time()
    return MailHost(
        "mx1.example.test",
        "192.0.2.10",
        Timeline.constant(ACCEPT),
        clock=lambda: loop.time() - start,
        emit=emit,
    )


async def test_an_error_in_a_protocol_callback_comes_through_the_loop_door() -> None:
    trap = ServerErrorTrap()
    trap.install()
    host = mail_host(raising_at(HostSession))
    try:
        await host.start()
        reader, writer = await asyncio.open_connection(*host.listen)
        assert (await reader.readline()).startswith(b"220 ")
        writer.write(b"QUIT\r\n")
        assert (await reader.readline()).startswith(b"221 ")
        writer.close()
        await writer.wait_closed()
    finally:
        await host.close()  # returns although the session's end raised
        await asyncio.sleep(0)
        trap.uninstall()
    assert [str(fault.error) for fault in trap.faults] == ["broken at host_session"]
    assert "_call_connection_lost" in trap.faults[0].where
    with pytest.raises(ServerError, match="broken at host_session"):
        trap.raise_new()
    trap.raise_new()  # nothing new


async def test_an_error_in_an_smtp_handler_comes_through_the_logging_door() -> None:
    trap = ServerErrorTrap()
    trap.install()
    host = mail_host(raising_at(HostAccepted))
    try:
        await host.start()
        smtp = aiosmtplib.SMTP(
            hostname=host.listen[0],
            port=host.listen[1],
            timeout=10,
            local_hostname="client.test",
            start_tls=False,
        )
        await smtp.connect()
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.sendmail("a@example.net", ["b@example.test"], b"Subject: x\r\n\r\nx\r\n")
        assert refused.value.code == 500
        await smtp.quit()
    finally:
        await host.close()
        trap.uninstall()
    assert [str(fault.error) for fault in trap.faults] == ["broken at host_accepted"]
    assert "SMTP session exception" in trap.faults[0].where


async def test_errors_of_the_tests_own_code_go_to_the_previous_handler() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: seen.append(context))
    trap = ServerErrorTrap()
    trap.install()
    try:
        done = asyncio.Event()

        def fail() -> None:
            done.set()
            raise KeyError("the test's own bug")

        loop.call_soon(fail)
        await done.wait()
        await asyncio.sleep(0)
    finally:
        trap.uninstall()
        loop.set_exception_handler(None)
    assert trap.faults == []
    assert [type(context["exception"]) for context in seen] == [KeyError]
