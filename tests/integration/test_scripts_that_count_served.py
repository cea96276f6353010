"""Scripts that count, in serve mode: phases with ``times``, mailbox replies that count, the
rate limits and the ESMTP extensions, through ``ServedScenario`` and through the control API's
``PUT /api/v1/hosts/{name}/behaviour``. The clients speak SMTP on real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sandbox import ScenarioError, ServedScenario, scenario_from_mapping
from sandbox.serve.plugin import MxSandbox
from tests.helpers import TWO_MX_ZONE
from tests.integration.serve_process import PICK_PORTS, serve

CONTROL = ("127.0.0.1", 0)


def world(hosts: dict[str, Any]) -> dict[str, Any]:
    return {"zones": {"example.test": TWO_MX_ZONE}, "hosts": hosts}


class Client:
    """A line-at-a-time SMTP client: what a host answers, command by command."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def to(cls, sb: ServedScenario, host: str = "mx1.example.test") -> Client:
        reader, writer = await asyncio.open_connection(sb.address_of(host), sb.smtp_port)
        return cls(reader, writer)

    async def reply(self) -> str:
        """The next reply, its lines joined by newlines."""
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode().rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                return "\n".join(lines)

    async def say(self, command: str) -> str:
        self.writer.write(command.encode() + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def greeting(sb: ServedScenario, host: str = "mx1.example.test") -> str:
    client = await Client.to(sb, host)
    try:
        return (await client.reply())[:3]
    finally:
        await client.close()


async def connects(sb: ServedScenario, host: str = "mx1.example.test") -> bool:
    try:
        client = await Client.to(sb, host)
    except ConnectionRefusedError:
        return False
    await client.reply()
    await client.close()
    return True


def blind(hosts: dict[str, Any], **options: Any) -> ServedScenario:
    """A served world that does not watch the SYNs, as on a platform that cannot."""
    scenario = scenario_from_mapping({"name": "blind", **world(hosts)})
    return ServedScenario(scenario, watch_connects=False, **options)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def put_behaviour(
    http: aiohttp.ClientSession, sb: ServedScenario, host: str, behaviour: Any
) -> tuple[int, Any]:
    url = f"{sb.control_url}/api/v1/hosts/{host}/behaviour"
    async with http.put(url, json=behaviour) as answer:
        return answer.status, await answer.json()


# --- times --------------------------------------------------------------------------------------


async def test_a_served_host_fails_its_first_two_sessions(mx_sandbox: MxSandbox) -> None:
    phases = [{"times": 2, "do": {"greeting": "421 4.3.2 busy"}}, {"do": "accept"}]
    sb = await mx_sandbox(world({"mx1.example.test": phases}))
    assert [await greeting(sb) for _ in range(4)] == ["421", "421", "220", "220"]
    assert sb.totals("mx1.example.test").sessions == 4
    assert [e.kind for e in sb.events if e.kind == "host_phase"] == ["host_phase"]


async def test_set_behaviour_counts_from_the_call_and_reset_counts_again(
    mx_sandbox: MxSandbox,
) -> None:
    sb = await mx_sandbox(world({}))
    assert await greeting(sb) == "220"
    sb.set_behaviour(
        "mx1.example.test", [{"times": 1, "do": {"greeting": "554 5.7.1 no"}}, {"do": "accept"}]
    )
    assert [await greeting(sb) for _ in range(2)] == ["554", "220"]
    sb.reset()
    assert [await greeting(sb) for _ in range(2)] == ["554", "220"]


async def test_a_refusing_phase_counts_the_attempts_it_sees(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(
        world({"mx1.example.test": [{"times": 2, "do": "refuse"}, {"do": "accept"}]})
    )
    if not sb.sees_connection_attempts:
        pytest.skip("this machine does not let the sandbox see SYNs (Linux and CAP_NET_RAW)")
    assert [await connects(sb) for _ in range(3)] == [False, False, True]
    assert len(sb.connection_attempts("mx1.example.test")) == 3


async def test_where_attempts_cannot_be_seen_a_refusing_phase_that_counts_is_refused(
    mx_sandbox: MxSandbox,
) -> None:
    counting = [{"times": 2, "do": "refuse"}, {"do": "accept"}]
    with pytest.raises(
        ScenarioError, match=r"hosts\.mx1\.example\.test\[0\]\.times: .*CAP_NET_RAW"
    ):
        async with blind({"mx1.example.test": counting}):
            pass
    async with blind({}) as sb:
        with pytest.raises(ScenarioError, match=r"\[0\]\.times: this phase ends after 2 refuse"):
            sb.set_behaviour("mx1.example.test", counting)
        assert await greeting(sb) == "220"  # nothing changed
        # A phase that a connection reaches counts sessions, which every platform sees.
        sb.set_behaviour("mx1.example.test", [{"times": 1, "do": "silent"}, {"do": "accept"}])


async def test_put_behaviour_takes_phases_that_count(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await mx_sandbox(world({}), control=CONTROL)
    phases = [{"times": 1, "do": {"greeting": "421 4.3.2 busy"}}, {"do": "accept"}]
    status, body = await put_behaviour(http, sb, "mx1.example.test", phases)
    assert (status, body["hosts"][0]["behaviour"]) == (200, "greeting→421")
    assert [await greeting(sb) for _ in range(2)] == ["421", "220"]
    status, body = await put_behaviour(
        http, sb, "mx1.example.test", [{"times": 0, "do": "refuse"}, {"do": "accept"}]
    )
    assert status == 400
    assert body["error"].startswith("[0].times: 0 is not a whole number of 1 or more")


async def test_put_behaviour_refuses_what_serve_cannot_count(
    http: aiohttp.ClientSession,
) -> None:
    async with blind({}, control=CONTROL) as sb:
        phases = [{"times": 3, "do": "timeout"}, {"do": "accept"}]
        status, body = await put_behaviour(http, sb, "mx1.example.test", phases)
        assert status == 400
        assert body["error"].startswith("[0].times: this phase ends after 3 timeout connection")
        assert "CAP_NET_RAW" in body["error"]
        assert await greeting(sb) == "220"


# --- mailbox replies that count -----------------------------------------------------------------


async def transaction(client: Client, *recipients: str) -> list[str]:
    assert (await client.say("EHLO client.example.net")).startswith("250")
    assert (await client.say("MAIL FROM:<bob@example.net>")).startswith("250")
    return [(await client.say(f"RCPT TO:<{r}>"))[:3] for r in recipients]


async def test_a_mailbox_answers_451_once_then_250(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await mx_sandbox(world({}), control=CONTROL)
    carol = [{"times": 1, "do": "451 4.2.0 busy"}, {"do": "250 2.1.5 ok"}]
    status, _ = await put_behaviour(
        http, sb, "mx1.example.test", {"recipients": {"carol@example.test": carol}}
    )
    assert status == 200
    client = await Client.to(sb)
    await client.reply()
    assert await transaction(
        client, "carol@example.test", "alice@example.test", "carol@example.test"
    ) == ["451", "250", "250"]
    await client.close()


# --- rate limits --------------------------------------------------------------------------------


async def test_a_connection_past_the_limit_is_greeted_421_and_closed(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await mx_sandbox(world({}), control=CONTROL)
    status, _ = await put_behaviour(http, sb, "mx1.example.test", {"max_connections": 1})
    assert status == 200
    first = await Client.to(sb)
    assert (await first.reply()).startswith("220")
    second = await Client.to(sb)
    assert await second.reply() == "421 4.7.0 Too many connections, try again later"
    assert await second.reader.read() == b""  # closed
    await second.close()
    await first.close()
    await sb.wait_for(lambda: sb.totals("mx1.example.test").sessions == 2)
    third = await Client.to(sb)
    await sb.wait_for(lambda: len(sb.sessions("mx1.example.test")) == 3)
    assert (await third.reply()).startswith("220")
    await third.close()


@pytest.mark.parametrize("how", ["scenario", "PUT"])
async def test_messages_past_the_limit_get_its_reply_at_mail(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession, how: str
) -> None:
    limit = {"max_messages": {"limit": 1, "reply": "452 4.5.3 One message per session"}}
    if how == "scenario":
        sb = await mx_sandbox(world({"mx1.example.test": limit}))
    else:
        sb = await mx_sandbox(world({}), control=CONTROL)
        status, body = await put_behaviour(http, sb, "mx1.example.test", limit)
        assert (status, body["hosts"][0]["behaviour"]) == (200, "at most 1 message a session")
    client = await Client.to(sb)
    await client.reply()
    assert await transaction(client, "alice@example.test") == ["250"]
    assert (await client.say("RSET")).startswith("250")
    assert await client.say("MAIL FROM:<bob@example.net>") == "452 4.5.3 One message per session"
    await client.close()


# --- ESMTP --------------------------------------------------------------------------------------


async def test_a_host_advertises_and_enforces_its_esmtp(
    mx_sandbox: MxSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await mx_sandbox(world({}), control=CONTROL)
    esmtp = {"size": 10240, "pipelining": True, "8bitmime": False, "smtputf8": False}
    status, body = await put_behaviour(http, sb, "mx1.example.test", {"esmtp": esmtp})
    assert (status, body["hosts"][0]["behaviour"]) == (
        200,
        "SIZE 10240, PIPELINING, no 8BITMIME, no SMTPUTF8",
    )
    client = await Client.to(sb)
    await client.reply()
    ehlo = (await client.say("EHLO client.example.net")).splitlines()
    assert [line[4:] for line in ehlo[1:]] == ["SIZE 10240", "PIPELINING", "STARTTLS", "HELP"]
    mail = "MAIL FROM:<bob@example.net>"
    assert await client.say(f"{mail} SIZE=20000") == (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    )
    unknown = "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
    assert await client.say(f"{mail} SMTPUTF8") == unknown
    assert await client.say(f"{mail} BODY=8BITMIME") == unknown
    assert await client.say("MAIL FROM:<jörg@bücher.test>") == (
        "553 5.6.7 Non-ASCII addresses not permitted without SMTPUTF8"
    )
    assert (await client.say(f"{mail} SIZE=1000")).startswith("250")
    assert (await client.say("RCPT TO:<alice@example.test>")).startswith("250")
    assert (await client.say("RCPT TO:<jörg@bücher.test>")).startswith("553 5.6.7")
    assert (await client.say("DATA")).startswith("354")
    content = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    client.writer.write(content * 11 + b".\r\n")
    assert await client.reply() == "552 5.3.4 Message size exceeds fixed maximum message size"
    await client.close()
    assert sb.totals("mx1.example.test").accepted == 0


async def test_a_served_scenario_without_size_says_so_and_smtputf8_is_used_when_offered(
    mx_sandbox: MxSandbox,
) -> None:
    sb = await mx_sandbox(world({"mx1.example.test": {"esmtp": {"size": False}}}))
    client = await Client.to(sb)
    await client.reply()
    ehlo = (await client.say("EHLO client.example.net")).splitlines()
    assert [line[4:] for line in ehlo[1:]] == ["8BITMIME", "SMTPUTF8", "STARTTLS", "HELP"]
    unknown = "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
    assert await client.say("MAIL FROM:<bob@example.net> SIZE=10") == unknown
    assert (await client.say("MAIL FROM:<jörg@bücher.test> SMTPUTF8")).startswith("250")
    assert (await client.say("RCPT TO:<zoë@example.test>")).startswith("250")
    await client.close()


# --- mxsandbox serve ----------------------------------------------------------------------------


async def test_mxsandbox_serve_counts_and_says_when_a_phase_ends() -> None:
    async with serve("scenarios/fail-first-two-then-pass.yaml", *PICK_PORTS) as served:
        mx1 = next(
            line.split()[2].rsplit(":", 1)[0]
            for line in served.lines
            if line.strip().startswith("mx1.example.test")
        )
        greetings = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection(mx1, served.smtp_port)
            greetings.append((await reader.readline()).decode()[:3])
            writer.close()
            await writer.wait_closed()
        assert greetings == ["421", "421", "220"]
        phase = await served.read_until("PHASE")
        assert phase.endswith(
            f"PHASE   mx1.example.test [{mx1}]: greeting→421 for 2 sessions; now: accept"
        )
        code, _, _ = await served.stop()
        assert code == 0
