"""The live page of the control API, in headless Chromium (Debian's package), driven over the
Chrome DevTools Protocol (aiohttp's WebSocket client is the whole CDP client).

The page is loaded from a sandbox served in the test's own loop. The test checks that a lane
per host address is drawn, that an SMTP session shows up as a mark in its lane (polling the
DOM inside the page with a generous deadline, and reporting how long after the session it
was drawn), that a behaviour switched from the page is what the sandbox then does, that
Reset clears the lanes, and that the page logged no console message and threw nothing.
``scripts/setup-system`` installs Chromium; without it the test is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest

from sandbox import Event, HostSession, ServedScenario
from sandbox.serve.plugin import MxSandbox
from tests.integration.test_control_api import SCENARIO
from tests.integration.test_served_changes import send
from tests.integration.user_sender import make_message

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DEADLINE_MS = 10_000  # generous: the check is that a session appears, not how fast
SESSIONS = 5

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/setup-system installs it)"
)


class Cdp:
    """Just enough of the Chrome DevTools Protocol: calls, and the events it sends."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._event_came = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        answer = self._waiting[self._next] = asyncio.get_running_loop().create_future()
        await self._socket.send_json(message)
        async with asyncio.timeout(30):
            return await answer

    async def wait_for_event(self, method: str) -> dict[str, Any]:
        async with asyncio.timeout(30):
            while True:
                for event in self.events:
                    if event["method"] == method:
                        return event
                self._event_came.clear()
                await self._event_came.wait()

    async def evaluate(self, session: str, expression: str) -> Any:
        """The value of ``expression`` in the page (a promise is awaited)."""
        answer = await self.call(
            "Runtime.evaluate",
            session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        assert "exceptionDetails" not in answer, answer
        return answer["result"].get("value")

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"])
                if "error" in data:
                    future.set_exception(AssertionError(f"CDP error: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            else:
                self.events.append(data)
                self._event_came.set()

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Cdp]:
    """Headless Chromium with remote debugging on a free loopback port; its CDP client."""
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(60):
            while not (line := (await process.stderr.readline()).decode()).startswith(
                "DevTools listening on "
            ):
                assert line, "chromium ended before it said where DevTools listens"
        # Keep reading what it says, so that a full pipe never stalls it.
        drain = asyncio.create_task(process.stderr.read())
        url = line.removeprefix("DevTools listening on ").strip()
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url, max_msg_size=0) as socket,
        ):
            cdp = Cdp(socket)
            try:
                yield cdp
                with contextlib.suppress(aiohttp.ClientError, ConnectionError, TimeoutError):
                    await cdp.call("Browser.close")
            finally:
                await cdp.close()
        async with asyncio.timeout(30):
            await process.wait()
        await drain
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def open_page(cdp: Cdp, url: str) -> str:
    """A new tab on ``url``, loaded and the live page ready; its CDP session id."""
    target = await cdp.call("Target.createTarget", url="about:blank")
    attached = await cdp.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
    session = str(attached["sessionId"])
    for domain in ("Runtime", "Log", "Page"):
        await cdp.call(f"{domain}.enable", session)
    await cdp.call("Page.navigate", session, url=url)
    await cdp.wait_for_event("Page.loadEventFired")
    assert await cdp.evaluate(session, "window.__live.ready") is True
    return session


def console_messages(cdp: Cdp) -> list[dict[str, Any]]:
    """Everything the page said on its console or threw, and the browser's own log lines."""
    methods = ("Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded")
    return [event for event in cdp.events if event["method"] in methods]


def mark_drawn(lane: str, count: int) -> str:
    """JS: waits in the page, up to the deadline, until lane ``lane`` has ``count`` marks;
    the time the last was drawn (ms since the epoch), or null."""
    return f"""new Promise(function (resolve) {{
      var deadline = Date.now() + {DEADLINE_MS};
      (function look() {{
        var marks = document.querySelectorAll('[data-lane="{lane}"] [data-session]');
        if (marks.length >= {count}) {{ resolve(Number(marks[{count} - 1].dataset.shownAt)); }}
        else if (Date.now() > deadline) {{ resolve(null); }}
        else {{ setTimeout(look, 2); }}
      }})();
    }})"""


