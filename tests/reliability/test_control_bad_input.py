"""The control API under careless and hostile clients: malformed JSON, wrong types, unknown
hosts, 10 MB bodies, concurrent PUTs, event-stream readers that drop or stall, too many
streams. Each gets a clear 4xx (or nothing), and the sandbox goes on serving DNS, SMTP and
the API afterwards. The bounds of issue 16 hold: a body is never read past the limit, and a
reader that stalls costs at most its queue (events past it are dropped and counted, never
lost silently). RSS before and after is printed where a bound is measured.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from sandbox import DnsServed, ServedScenario, scenario_from_mapping
from sandbox.serve.control import MAX_BODY, ControlServer
from sandbox.serve.plugin import MxSandbox
from sandbox.serve.sse import MAX_SUBSCRIBERS
from sandbox.serve.world import ServedWorld
from tests.integration.serve_process import PICK_PORTS, dig, serve, smtp_send
from tests.integration.test_control_api import SCENARIO
from tests.integration.test_served_changes import mx_of, send
from tests.reliability.test_serve_careless_harness import flood

TEN_MB = 10 * 1024 * 1024


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def still_serving(sb: ServedScenario, http: aiohttp.ClientSession) -> None:
    """DNS, SMTP and the API all answer."""
    assert await mx_of(sb) == ["10 mx1.example.test.", "20 mx2.example.test."]
    assert (await send(sb)).startswith("delivered")
    async with http.get(f"{sb.control_url}/api/v1/world") as answer:
        assert answer.status == 200


async def put(
    http: aiohttp.ClientSession, url: str, data: bytes | str | io.BytesIO, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with http.put(url, data=data, headers=headers) as answer:
        assert answer.content_type == "application/json", await answer.text()
        return answer.status, await answer.json()


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- malformed JSON, wrong types, unknown hosts ---------------------------------------------------

BAD_BODIES = [
    b"",
    b"   ",
    b"{",
    b'{"rcpt": }',
    b'"accept" "refuse"',
    b"accept",
    b"\xff\xfe\x00a",
    b"NaN",
    b'{"greylist": Infinity}',
    b'{"delay": {"rcpt": 1e999}}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
    b"null",
    b"true",
    b"-1",
    b"[]",
    b"{}",
    b'{"greeting": {"nested": ["lists"]}}',
    b'{"recipients": ["not", "a", "mapping"]}',
    b'{"recipients": {"x": 5}}',
    b'{"disconnect": "never"}',
    b'[{"until": "1h", "do": "accept"}]',
    b'[{"do": "accept"}, {"do": "refuse"}]',
    b'[{"until": -5, "do": "refuse"}, {"do": "accept"}]',
    b'{"greeting": "220 hi\\r\\n250 ok"}',
    json.dumps({"rcpt": "451 " + "x" * 100_000}).encode(),
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=lambda b: repr(b[:24]))
async def test_a_bad_behaviour_body_is_a_400_with_a_sentence(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession, body: bytes
) -> None:
    sb = await mx_sandbox(SCENARIO, control=("127.0.0.1", 0))
    api = f"{sb.control_url}/api/v1"
    for path in ("/hosts/mx2.example.test/behaviour", "/dns/example.test"):
        status, answer = await put(http, api + path, body, **{"Content-Type": "application/json"})
        if status == 200:  # a few are good behaviours somewhere (a long reply text, {})
            continue
        assert status == 400, answer
        sentence = answer["error"]
        assert isinstance(sentence, str) and 0 < len(sentence) < 400 and "\n" not in sentence
    # The bad bodies changed nothing that matters here: mx2 still takes the mail.
    await http.put(f"{api}/hosts/mx2.example.test/behaviour", json="accept")
    await http.put(f"{api}/dns/example.test", json="answer")
    await still_serving(sb, http)


@pytest.mark.parametrize(
    "zone",
    [
        b"@ IN MX x y\n",
        b"$TTL banana\n",
        b"@ IN A 999.1.1.1\n",
        b"\xff\xfe",
        b"$INCLUDE /etc/passwd\n",
    ],
)
async def test_bad_zone_text_is_a_400_and_the_zone_stays(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession, zone: bytes
) -> None:
    sb = await mx_sandbox(SCENARIO, control=("127.0.0.1", 0))
    status, answer = await put(http, f"{sb.control_url}/api/v1/zones/example.test", zone)
    assert status == 400 and answer["error"], answer
    await still_serving(sb, http)


@pytest.mark.parametrize(
    "path",
    [
        "/hosts/mx9.example.test/sessions",
        "/hosts/%00/messages",
        "/hosts/..%2F..%2Fetc/sessions",
        "/hosts/" + "a" * 2000 + "/behaviour",
        "/hosts//sessions",
        "/dns/queries/extra",
        "/zones/",
        "/live/../control.py",
        "/live/index.html",
        "/api/v2/world",
    ],
)
async def test_unknown_paths_and_hosts_are_404s(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession, path: str
) -> None:
    sb = await mx_sandbox(SCENARIO, control=("127.0.0.1", 0))
    url = sb.control_url + (path if path.startswith(("/live", "/api/v2")) else f"/api/v1{path}")
    async with http.get(yarl_url(url)) as answer:
        assert 400 <= answer.status < 500, answer.status
        assert answer.content_type == "application/json"
        assert (await answer.json())["error"]
    await still_serving(sb, http)


def yarl_url(url: str) -> yarl.URL:
    return yarl.URL(url, encoded=True)  # sent as written, %-escapes and all


# --- large bodies ---------------------------------------------------------------------------------


async def test_a_10_mb_body_is_refused_without_being_read(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await mx_sandbox(SCENARIO, control=("127.0.0.1", 0))
    url = f"{sb.control_url}/api/v1/zones/example.test"
    before = rss_kb()
    # With a Content-Length: refused at once.
    status, answer = await put(http, url, io.BytesIO(b"x" * TEN_MB))
    assert status == 413 and str(MAX_BODY) in answer["error"]

    # Chunked, with no length to refuse by: read up to the limit, then refused.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(TEN_MB // 65536):
            yield b"; a comment line\n" * 3855

    async with http.put(url, data=chunks()) as answer:
        assert answer.status == 413
    # Expect: 100-continue with a length over the limit: refused before the body is sent.
    host, port = sb.control
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"PUT /api/v1/zones/example.test HTTP/1.1\r\nHost: x\r\nContent-Length: {TEN_MB}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    async with asyncio.timeout(10):
        status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    writer.close()
    grown = rss_kb() - before
    print(f"\n10 MB bodies (three ways): RSS {before} kB before, grown {grown} kB")
    assert grown < 3 * MAX_BODY // 1024 + 20_000
    await still_serving(sb, http)


async def test_ten_concurrent_10_mb_uploads_cost_the_limit_not_the_size() -> None:
    async with serve(
        "scenarios/primary-down.yaml", *PICK_PORTS, "--control", "127.0.0.1:0", as_json=True
    ) as served:
        pid = served.process.pid
        before = rss_kb(pid)
        url = f"http://{served.control}/api/v1/hosts/mx1.example.test/behaviour"
        async with aiohttp.ClientSession() as http:

            async def upload() -> int:
                async def chunks() -> AsyncIterator[bytes]:
                    for _ in range(TEN_MB // 65536):
                        yield b" " * 65536

                async with http.put(url, data=chunks()) as answer:
                    return answer.status

            statuses = await asyncio.gather(*(upload() for _ in range(10)))
            after = rss_kb(pid)
            async with http.get(f"http://{served.control}/api/v1/world") as answer:
                assert answer.status == 200
        code, _, _ = await served.stop()
    assert statuses == [413] * 10 and code == 0
    print(f"\nTen 10 MB chunked uploads: serve's RSS {before} kB → {after} kB")
    assert after - before < 10 * MAX_BODY // 1024 + 20_000


# --- concurrent changes ---------------------------------------------------------------------------


async def test_concurrent_puts_all_land_and_the_world_stays_whole(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await mx_sandbox(SCENARIO, control=("127.0.0.1", 0))
    api = f"{sb.control_url}/api/v1"
    behaviours = ["accept", "refuse", {"rcpt": "451 4.3.0 later"}, "silent", {"greylist": "1s"}]

    async def behaviour(i: int) -> int:
        url = f"{api}/hosts/mx{1 + i % 2}.example.test/behaviour"
        async with http.put(url, json=behaviours[i % len(behaviours)]) as answer:
            return answer.status

    async def zone(i: int) -> int:
        text = f"@ IN MX 10 mx1.example.test.\nmx{i} IN A 192.0.2.{100 + i}\n"
        async with http.put(f"{api}/zones/extra{i}.test", data=text) as answer:
            return answer.status

    statuses = await asyncio.gather(
        *(behaviour(i) for i in range(200)), *(zone(i) for i in range(20))
    )
    assert statuses == [200] * 220
    async with http.get(f"{api}/world") as answer:
        world = await answer.json()
    zone_addresses = [h["zone_address"] for h in world["hosts"]]
    assert len(zone_addresses) == len(set(zone_addresses)) == 22
    served_at = [h["address"] for h in world["hosts"]]
    assert len(served_at) == len(set(served_at))
    assert len([e for e in sb.events if e.kind == "control"]) == 220
    for host in ("mx1.example.test", "mx2.example.test"):
        await http.put(f"{api}/hosts/{host}/behaviour", json="accept")
    await still_serving(sb, http)
    assert (await mx_of(sb, "extra7.test")) == ["10 mx1.example.test."]


# --- event streams --------------------------------------------------------------------------------


async def open_stream(host: str, port: int, receive_buffer: int | None = None) -> socket.socket:
    """A raw event-stream reader: the request sent, the headers and first block read."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, port))
    await loop.sock_sendall(sock, b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    async with asyncio.timeout(10):
        while b"retry: 1000" not in received:
            chunk = await loop.sock_recv(sock, 4096)
            assert chunk, received
            received += chunk
    return sock


def slam(sock: socket.socket) -> None:
    """Close with a reset, the way a killed client goes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_streams_that_drop_free_their_slots_and_one_too_many_is_a_429(
    http: aiohttp.ClientSession,
) -> None:
    world = ServedWorld(scenario_from_mapping({"name": "x", **SCENARIO}))
    async with world, ControlServer(world) as control:
        await control.start()
        host, port = control.address
        for round_ in range(3):
            streams = [await open_stream(host, port) for _ in range(MAX_SUBSCRIBERS)]
            assert control.events.subscribers == MAX_SUBSCRIBERS
            async with http.get(f"{control.url}/api/v1/events") as answer:
                assert answer.status == 429
                assert "close one first" in (await answer.json())["error"]
            world.reset()  # an event for every stream, some of them already gone
            for i, sock in enumerate(streams):
                slam(sock) if i % 2 else sock.close()
            async with asyncio.timeout(10):
                while control.events.subscribers:
                    await asyncio.sleep(0.01)
            print(f"round {round_}: {MAX_SUBSCRIBERS} streams dropped, every slot freed")
        async with http.get(f"{control.url}/api/v1/world") as answer:
            assert answer.status == 200


async def read_until(sock: socket.socket, end: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(30):
        while end not in data:
            chunk = await loop.sock_recv(sock, 1 << 16)
            assert chunk, data[-500:]
            data += chunk
    return data


async def test_a_stalled_reader_costs_its_queue_and_every_event_is_sent_or_counted(
    http: aiohttp.ClientSession,
) -> None:
    buffer = 64 * 1024
    world = ServedWorld(scenario_from_mapping({"name": "x", **SCENARIO}))
    async with world, ControlServer(world, stream_buffer=buffer) as control:
        await control.start()
        sock = await open_stream(*control.address, receive_buffer=4096)
        published = 20_000
        most_pending = 0
        for i in range(published):
            world.world.emit(
                DnsServed(
                    t=world.clock(),
                    client="127.0.0.1",
                    transport="udp",
                    name=f"q{i}.example.test",
                    rdtype="A",
                    rcode="NXDOMAIN",
                )
            )
            most_pending = max(most_pending, control.events.pending_bytes)
            if i % 500 == 0:
                # The API answers while the reader stalls.
                async with http.get(f"{control.url}/api/v1/world") as answer:
                    assert answer.status == 200
        assert most_pending <= buffer
        # The reader comes back and reads on; once it has caught up, one more event marks
        # the end of what it can be sent.
        reading = asyncio.create_task(read_until(sock, b'"kind": "control"'))
        async with asyncio.timeout(30):
            while control.events.pending_bytes:
                await asyncio.sleep(0.01)
        world.reset()
        data = (await reading).decode()
        sock.close()
    sent = data.count('"kind": "dns_served"')
    dropped = [
        json.loads(line.removeprefix("data: "))["count"]
        for block in data.split("\n\n")
        if block.startswith("event: dropped")
        for line in block.splitlines()
        if line.startswith("data: ")
    ]
    print(
        f"\na stalled reader: {published} events, {sent} sent, {sum(dropped)} dropped and "
        f"counted in {len(dropped)} notice(s); its queue peaked at {most_pending} bytes "
        f"(limit {buffer})"
    )
    assert dropped and sent + sum(dropped) == published


LONG_NAME = ".".join(letter * 60 for letter in "abc") + ".example.test"
FLOOD = 20_000  # ~7 MB of events: more than the queue (1 MiB) and the socket buffers (4 MiB)


async def test_serve_with_a_stalled_event_reader_goes_on_answering() -> None:
    async with serve(
        "scenarios/primary-down.yaml", *PICK_PORTS, "--control", "127.0.0.1:0", as_json=True
    ) as served:
        host, _, port = served.control.rpartition(":")
        sock = await open_stream(host, int(port), receive_buffer=4096)
        pid = served.process.pid
        before = rss_kb(pid)
        answered = 0
        async with asyncio.timeout(120):
            while answered < FLOOD:  # UDP may drop some on a busy machine: ask again
                answered += await flood(served.dns, FLOOD // 4, LONG_NAME, batch=50)
        after = rss_kb(pid)
        mx2 = next(h for h in served.ready["hosts"] if h["name"] == "mx2.example.test")
        assert await dig(served.dns, "A", "mx2.example.test") == [mx2["address"]]
        assert (await smtp_send(mx2["address"], served.smtp_port)).startswith("2.0.0")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{served.control}/api/v1/world") as answer,
        ):
            assert answer.status == 200
        # The reader comes back: among what it was sent, a notice of what it was not.
        got = (await read_until(sock, b"event: dropped")).decode()
        sock.close()
        code, _, _ = await served.stop()
    assert code == 0
    notice = got[got.index("event: dropped") :].split("\n")[1]
    count = json.loads(notice.removeprefix("data: "))["count"]
    print(
        f"\nserve, {FLOOD} queries with a stalled event reader: RSS {before} kB → {after} kB; "
        f"the reader's first notice: {count} events dropped"
    )
    assert count > 0
