"""The control API through a real HTTP client (aiohttp's), one test or more per path, against
a sandbox served in the test's loop with ``control=("127.0.0.1", 0)``. The command line's
``--control`` and a curl session are in test_control_cli.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from email import message_from_string
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from openapi_spec_validator import validate

from sandbox import ScenarioError, ServedScenario, ServedWorld, event_to_dict, scenario_from_mapping
from sandbox.serve.control import ControlServer
from sandbox.serve.plugin import MxSandbox
from tests.helpers import TWO_MX_ZONE
from tests.integration.test_served_changes import mx_of, send
from tests.integration.user_sender import make_message

SCENARIO = {"zones": {"example.test": TWO_MX_ZONE}, "hosts": {"mx1.example.test": "refuse"}}
CONTROL = ("127.0.0.1", 0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def served(mx_sandbox: MxSandbox, scenario: dict[str, Any] | None = None) -> ServedScenario:
    return await mx_sandbox(scenario or SCENARIO, control=CONTROL)


async def call(
    http: aiohttp.ClientSession, sb: ServedScenario, method: str, path: str, **options: Any
) -> tuple[int, Any]:
    async with http.request(method, f"{sb.control_url}/api/v1{path}", **options) as answer:
        assert answer.content_type == "application/json"
        return answer.status, await answer.json()


async def smtp_to(sb: ServedScenario, host: str) -> None:
    await aiosmtplib.send(
        make_message(),
        sender="bob@example.net",
        recipients=["alice@example.test"],
        hostname=sb.address_of(host),
        port=sb.smtp_port,
        local_hostname="sender.example.net",
        start_tls=False,
        timeout=10,
    )


# --- GET /api/v1/world ---------------------------------------------------------------------------


async def test_world_says_where_everything_listens(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await served(mx_sandbox)
    status, world = await call(http, sb, "GET", "/world")
    assert status == 200
    assert (world["dns"]["host"], world["dns"]["port"]) == sb.dns
    assert world["smtp_port"] == sb.smtp_port
    assert (world["control"]["host"], world["control"]["port"]) == sb.control
    assert world["zones"] == ["example.test"]
    assert [
        (h["name"], h["zone_address"], h["address"], h["port"], h["behaviour"])
        for h in world["hosts"]
    ] == [
        (
            "mx1.example.test",
            "192.0.2.10",
            sb.address_of("mx1.example.test"),
            sb.smtp_port,
            "refuse",
        ),
        (
            "mx2.example.test",
            "192.0.2.11",
            sb.address_of("mx2.example.test"),
            sb.smtp_port,
            "accept",
        ),
    ]


# --- PUT /api/v1/hosts/{name}/behaviour -----------------------------------------------------------


async def test_a_host_switched_from_refuse_to_accept_takes_the_mail(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await served(mx_sandbox)
    assert await send(sb) == "delivered mx2.example.test"
    status, body = await call(http, sb, "PUT", "/hosts/mx1.example.test/behaviour", json="accept")
    assert status == 200
    assert [(h["name"], h["behaviour"]) for h in body["hosts"]] == [("mx1.example.test", "accept")]
    assert await send(sb) == "delivered mx1.example.test"
    # The first message tried the refusing mx1 before mx2 (the sandbox sees that attempt
    # where it may watch SYNs; elsewhere the sender's DNS look-up stands for it).
    sb.assert_tried_in_order(["mx1.example.test", "mx2.example.test", "mx1.example.test"])


async def test_a_scripted_behaviour_and_phases_counted_from_the_request(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await served(mx_sandbox)
    phases = [{"until": "1h", "do": {"rcpt": "451 4.3.0 later"}}, {"do": "accept"}]
    status, body = await call(http, sb, "PUT", "/hosts/192.0.2.10/behaviour", json=phases)
    assert (status, body["hosts"][0]["behaviour"]) == (200, "rcpt→451")
    _, got = await call(http, sb, "GET", "/hosts/mx1.example.test/behaviour")
    assert got == body
    assert await send(sb) == "delivered mx2.example.test"
    assert "RCPT→451" in sb.sessions("mx1.example.test")[0].outline


@pytest.mark.parametrize(
    "behaviour",
    [
        {"rcpt": "999 4.3.0 later"},
        "sometimes",
        {"greylist": "soon"},
        42,
        [],
        {"delay": {"rcpt": []}},
    ],
)
async def test_a_wrong_behaviour_gets_the_loaders_own_sentence(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession, behaviour: object
) -> None:
    sb = await served(mx_sandbox)
    with pytest.raises(ScenarioError) as loader:
        scenario_from_mapping({"name": "x", **SCENARIO, "hosts": {"mx1.example.test": behaviour}})
    status, body = await call(http, sb, "PUT", "/hosts/mx1.example.test/behaviour", json=behaviour)
    assert status == 400
    # The loader's sentence, with the key path below the host (no file, no host key).
    below = str(loader.value).split("hosts.mx1.example.test", 1)[1]
    assert body == {"error": below.lstrip(".").removeprefix(": ")}
    assert (
        sb.sessions() == []
        and (await call(http, sb, "GET", "/world"))[1]["hosts"][0]["behaviour"] == "refuse"
    )


# --- GET /api/v1/hosts/{name}/sessions and /messages ----------------------------------------------


async def test_sessions_have_commands_replies_and_transcript(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await served(mx_sandbox)
    await smtp_to(sb, "mx2.example.test")
    status, body = await call(http, sb, "GET", "/hosts/mx2.example.test/sessions")
    assert status == 200 and body["host"] == "mx2.example.test"
    (session,) = body["sessions"]
    (expected,) = sb.sessions("mx2.example.test")
    assert session["outline"] == expected.outline
    assert session["commands"] == list(expected.commands)
    assert session["replies"] == list(expected.replies)
    assert [line for _, _, line in session["transcript"]] == [x for _, _, x in expected.transcript]
    assert session["commands"][1].startswith("MAIL FROM:<bob@example.net>")
    assert session["address"] == sb.address_of("mx2.example.test")
    assert (await call(http, sb, "GET", "/hosts/mx1.example.test/sessions"))[1]["sessions"] == []


async def test_messages_have_their_envelope_and_rfc5322_text(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await served(mx_sandbox)
    await smtp_to(sb, "mx2.example.test")
    status, body = await call(http, sb, "GET", "/hosts/mx2.example.test/messages")
    assert status == 200
    (message,) = body["messages"]
    assert (message["sender"], message["recipients"]) == ("bob@example.net", ["alice@example.test"])
    assert message["message_id"] == sb.mailbox("mx2.example.test")[0].message_id
    parsed = message_from_string(message["text"])
    assert (parsed["Subject"], parsed.get_payload().strip()) == ("Hello", "Hi Alice.")
    assert message["size"] == len(sb.mailbox()[0].data)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/hosts/mx9.example.test/sessions"),
        ("GET", "/hosts/mx9.example.test/messages"),
        ("GET", "/hosts/mx9.example.test/behaviour"),
        ("PUT", "/hosts/mx9.example.test/behaviour"),
    ],
)
async def test_an_unknown_host_is_a_404_naming_the_known_ones(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    sb = await served(mx_sandbox)
    status, body = await call(http, sb, method, path, json="accept")
    assert status == 404
    assert body["hosts"] == ["mx1.example.test", "mx2.example.test"]
    assert "mx9.example.test" in body["error"] and "mx1.example.test" in body["error"]


# --- DNS ------------------------------------------------------------------------------------------


async def test_dns_queries_are_listed_in_order_as_trace_writes_them(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await served(mx_sandbox)
    await mx_of(sb)
    await mx_of(sb, "example.test.")
    status, body = await call(http, sb, "GET", "/dns/queries")
    assert status == 200
    assert body["queries"] == [event_to_dict(e) for e in sb.dns_queries()]
    assert [(q["kind"], q["name"], q["rdtype"], q["rcode"]) for q in body["queries"]] == [
        ("dns_served", "example.test", "MX", "NOERROR")
    ] * 2


async def test_a_dns_behaviour_is_set_over_http(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await served(mx_sandbox)
    status, body = await call(http, sb, "PUT", "/dns/Example.Test.", json="nxdomain")
    assert (status, body) == (200, {"name": "example.test", "behaviour": "nxdomain"})
    assert (await call(http, sb, "GET", "/world"))[1]["dns_behaviours"] == {
        "example.test": "nxdomain"
    }
    status, body = await call(http, sb, "PUT", "/dns/example.test", json="maybe")
    assert status == 400 and "'maybe' is not a DNS behaviour" in body["error"]
    status, body = await call(http, sb, "PUT", "/dns/bad_label!", json="answer")
    assert status == 400 and "is not a domain name" in body["error"]
    await call(
        http,
        sb,
        "PUT",
        "/dns/example.test",
        json=[{"until": "1h", "do": "answer"}, {"do": "servfail"}],
    )
    assert await mx_of(sb) == ["10 mx1.example.test.", "20 mx2.example.test."]


async def test_zone_text_is_served_as_plain_text_or_json(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await served(mx_sandbox)
    text = "$TTL 60\n@ IN MX 30 mx3\nmx3 IN A 192.0.2.30\n"
    status, body = await call(
        http, sb, "PUT", "/zones/example.test", data=text, headers={"Content-Type": "text/plain"}
    )
    assert status == 200
    assert [(p["name"], p["zone_address"]) for p in body["added"]] == [
        ("mx3.example.test", "192.0.2.30")
    ]
    assert [f["rule"] for f in body["findings"]] == ["single-mx"]
    assert await mx_of(sb) == ["30 mx3.example.test."]
    assert await send(sb) == "delivered mx3.example.test"

    status, body = await call(
        http,
        sb,
        "PUT",
        "/zones/example.test",
        json="@ IN MX 10 mx2\n@ IN MX 10 mx2\nmx2 IN A 192.0.2.11\n",
    )
    assert status == 200 and body["added"] == []
    assert {f["rule"] for f in body["findings"]} >= {"duplicate-record", "no-ttl"}
    status, body = await call(http, sb, "PUT", "/zones/example.test", data="@ IN MX x y\n")
    assert status == 400 and "zone line 1" in body["error"]
    assert await mx_of(sb) == ["10 mx2.example.test."]


# --- POST /api/v1/reset ---------------------------------------------------------------------------


async def test_reset_forgets_what_the_hosts_saw(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await served(mx_sandbox)
    await send(sb)
    assert sb.sessions() and sb.dns_queries()
    status, body = await call(http, sb, "POST", "/reset")
    assert status == 200 and body["reset"] is True
    assert sb.sessions() == [] and sb.mailbox() == [] and sb.dns_queries() == []
    _, world = await call(http, sb, "GET", "/world")
    assert [(h["sessions"], h["accepted"]) for h in world["hosts"]] == [(0, 0), (0, 0)]
    assert [h["behaviour"] for h in world["hosts"]] == ["refuse", "accept"]


# --- GET /api/v1/events ---------------------------------------------------------------------------


async def read_events(answer: aiohttp.ClientResponse, kinds: set[str]) -> list[dict[str, Any]]:
    """SSE messages until one of each kind in ``kinds`` has come."""
    found: list[dict[str, Any]] = []
    async for raw in answer.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            found.append(json.loads(line[6:]))
            kinds.discard(found[-1]["kind"])
            if not kinds:
                return found
    raise AssertionError(f"the stream ended before {kinds}: {found}")


async def test_events_stream_the_objects_trace_writes(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await served(mx_sandbox)
    async with http.get(f"{sb.control_url}/api/v1/events") as answer:
        assert answer.status == 200
        assert answer.content_type == "text/event-stream"
        await answer.content.readuntil(b"\n\n")  # the stream is open: events from here on
        sending = asyncio.create_task(send(sb))
        streamed = await read_events(answer, {"host_session", "host_accepted"})
        assert await sending == "delivered mx2.example.test"
    expected = [event_to_dict(e) for e in sb.events]
    assert streamed == expected[: len(streamed)]
    kinds = [e["kind"] for e in streamed]
    assert kinds[0] == "dns_served" and "host_accepted" in kinds


# --- GET /api/v1/openapi.json ---------------------------------------------------------------------


async def test_the_openapi_document_validates_and_lists_every_route(
    http: aiohttp.ClientSession,
) -> None:
    world = ServedWorld(scenario_from_mapping({"name": "x", **SCENARIO}))
    async with world, ControlServer(world) as control:
        await control.start()
        async with http.get(f"{control.url}/api/v1/openapi.json") as answer:
            assert answer.status == 200
            document = await answer.json()
        routed = {(r.method.lower(), r.resource.canonical) for r in control.routes}
    validate(document)
    assert document["openapi"].startswith("3.")
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    # HEAD comes with every GET; the live page's files are not part of the API.
    routed -= {("get", "/live/report.css"), ("get", "/live/{file}")}
    assert {(m, p) for m, p in routed if m != "head"} == described