async def smtp_session(sb: ServedScenario, host: str) -> None:
    await aiosmtplib.send(
        make_message(),
        sender="bob@example.net",
        recipients=["alice@example.test"],
        hostname=sb.address_of(host),
        port=sb.smtp_port,
        start_tls=False,
        timeout=10,
    )


async def test_the_live_page_draws_sessions_as_they_happen_and_switches_hosts(
    mx_sandbox: MxSandbox, tmp_path: Path
) -> None:
    ended: list[float] = []  # wall time (ms) when each session ended, as the host saw it

    def note(event: Event) -> None:
        if isinstance(event, HostSession):
            ended.append(time.time() * 1000)

    sb = await mx_sandbox(SCENARIO, control=("127.0.0.1", 0), on_event=note)
    async with chromium(tmp_path / "profile") as cdp:
        page = await open_page(cdp, sb.control_url + "/")
        lanes = await cdp.evaluate(
            page, "[...document.querySelectorAll('[data-lane]')].map(l => l.dataset.lane)"
        )
        assert lanes == ["192.0.2.10", "192.0.2.11"]

        # Sessions appear in their lane: each drawn at most DEADLINE_MS after it ended.
        latencies = []
        for count in range(1, SESSIONS + 1):
            await smtp_session(sb, "mx2.example.test")
            shown = await cdp.evaluate(page, mark_drawn("192.0.2.11", count))
            assert shown is not None, f"session {count} was not drawn within {DEADLINE_MS} ms"
            latencies.append(shown - ended[count - 1])
        each = ", ".join(f"{max(x, 0):.0f}" for x in latencies)  # Date.now() counts whole ms
        print(
            f"\nlive page: a session drawn {statistics.median(latencies):.0f} ms after it "
            f"ended (median of {SESSIONS}; each: {each})"
        )
        outcome = await cdp.evaluate(
            page,
            "document.querySelector('[data-lane=\"192.0.2.11\"] [data-session]').dataset.outcome",
        )
        assert outcome == "accepted"

        # mx1 refuses; switched to accept from the page, it takes the next message.
        await cdp.evaluate(
            page,
            """(function () {
              var lane = document.querySelector('[data-lane="192.0.2.10"]');
              var preset = lane.querySelector('.preset');
              preset.value = '"accept"';
              preset.dispatchEvent(new Event('change'));
              lane.querySelector('button[type=submit]').click();
              return true;
            })()""",
        )
        switched = await cdp.evaluate(
            page,
            f"""new Promise(function (resolve) {{
              var deadline = Date.now() + {DEADLINE_MS};
              (function look() {{
                var lane = document.querySelector('[data-lane="192.0.2.10"]');
                if (lane.dataset.behaviour === 'accept') {{ resolve(true); }}
                else if (Date.now() > deadline) {{ resolve(lane.dataset.behaviour); }}
                else {{ setTimeout(look, 5); }}
              }})();
            }})""",
        )
        assert switched is True
        assert await send(sb) == "delivered mx1.example.test"
        assert await cdp.evaluate(page, mark_drawn("192.0.2.10", 1)) is not None

        # Reset from the page: the sandbox forgets, and the lanes empty.
        await cdp.evaluate(page, "document.getElementById('reset').click(), true")
        await sb.wait_for(lambda: sb.sessions() == [], timeout=10)
        left = await cdp.evaluate(
            page,
            f"""new Promise(function (resolve) {{
              var deadline = Date.now() + {DEADLINE_MS};
              (function look() {{
                var n = document.querySelectorAll('[data-session]').length;
                if (n === 0 || Date.now() > deadline) {{ resolve(n); }}
                else {{ setTimeout(look, 5); }}
              }})();
            }})""",
        )
        assert left == 0
        assert console_messages(cdp) == []
