"""The sender's SMTP client when the process is out of file descriptors: the delivery learns
of a local error, as an outcome; the run goes on (it used to raise out of the agent)."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from sandbox.core.addresses import AddressMap
from sandbox.core.classify import NoReply
from sandbox.sender.smtp import SmtpConnection


def test_a_socket_that_cannot_be_opened_is_an_outcome_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    network = AddressMap()
    attempts: list[str] = []
    network.add("192.0.2.10", ("127.0.0.1", 9), on_attempt=lambda: attempts.append("mx1"))

    def no_descriptors(*args: object, **kwargs: object) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")

    async def connect() -> NoReply | None:
        # Patched once the loop has its own sockets: only the connection's socket fails.
        with monkeypatch.context() as patched:
            patched.setattr(socket, "socket", no_descriptors)
            return await SmtpConnection(network, "sender.test").connect("192.0.2.10", 5.0)

    outcome = asyncio.run(connect())
    assert outcome == NoReply("error", "cannot open a socket: Too many open files")
    assert attempts == []  # no connection attempt was made, so none is counted
