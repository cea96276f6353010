"""Seeing connection attempts that no mail host can see: the TCP SYNs sent to the served hosts.

A host that refuses (nothing listens: the kernel answers the SYN with a reset) or times out
(its accept queue is full: the kernel drops the SYN) never sees a session, so what the hosts
record cannot say that a sender tried them. The SYN itself still crosses the loopback
interface. ``SynWatcher`` reads those SYNs with a raw IPv4 socket on the running event loop
(``loop.add_reader``, no thread), and reports one ``ConnectionAttempt`` per connection attempt
to a served (address, port): retransmissions of a SYN that went unanswered are the same
attempt (same source, same initial sequence number).

- **Only where the platform allows it.** A raw socket needs Linux and CAP_NET_RAW (root, or
  the capability granted). ``SynWatcher.open`` returns None elsewhere, and the harness falls
  back on weaker evidence (the DNS queries the sender made).
- **Bounded, and it never leaves loopback.** The socket is bound to the ``lo`` device and
  only ever reads. A classic BPF filter in the kernel passes only SYNs (without ACK) to the
  one SMTP port the hosts share, so the rest of the machine's traffic never reaches Python;
  the attempts of other sandboxes at the same port (other addresses) are dropped here; the
  memory of SYNs already seen is a bounded window.
- **The sandbox's own connections are not a sender's.** A host that times out fills its
  accept queue with a connection of its own, and probes it; those connect from the host's own
  address (``hosts.sockets``), which no sender uses, and are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import socket
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SynSeen", "SynWatcher"]

# From <asm-generic/socket.h>; the socket module does not name it.
_SO_ATTACH_FILTER = 26
# How many SYNs (source, sequence number) to remember for spotting retransmissions: a SYN is
# retransmitted for at most about two minutes, far fewer than this many attempts later.
_REMEMBERED = 4096
_RECEIVE_BUFFER = 1 << 20
_TCP_SYN, _TCP_ACK = 0x02, 0x10


@dataclass(frozen=True, slots=True)
class SynSeen:
    """One connection attempt: from ``client`` (address, port) to ``address`` (a served host
    address) at the watched port."""

    client: tuple[str, int]
    address: str


def _syn_filter(port: int) -> bytes:
    """A classic BPF program for a raw IPv4 socket: accept a TCP segment to ``port`` whose
    SYN flag is set and ACK flag is not; drop everything else."""

    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    ldxb_msh, ldh_ind, ldb_ind = 0xB1, 0x48, 0x50  # BPF_LDX|B|MSH, BPF_LD|H|IND, BPF_LD|B|IND
    jeq, and_, ret = 0x15, 0x54, 0x06  # BPF_JMP|JEQ|K, BPF_ALU|AND|K, BPF_RET|K
    return b"".join(
        (
            op(ldxb_msh, 0, 0, 0),  # x = the IP header's length
            op(ldh_ind, 0, 0, 2),  # a = the TCP destination port
            op(jeq, 0, 4, port),
            op(ldb_ind, 0, 0, 13),  # a = the TCP flags
            op(and_, 0, 0, _TCP_SYN | _TCP_ACK),
            op(jeq, 0, 1, _TCP_SYN),
            op(ret, 0, 0, 0xFFFF),  # pass the packet (up to 64 kB of it)
            op(ret, 0, 0, 0),  # drop it
        )
    )


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program)
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


class SynWatcher:
    """Reports the SYNs sent to ``addresses`` at ``port`` on loopback; see the module
    docstring. Make one with ``open``; ``drain`` reads what has arrived so far (the reader
    does it too, whenever the loop runs); ``close`` stops it."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        port: int,
        watched: Callable[[str], bool],
        seen: Callable[[SynSeen], None],
    ) -> None:
        self._sock = sock
        self._loop = loop
        self._port = port
        self._watched = watched
        self._seen = seen
        self._recent: OrderedDict[tuple[bytes, int, int], None] = OrderedDict()
        loop.add_reader(sock.fileno(), self.drain)

    @classmethod
    def open(
        cls,
        port: int,
        watched: Callable[[str], bool],
        seen: Callable[[SynSeen], None],
    ) -> SynWatcher | None:
        """A watcher on the running loop, or None where the platform does not allow one (not
        Linux, or no CAP_NET_RAW). ``watched(address)`` says whether a SYN to that address
        is one of ours (asked for each, since hosts may be added while the sandbox runs)."""
        if not sys.platform.startswith("linux") or port <= 0:
            return None
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        except OSError:  # PermissionError without CAP_NET_RAW
            return None
        try:
            _attach_filter(sock, _syn_filter(port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
            sock.setblocking(False)
            # Packets that passed no filter yet may sit in the queue from before the filter
            # was attached: read them away now, unjudged.
            _discard_queued(sock)
            loop = asyncio.get_running_loop()
            return cls(sock, loop, port, watched, seen)
        except (OSError, RuntimeError):
            sock.close()
            return None

    def drain(self) -> None:
        """Read every SYN that has arrived, now (also called by the loop when one arrives)."""
        while True:
            try:
                packet = self._sock.recv(256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # closed meanwhile
            self._judge(packet)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _judge(self, packet: bytes) -> None:
        if len(packet) < 20:
            return
        header = (packet[0] & 0x0F) * 4
        if len(packet) < header + 14:
            return
        source, destination = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
        sport, dport, sequence = struct.unpack("!HHI", packet[header : header + 8])
        flags = packet[header + 13]
        if dport != self._port or flags & (_TCP_SYN | _TCP_ACK) != _TCP_SYN:
            return
        if not self._watched(destination) or source == destination:
            return  # another sandbox's host, or a host's own filler connection
        key = (packet[12:16], sport, sequence)
        if key in self._recent:
            return  # a retransmitted SYN: the same attempt
        self._recent[key] = None
        if len(self._recent) > _REMEMBERED:
            self._recent.popitem(last=False)
        self._seen(SynSeen((source, sport), destination))


def _discard_queued(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(256)
        except (BlockingIOError, InterruptedError):
            return
