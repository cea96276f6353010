"""The MTA-STS policy server on real loopback HTTPS, and the sender's fetch (RFC 8461 §3.3).

Each test starts a ``PolicyServer`` on 127.0.0.1 port 0 and fetches as a sender would, with
a context that trusts the world's CA alone. Hostile clients (no TLS at all, a handshake that
stops half way, a request that never ends, too many connections, a bounded fuzz) must never
stop it from serving the next sender. Time is virtual (looptime): timeouts cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox.core.mta_sts import StsPolicy, parse_policy
from sandbox.errors import NotLoopback
from sandbox.sender.mta_sts import MAX_POLICY_BYTES, FetchFailed, PolicyFetched, fetch_policy
from sandbox.tls.certificates import CertificateAuthority, CertVariant
from sandbox.tls.policy_server import WELL_KNOWN, PolicyRequest, PolicyServer
from tests.integration.tls_clients import client_hello, closed_by_peer

pytestmark = pytest.mark.looptime

POLICIES = {
    "example.test": "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 86400\n",
    "other.test": "version: STSv1\r\nmode: testing\r\nmx: *.other.test\r\nmax_age: 600\r\n",
}
FUZZ_CASES = 30


@contextlib.asynccontextmanager
async def policy_server(
    ca: CertificateAuthority,
    policies: dict[str, str] | None = None,
    certificates: dict[str, CertVariant] | None = None,
    **options: Any,
) -> AsyncIterator[tuple[PolicyServer, tuple[str, int]]]:
    async with PolicyServer(
        POLICIES if policies is None else policies, ca, certificates=certificates, **options
    ) as server:
        yield server, await server.start()


async def fetch(
    ca: CertificateAuthority, where: tuple[str, int], domain: str = "example.test"
) -> PolicyFetched | FetchFailed:
    return await fetch_policy(domain, where, ca.trusting_context(), timeout=30)


async def raw_https(ca: CertificateAuthority, where: tuple[str, int], request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(
        *where, ssl=ca.trusting_context(), server_hostname="mta-sts.example.test"
    )
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return answer


# --- serving -------------------------------------------------------------------------------------


async def test_each_domain_gets_its_policy_over_https(ca: CertificateAuthority) -> None:
    async with policy_server(ca) as (server, where):
        for domain, text in POLICIES.items():
            assert await fetch(ca, where, domain) == PolicyFetched(text)
    assert [(r.host, r.path, r.status) for r in server.requests] == [
        ("mta-sts.example.test", WELL_KNOWN, 200),
        ("mta-sts.other.test", WELL_KNOWN, 200),
    ]


async def test_the_fetched_text_reads_as_the_policy_the_scenario_wrote(
    ca: CertificateAuthority,
) -> None:
    async with policy_server(ca) as (_, where):
        fetched = await fetch(ca, where, "other.test")
    assert isinstance(fetched, PolicyFetched)
    policy = parse_policy(fetched.text)
    assert (
        isinstance(policy, StsPolicy) and policy.mode == "testing" and policy.lists("a.other.test")
    )


async def test_a_domain_without_a_policy_is_a_fetch_error(ca: CertificateAuthority) -> None:
    async with policy_server(ca) as (_, where):
        fetched = await fetch(ca, where, "nowhere.test")
    assert isinstance(fetched, FetchFailed)
    # No certificate names mta-sts.nowhere.test: the default one (another site's) is refused.
    assert fetched.result == "sts-webpki-invalid"


async def test_a_policy_withdrawn_is_a_404(ca: CertificateAuthority) -> None:
    async with policy_server(ca) as (server, where):
        server.set_policy("example.test", None)
        fetched = await fetch(ca, where)
        server.set_policy("example.test", "version: STSv1\nmode: none\nmax_age: 1\n")
        back = await fetch(ca, where)
    assert isinstance(fetched, FetchFailed) and fetched.result == "sts-policy-fetch-error"
    assert "HTTP 404" in fetched.detail
    assert back == PolicyFetched("version: STSv1\nmode: none\nmax_age: 1\n")


@pytest.mark.parametrize(("variant", "says"), [("expired", "expired"), ("wrong-name", "match")])
async def test_a_site_with_a_bad_certificate_is_sts_webpki_invalid(
    ca: CertificateAuthority, variant: CertVariant, says: str
) -> None:
    async with policy_server(ca, certificates={"example.test": variant}) as (server, where):
        fetched = await fetch(ca, where)
    assert isinstance(fetched, FetchFailed) and fetched.result == "sts-webpki-invalid"
    assert says in fetched.detail
    assert server.requests == []  # the sender never got as far as asking


async def test_a_sender_that_trusts_another_ca_refuses_the_site(ca: CertificateAuthority) -> None:
    async with policy_server(ca) as (_, where):
        with CertificateAuthority() as stranger:
            fetched = await fetch_policy("example.test", where, stranger.trusting_context())
    assert isinstance(fetched, FetchFailed) and fetched.result == "sts-webpki-invalid"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: mta-sts.example.test\r\n\r\n", b"404"),
        (
            b"POST " + WELL_KNOWN.encode() + b" HTTP/1.1\r\nHost: mta-sts.example.test\r\n\r\n",
            b"405",
        ),
        (b"GET " + WELL_KNOWN.encode() + b" HTTP/1.1\r\n\r\n", b"404"),  # no Host
        (b"\xff\xfe nonsense\r\n\r\n", b"400"),
        (b"GET " + WELL_KNOWN.encode() + b" SPDY/3\r\n\r\n", b"400"),
    ],
)
async def test_requests_other_than_a_policy_fetch(
    ca: CertificateAuthority, request_bytes: bytes, status: bytes
) -> None:
    async with policy_server(ca) as (_, where):
        answer = await raw_https(ca, where, request_bytes)
    assert answer.split(b" ")[1] == status


async def test_the_host_header_may_carry_a_port_and_any_case(ca: CertificateAuthority) -> None:
    request = b"GET " + WELL_KNOWN.encode() + b" HTTP/1.1\r\nhost: MTA-STS.Example.Test:443\r\n\r\n"
    async with policy_server(ca) as (_, where):
        answer = await raw_https(ca, where, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: text/plain" in head
    assert body == POLICIES["example.test"].encode()


async def test_a_policy_larger_than_the_limit_is_invalid(ca: CertificateAuthority) -> None:
    big = "version: STSv1\nmode: none\nmax_age: 1\n" + "x-pad: " + "a" * MAX_POLICY_BYTES + "\n"
    async with policy_server(ca, {"example.test": big}) as (_, where):
        fetched = await fetch(ca, where)
    assert isinstance(fetched, FetchFailed) and fetched.result == "sts-policy-invalid"


async def test_it_listens_on_loopback_only(ca: CertificateAuthority) -> None:
    async with PolicyServer(POLICIES, ca) as server:
        with pytest.raises(NotLoopback):
            await server.start("192.0.2.1", 0)
        first = await server.start("127.0.0.1", 0)
        second = await server.start("127.0.0.2", 0)
        assert server.addresses == [first, second]
        assert await fetch(ca, second) == PolicyFetched(POLICIES["example.test"])


async def test_requests_are_handed_over_as_they_happen(ca: CertificateAuthority) -> None:
    seen: list[PolicyRequest] = []
    async with policy_server(ca, on_request=seen.append, clock=lambda: 42.0) as (_, where):
        await fetch(ca, where)
    assert [(r.t, r.client, r.status) for r in seen] == [(42.0, "127.0.0.1", 200)]


async def test_closing_cuts_open_connections_and_frees_the_port(ca: CertificateAuthority) -> None:
    server = PolicyServer(POLICIES, ca)
    where = await server.start()
    reader, writer = await asyncio.open_connection(
        *where, ssl=ca.trusting_context(), server_hostname="mta-sts.example.test"
    )
    writer.write(b"GET / HTTP/1.1\r\n")  # and never finishes
    await asyncio.sleep(0.1)
    await server.close()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    with pytest.raises(OSError):
        await asyncio.open_connection(*where)


# --- hostile clients ----------------------------------------------------------------------------


async def test_plain_text_instead_of_tls_costs_one_connection(ca: CertificateAuthority) -> None:
    async with policy_server(ca) as (_, where):
        reader, writer = await asyncio.open_connection(*where)
        writer.write(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\n\r\n" + bytes(range(256)))
        assert await closed_by_peer(reader, 30)
        writer.close()
        assert isinstance(await fetch(ca, where), PolicyFetched)


async def test_a_handshake_stopped_half_way_never_blocks_a_sender(
    ca: CertificateAuthority,
) -> None:
    hello = client_hello("mta-sts.example.test")
    async with policy_server(ca, handshake_timeout=10) as (_, where):
        reader, writer = await asyncio.open_connection(*where)
        writer.write(hello[:20])
        assert not await closed_by_peer(reader, 5)
        assert isinstance(await fetch(ca, where), PolicyFetched)  # served meanwhile
        assert await closed_by_peer(reader, 30)  # the handshake timed out
        writer.close()


async def test_a_request_that_never_ends_is_cut_off(ca: CertificateAuthority) -> None:
    async with policy_server(ca, request_timeout=10) as (_, where):
        reader, writer = await asyncio.open_connection(
            *where, ssl=ca.trusting_context(), server_hostname="mta-sts.example.test"
        )
        writer.write(b"GET " + WELL_KNOWN.encode() + b" HTTP/1.1\r\nHost: mta-sts.exa")
        assert isinstance(await fetch(ca, where), PolicyFetched)
        assert await closed_by_peer(reader, 30)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_an_endless_head_is_cut_off_at_once(ca: CertificateAuthority) -> None:
    async with policy_server(ca) as (_, where):
        answer = await raw_https(ca, where, b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert answer == b""
        assert isinstance(await fetch(ca, where), PolicyFetched)


async def test_connections_beyond_the_limit_are_closed_and_later_ones_served(
    ca: CertificateAuthority,
) -> None:
    async with policy_server(ca, max_connections=3, request_timeout=60) as (_, where):
        idle = []
        for _ in range(3):
            idle.append(
                await asyncio.open_connection(
                    *where, ssl=ca.trusting_context(), server_hostname="mta-sts.example.test"
                )
            )
        await asyncio.sleep(0.1)
        refused = await fetch(ca, where)
        assert isinstance(refused, FetchFailed)
        for _, writer in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await asyncio.sleep(0.1)
        assert isinstance(await fetch(ca, where), PolicyFetched)


async def test_fuzzed_clients_never_stop_the_server(ca: CertificateAuthority) -> None:
    rng = random.Random(8461)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    async with policy_server(ca) as (server, where):
        for case in range(FUZZ_CASES):
            payload = rng.randbytes(rng.randint(1, 2000))
            if case % 2:  # garbage inside TLS: the HTTP reader's turn
                _, writer = await asyncio.open_connection(
                    *where, ssl=ca.trusting_context(), server_hostname="mta-sts.example.test"
                )
            else:  # garbage instead of TLS: the handshake's turn
                _, writer = await asyncio.open_connection(*where)
            writer.write(payload)
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        assert isinstance(await fetch(ca, where), PolicyFetched)
        await asyncio.sleep(60)  # every half-read request and handshake times out
        assert isinstance(await fetch(ca, where), PolicyFetched)
        assert all(r.status in (200, 400, 404, 405) for r in server.requests)
    assert errors == []
