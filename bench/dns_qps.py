"""5. DNS: queries per second of our server against dnslib's threaded DNSServer.

Both servers run in their own process on loopback (``bench.dns_servers``) and answer the same
zone from the same ``Authority``, so that they send the same bytes (checked first). One client
in this process asks them in turn, one query at a time as a stub resolver does, cycling
through six questions: MX, A and AAAA of a host, NODATA, NXDOMAIN and a CNAME chain. Rounds
alternate between the servers; the best round of each counts. A second row shows our server
with its reuse of packed replies turned off: every query through dnslib's codec.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dnslib

from bench.dns_servers import APEX
from bench.measure import ROOT, with_root_on_path
from bench.report import Figure

__all__ = ["run"]

QUESTIONS = [
    (APEX, "MX"),
    (f"mx1.{APEX}", "A"),
    (f"mx1.{APEX}", "AAAA"),
    (f"mx2.{APEX}", "AAAA"),  # NODATA
    (f"nothere.{APEX}", "A"),  # NXDOMAIN
    (f"www.{APEX}", "A"),  # CNAME, then the A
]


@contextmanager
def _server(kind: str) -> Iterator[int]:
    env = with_root_on_path(os.environ)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.dns_servers", kind],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        yield int(process.stdout.readline())
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def _queries() -> list[bytes]:
    return [bytes(dnslib.DNSRecord.question(name, rdtype).pack()) for name, rdtype in QUESTIONS]


def _ask(sock: socket.socket, query: bytes, ident: int) -> bytes | None:
    """One exchange; None when the reply did not come within the socket's timeout."""
    head = ident.to_bytes(2, "big")
    sock.send(head + query[2:])
    while True:
        try:
            reply = sock.recv(4096)
        except TimeoutError:
            return None
        if reply[:2] == head:
            return reply


def _answers(port: int, queries: list[bytes]) -> list[bytes | None]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.connect(("127.0.0.1", port))
        return [_ask(sock, q, 1) for q in queries]


def _rate(port: int, queries: list[bytes], count: int) -> tuple[float, int]:
    """(queries per second, replies lost) for ``count`` queries, one at a time."""
    lost = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.connect(("127.0.0.1", port))
        for i in range(200):  # warm-up
            _ask(sock, queries[i % len(queries)], i)
        start = time.perf_counter()
        for i in range(count):
            if _ask(sock, queries[i % len(queries)], i & 0xFFFF) is None:
                lost += 1
        return count / (time.perf_counter() - start), lost


def run(*, count: int = 5000, rounds: int = 3) -> list[Figure]:
    queries = _queries()
    kinds = ("dnslib", "ours", "ours-unpacked")
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    lost = 0
    with _server("ours") as ours, _server("ours-unpacked") as unpacked, _server("dnslib") as base:
        ports = dict(zip(kinds, (base, ours, unpacked), strict=True))
        expected = _answers(base, queries)
        if any(_answers(ports[kind], queries) != expected for kind in kinds[1:]):
            raise RuntimeError("dns: the servers do not send the same replies")
        for _ in range(rounds):
            for kind in kinds:
                rate, missing = _rate(ports[kind], queries, count)
                rates[kind].append(rate)
                lost += missing
    baseline = max(rates["dnslib"])
    details = {"qps": rates, "lost": lost, "rounds": rounds, "queries": count}
    ours_rate, unpacked_rate = max(rates["ours"]), max(rates["ours-unpacked"])
    return [
        Figure(
            "5 DNS",
            f"queries/s, {count:,} UDP queries one at a time, 6 kinds",
            ours_rate,
            "q/s",
            baseline,
            "dnslib threaded DNSServer, same zone",
            ours_rate / baseline,
            "x baseline",
            "≥ 1.0",
            ours_rate / baseline >= 1.0,
            details,
        ),
        Figure(
            "5 DNS",
            "same, every reply packed anew (reuse off)",
            unpacked_rate,
            "q/s",
            baseline,
            "dnslib threaded DNSServer, same zone",
            unpacked_rate / baseline,
            "x baseline",
        ),
    ]
