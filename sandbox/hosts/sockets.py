"""The socket states behind a mail host's port: listen, refuse, timeout.

A :class:`HostSocket` owns one loopback (host, port) for the host's whole life. Port 0 picks a
port at the first bind; every later state binds the same port again, with ``SO_REUSEADDR``
(its own earlier connections may linger in TIME_WAIT), except ``refuse`` (below).

==========  ====================================================================================
state       the socket(s) the host holds, and what a client's connect() sees
==========  ====================================================================================
listen      A listening socket served by ``loop.create_server``, whose protocol factory makes
            a session for each connection (``accept`` and ``silent`` share this state).
refuse      A socket bound to the port but never listening. The port stays reserved, and the
            kernel answers every SYN with a RST: ``ConnectionRefusedError``. Bound without
            ``SO_REUSEADDR``, so that nobody else can bind the port meanwhile (Linux lets two
            sockets share a port when both set it and neither listens: another sandbox could
            then listen there and greet the clients this one refuses).
timeout     A socket listening with backlog 0 whose accept queue the host fills itself with an
            idle "filler" connection that nobody ever accepts. With the queue full, Linux drops
            later SYNs, so a client's connect hangs until its own timeout. The host checks the
            trick with a probe connect (it must stay pending) and adds fillers, boundedly, if
            one was not enough.
==========  ====================================================================================

The exclusive bind of ``refuse`` fails while connections of the port's own linger (sessions
still open, or closed ones in TIME_WAIT, for a minute), as after a switch from ``listen``, or
at a start right after another process used the port. Then the socket is bound shared
(``SO_REUSEADDR``, as before), and with ``reclaim`` (serve mode) the host tries again, with
growing pauses, to hold the port alone: it closes the shared socket and binds an exclusive one
at once, falling back to a shared one if that still fails. Until then, and in the instant
between close and bind, another program could take the port; one that listens there before
the fallback leaves the host without its port, which ``warn`` reports.

States are entered and left synchronously: leaving closes the listener, or the bound socket, or
the listener and its fillers (sessions already open live on). Only the ``create_server`` call
that starts serving a fresh listening socket is a coroutine; it runs in a task tracked here,
and because the socket is bound and listening before that task runs, the kernel queues the
connections that arrive meanwhile.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Literal

from sandbox.scenario.model import Behaviour

__all__ = ["HostSocket", "SocketState", "socket_state_for"]

SocketState = Literal["listen", "refuse", "timeout"]

_LISTEN_BACKLOG = 100
# The timeout trick needs one filler on Linux; more are a fallback for kernels that count the
# accept queue differently. Bounded so that a platform where the trick fails cannot spin.
_MAX_FILLERS = 4
# Seconds between tries to hold a refusing port alone again (doubling up to the last).
_RECLAIM_FIRST, _RECLAIM_MOST = 1.0, 16.0


def socket_state_for(behaviour: Behaviour) -> SocketState:
    """The socket state a behaviour needs; ``accept`` and ``silent`` share the listener."""
    if behaviour.connection == "refuse":
        return "refuse"
    if behaviour.connection == "timeout":
        return "timeout"
    return "listen"


class HostSocket:
    """The socket(s) behind one loopback (host, port), in one state at a time.

    ``new_session`` makes the protocol for each accepted connection; ``warn`` reports what
    cannot be raised (a failure inside a task or a trick that did not work); ``reclaim``: try
    again later to hold a refusing port alone when it had to be shared."""

    def __init__(
        self,
        bind: tuple[str, int],
        *,
        new_session: Callable[[], asyncio.BaseProtocol],
        warn: Callable[[str], None],
        reclaim: bool = False,
    ) -> None:
        self.host, self.port = bind  # port stays 0 until the first bind picks one
        self._family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._new_session = new_session
        self._warn = warn
        self._state: SocketState | None = None
        # Raw sockets of the current state: the bound socket (refuse), the listener and its
        # fillers (timeout), or a listener that create_server does not own yet (listen).
        self._sockets: list[socket.socket] = []
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reclaim = reclaim
        self._reclaim_timer: asyncio.TimerHandle | None = None
        self._reclaim_pending = False  # refusing on a shared port

    def enter(self, state: SocketState, loop: asyncio.AbstractEventLoop) -> None:
        """Leave the current state and enter ``state`` (nothing to do if it is the same).
        Raises OSError, with no state entered, if the port cannot be bound."""
        if state == self._state:
            return
        self.leave()
        try:
            if state == "listen":
                self._listen(loop)
            elif state == "refuse":
                self._refuse(loop)
            else:
                self._blackhole()
        except OSError:
            self.leave()
            raise
        self._state = state

    def leave(self) -> None:
        """Close the sockets of the current state; open sessions live on."""
        if self._reclaim_timer is not None:
            self._reclaim_timer.cancel()
            self._reclaim_timer = None
        self._reclaim_pending = False
        if self._server is not None:
            self._server.close()  # closes the listening socket
            self._server = None
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        self._state = None

    async def settle(self) -> None:
        """Wait until the current state serves (create_server has run)."""
        while pending := [task for task in self._tasks if not task.done()]:
            await asyncio.wait(pending)

    def stop(self) -> list[asyncio.Task[None]]:
        """Leave the current state and cancel the tasks that were starting to serve it;
        return those tasks for the caller to await."""
        self.leave()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    # -- the three states ---------------------------------------------------------------------

    def _bind(self, *, shared: bool = True) -> socket.socket:
        # proto=IPPROTO_TCP matters: asyncio disables Nagle only on sockets whose proto says
        # TCP, and accepted sockets inherit it. With Nagle on, a multi-line reply stalls for the
        # peer's delayed ACK (40 ms of real time), which virtual time turns into a timeout.
        sock = socket.socket(self._family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            if shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        return sock

    def _refuse(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._sockets = [self._bind(shared=False)]
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            # Our own lingering connections, most likely (see the module docstring). Another
            # program that listens or holds the port alone makes this bind fail too.
            self._sockets = [self._bind()]
            self._reclaim_pending = True
            if self._reclaim:
                self._reclaim_timer = loop.call_later(
                    _RECLAIM_FIRST, self._reclaim_port, loop, _RECLAIM_FIRST
                )

    def _reclaim_port(self, loop: asyncio.AbstractEventLoop, pause: float) -> None:
        self._reclaim_timer = None
        if self._state != "refuse":
            return
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        try:
            self._sockets = [self._bind(shared=False)]
            self._reclaim_pending = False
            return
        except OSError:
            pass
        try:
            self._sockets = [self._bind()]
        except OSError as error:
            self._state = None
            self._warn(f"lost its port to another program while refusing: {error}")
            return
        pause = min(2 * pause, _RECLAIM_MOST)
        self._reclaim_timer = loop.call_later(pause, self._reclaim_port, loop, pause)

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = self._bind()
        # Until create_server owns it, the raw socket is ours to close (see leave).
        self._sockets = [sock]
        sock.listen(_LISTEN_BACKLOG)
        task = loop.create_task(self._serve(loop, sock))
        self._tasks.add(task)
        task.add_done_callback(self._served)

    async def _serve(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        if sock not in self._sockets:  # the state changed (and closed sock) before we ran
            return
        # start_serving=False: create_server returns without suspending, so the Server is
        # recorded before any await and leave() can always close it.
        server = await loop.create_server(
            self._new_session, sock=sock, backlog=_LISTEN_BACKLOG, start_serving=False
        )
        self._sockets.remove(sock)
        self._server = server
        await server.start_serving()

    def _served(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._warn(f"could not serve: {error!r}")

    def _blackhole(self) -> None:
        listener = self._bind()
        self._sockets = [listener]
        listener.listen(0)
        for _ in range(_MAX_FILLERS):
            probe = socket.socket(self._family, socket.SOCK_STREAM)
            # From the host's own address, which no sender uses: serve mode's SYN watcher
            # (serve/syn.py) leaves these connections out of a sender's attempts.
            probe.bind((self.host, 0))
            probe.setblocking(False)
            probe.connect_ex((self.host, self.port))
            if not _is_connected(probe):
                # The probe's SYN was dropped: the accept queue is full, connects now hang.
                probe.close()
                return
            self._sockets.append(probe)  # a filler: connected, never accepted, kept open
        self._warn("the accept queue did not fill up; connects may not time out")


def _is_connected(sock: socket.socket) -> bool:
    # On loopback the handshake runs inside connect(): a probe is connected at once or its
    # SYN was dropped.
    try:
        sock.getpeername()
    except OSError:
        return False
    return True
