"""The control API: a served world driven over HTTP and JSON, by a test in any language.

``mxsandbox serve FILE --control 127.0.0.1:0`` (or ``ServedScenario(…, control=…)``) runs
an aiohttp web server on the sandbox's own event loop, on loopback only. Its paths are a
contract that other people's tests are written against: add paths and fields, never break
these (``openapi.py`` describes them in OpenAPI 3, served at ``/api/v1/openapi.json``)::

    GET  /api/v1/world                     where everything listens, each host's behaviour now
    GET  /api/v1/hosts/{name}/behaviour    a host's behaviour now
    PUT  /api/v1/hosts/{name}/behaviour    body: a behaviour as under a scenario's hosts:
    GET  /api/v1/hosts/{name}/sessions     each session: commands, replies, transcript
    GET  /api/v1/hosts/{name}/messages     each accepted message: envelope and RFC 5322 text
    GET  /api/v1/dns/queries               every query served, in order
    PUT  /api/v1/dns/{name}                body: a DNS behaviour as under a scenario's dns:
    PUT  /api/v1/zones/{apex}              body: zone text (text/plain), or JSON as under zones:
    POST /api/v1/reset                     forget sessions, mailboxes, greylisting, events
    GET  /api/v1/events                    Server-Sent Events: the objects --trace writes
    GET  /api/v1/openapi.json              this API in OpenAPI 3
    GET  /                                 the live page (``live/``)

Every change is read by the scenario loader's own functions, so a mistake gets the sentence a
scenario file would get (400), and its phases count from the request. Every error is JSON,
``{"error": "one sentence"}``: an unknown host is a 404 that names the known ones, a body
over ``MAX_BODY`` a 413, a body that is not JSON a 400 that says where it stops being JSON.
Nothing a client sends stops the sandbox: an error inside a handler is a 500 whose sentence
says so, logged under ``sandbox.serve.control`` (so a test's ``ServerErrorTrap`` sees it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, NoReturn

from aiohttp import hdrs, web

from sandbox.core.addresses import ensure_loopback
from sandbox.errors import AddressInUse, BindError, NotInSandbox, ScenarioError, bind_error
from sandbox.events import event_to_dict
from sandbox.hosts.host import MailHost
from sandbox.hosts.transcript import StoredMessage
from sandbox.output.report.style import REPORT_CSS
from sandbox.scenario.lint import Finding
from sandbox.scenario.load import dns_behaviour, domain_name, host_behaviour, zone_phases
from sandbox.serve.openapi import openapi_document
from sandbox.serve.plan import Placement
from sandbox.serve.sse import BUFFER_BYTES, MAX_SUBSCRIBERS, EventStream, TooManyStreams
from sandbox.serve.world import ServedWorld, Session

__all__ = ["MAX_BODY", "ControlServer"]

logger = logging.getLogger(__name__)

API = "/api/v1"
# The largest request body read. A behaviour is a few hundred bytes; zone text with a thousand
# MX records about 40 kB. Larger bodies get 413 before they are read (aiohttp's
# client_max_size), so a client cannot make the sandbox hold more than this per request.
MAX_BODY = 1 << 20
# Seconds that stopping waits for requests still running (event streams end at once).
SHUTDOWN_TIMEOUT = 1.0
_LIVE = resources.files("sandbox.serve") / "live"
_LIVE_FILES = {"live.js": "text/javascript", "live.css": "text/css"}

_MAX_BODY_KEY = web.AppKey("max_body", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _ApiError(Exception):
    """An answer other than 2xx: its status and one sentence (plus fields for machines)."""

    def __init__(self, status: int, sentence: str, **extra: Any) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence
        self.extra = extra


def _fail(status: int, sentence: str, **extra: Any) -> NoReturn:
    raise _ApiError(status, sentence, **extra)


class ControlServer:
    """The control API and the live page of one ``ServedWorld``, on its event loop."""

    def __init__(
        self,
        sandbox: ServedWorld,
        *,
        max_body: int = MAX_BODY,
        max_streams: int = MAX_SUBSCRIBERS,
        stream_buffer: int = BUFFER_BYTES,
    ) -> None:
        self.sandbox = sandbox
        self.events = EventStream(
            sandbox.clock, max_subscribers=max_streams, buffer_bytes=stream_buffer
        )
        self._max_body = max_body
        self._runner: web.AppRunner | None = None
        self._routes: list[web.AbstractRoute] = []
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) where the API listens."""
        if self._address is None:
            raise RuntimeError("the control API is not started: await start() first")
        return self._address

    @property
    def routes(self) -> list[web.AbstractRoute]:
        """Every route the API serves (the suite checks them against the OpenAPI document)."""
        return list(self._routes)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (loopback only; port 0: a free one)."""
        ensure_loopback(host)
        app = web.Application(middlewares=[_json_errors], client_max_size=self._max_body)
        app[_MAX_BODY_KEY] = self._max_body
        self._add_routes(app)
        self._routes = list(app.router.routes())
        # handler_cancellation: a reader that closes its event stream ends its handler at once.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise bind_error("the control API", where, error, "choose another port") from error
        self._runner = runner
        address = runner.addresses[0]
        self._address = (address[0], address[1])
        self.sandbox.world.add_sink(self.events.publish)

    async def close(self) -> None:
        """End the event streams, then stop listening."""
        self.sandbox.world.remove_sink(self.events.publish)
        self.events.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ControlServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- routes --------------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        put = {"expect_handler": self._expect}
        app.router.add_get(f"{API}/world", self._world)
        app.router.add_get(f"{API}/hosts/{{name}}/behaviour", self._behaviour)
        app.router.add_put(f"{API}/hosts/{{name}}/behaviour", self._set_behaviour, **put)
        app.router.add_get(f"{API}/hosts/{{name}}/sessions", self._sessions)
        app.router.add_get(f"{API}/hosts/{{name}}/messages", self._messages)
        app.router.add_get(f"{API}/dns/queries", self._dns_queries)
        app.router.add_put(f"{API}/dns/{{name}}", self._set_dns, **put)
        app.router.add_put(f"{API}/zones/{{apex}}", self._set_zone, **put)
        app.router.add_post(f"{API}/reset", self._reset, **put)
        app.router.add_get(f"{API}/events", self._events)
        app.router.add_get(f"{API}/openapi.json", self._openapi)
        app.router.add_get("/", self._page)
        app.router.add_get("/live/report.css", self._report_css)
        app.router.add_get("/live/{file}", self._live_file)

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refuse a body over the limit before the client sends it."""
        if (request.content_length or 0) > self._max_body:
            return _error_response(413, _too_large(request.content_length, self._max_body))
        if request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    # -- what there is -------------------------------------------------------------------------

    async def _world(self, request: web.Request) -> web.Response:
        sandbox = self.sandbox
        dns_host, dns_port = sandbox.dns_address
        control_host, control_port = self.address
        return _json(
            {
                "scenario": sandbox.scenario.name,
                "title": sandbox.scenario.title,
                "t": round(sandbox.clock(), 6),
                "dns": {"host": dns_host, "port": dns_port},
                "smtp_port": sandbox.smtp_port,
                "control": {"host": control_host, "port": control_port},
                "hosts": [_host_json(h, p) for h, p in sandbox.placed()],
                "zones": list(sandbox.world.apexes),
                "dns_behaviours": {
                    name: sandbox.world.dns_behaviour(name).kind for name in sandbox.world.dns_names
                },
            }
        )

    async def _behaviour(self, request: web.Request) -> web.Response:
        return _json({"hosts": [_host_json(h, p) for h, p in self._placed(request)]})

    async def _sessions(self, request: web.Request) -> web.Response:
        self._placed(request)  # 404 for an unknown host
        key = self._host_key(request)
        return _json(
            {"host": key, "sessions": [_session_json(s) for s in self.sandbox.sessions(key)]}
        )

    async def _messages(self, request: web.Request) -> web.Response:
        key = self._host_key(request)
        found = [(s, p) for host, p in self._placed(request) for s in host.mailbox]
        found.sort(key=lambda pair: pair[0].t)
        return _json({"host": key, "messages": [_message_json(s, p) for s, p in found]})

    async def _dns_queries(self, request: web.Request) -> web.Response:
        return _json({"queries": [event_to_dict(e) for e in self.sandbox.dns_queries()]})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.events.serve(request)
        except TooManyStreams as busy:
            _fail(429, str(busy))

    async def _openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    # -- changes -------------------------------------------------------------------------------

    async def _set_behaviour(self, request: web.Request) -> web.Response:
        key = self._host_key(request)
        self._placed(request)  # 404 for an unknown host before the body is read
        body = await _json_body(
            request, 'a behaviour, such as "accept" or {"rcpt": "451 4.3.0 later"}'
        )
        timeline = _read(host_behaviour, body, request)
        _read(lambda _, source: self.sandbox.set_behaviour(key, timeline), body, request)
        return await self._behaviour(request)

    async def _set_dns(self, request: web.Request) -> web.Response:
        name = _read(
            lambda v, s: domain_name(v, s, "a DNS name"), request.match_info["name"], request
        )
        body = await _json_body(request, 'a DNS behaviour, such as "servfail" or "answer"')
        timeline = _read(dns_behaviour, body, request)
        self.sandbox.set_dns_behaviour(name, timeline)
        return _json({"name": name, "behaviour": self.sandbox.world.dns_behaviour(name).kind})

    async def _set_zone(self, request: web.Request) -> web.Response:
        apex = _read(
            lambda v, s: domain_name(v, s, "a zone's apex"), request.match_info["apex"], request
        )
        if request.content_type == "application/json":
            body = await _json_body(
                request, 'zone text, such as "@ IN MX 10 mx1\\nmx1 IN A 192.0.2.10\\n"'
            )
        else:
            body = await _text_body(request)
        zone = _read(lambda v, s: zone_phases(apex, v, s), body, request)
        findings = self.sandbox.check_zone(apex, zone)
        try:
            # Shielded: a client that goes away mid-change does not leave it half made.
            added = await asyncio.shield(self.sandbox.set_zone(apex, zone))
        except AddressInUse as busy:
            _fail(409, str(busy))
        except BindError as error:
            _fail(409, str(error))
        return _json(
            {
                "apex": apex,
                "findings": [_finding_json(f) for f in findings],
                "added": [_placement_json(p) for p in added],
            }
        )

    async def _reset(self, request: web.Request) -> web.Response:
        self.sandbox.reset()
        return _json({"reset": True, "t": round(self.sandbox.clock(), 6)})

    # -- the live page -------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        page = (_LIVE / "index.html").read_text(encoding="utf-8")
        return web.Response(text=page, content_type="text/html", headers=_NO_STORE)

    async def _report_css(self, request: web.Request) -> web.Response:
        return web.Response(text=REPORT_CSS, content_type="text/css", headers=_NO_STORE)

    async def _live_file(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        kind = _LIVE_FILES.get(name)
        if kind is None:
            _fail(404, f"no file {name} in the live page; it has {', '.join(sorted(_LIVE_FILES))}")
        text = (_LIVE / name).read_text(encoding="utf-8")
        return web.Response(text=text, content_type=kind, headers=_NO_STORE)

    # -- inside --------------------------------------------------------------------------------

    def _host_key(self, request: web.Request) -> str:
        return request.match_info["name"].lower().rstrip(".")

    def _placed(self, request: web.Request) -> list[tuple[MailHost, Placement]]:
        try:
            return self.sandbox.placed(self._host_key(request))
        except NotInSandbox as missing:
            names = sorted({p.name for p in self.sandbox.placements})
            _fail(404, str(missing), hosts=names)


_NO_STORE = {"Cache-Control": "no-store"}


# --- requests and answers --------------------------------------------------------------------


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer other than 2xx is ``{"error": "one sentence"}``; nothing a client sends
    stops the server."""
    try:
        return await handler(request)
    except _ApiError as error:
        return _error_response(error.status, error.sentence, **error.extra)
    except web.HTTPException as http:
        if http.status < 400:
            raise
        return _error_response(http.status, _http_sentence(http, request))
    except Exception as error:
        logger.exception("control API: %s %s failed", request.method, request.path)
        return _error_response(
            500,
            f"the sandbox failed on {request.method} {request.path} "
            f"({type(error).__name__}: {error}); this is a bug in the sandbox, not in the request",
        )


def _http_sentence(http: web.HTTPException, request: web.Request) -> str:
    if isinstance(http, web.HTTPRequestEntityTooLarge):
        return _too_large(request.content_length, request.app[_MAX_BODY_KEY])
    if isinstance(http, web.HTTPNotFound):
        return (
            f"no such path: {request.path}; the API's paths are listed at "
            f"{API}/openapi.json, and the live page is at /"
        )
    if isinstance(http, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(http.allowed_methods))
        return f"{request.method} is not allowed on {request.path}; use {allowed}"
    return f"{http.reason} ({request.method} {request.path})"


def _too_large(length: int | None, limit: int) -> str:
    size = f" of {length} bytes" if length is not None else ""
    return f"the request body{size} is larger than the {limit} bytes the API reads; send less"


def _error_response(status: int, sentence: str, **extra: Any) -> web.Response:
    return _json({"error": sentence, **extra}, status=status)


def _json(data: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, ensure_ascii=False),
        status=status,
        content_type="application/json",
        headers=_NO_STORE,
    )


async def _text_body(request: web.Request) -> str:
    raw = await request.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        _fail(400, "the body is not UTF-8 text; send it in UTF-8")


async def _json_body(request: web.Request, example: str) -> object:
    text = await _text_body(request)
    if not text.strip():
        _fail(400, f"the body is empty; send {example}, as JSON")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        _fail(
            400,
            f"the body is not JSON ({error.msg} at line {error.lineno} column {error.colno}); "
            f"send {example}",
        )
    except ValueError as error:
        _fail(400, f"the body is not JSON as the API reads it ({error}); send {example}")
    except RecursionError:
        _fail(400, f"the body nests too deeply to be read; send {example}")


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def _read(read: Callable[[object, str], Any], value: object, request: web.Request) -> Any:
    """``read(value, source)`` from the scenario loader; its mistake is a 400 with the
    loader's sentence (the key path and what to do, without a file name)."""
    try:
        return read(value, f"{request.method} {request.path}")
    except ScenarioError as error:
        _fail(400, f"{error.key}: {error.message}" if error.key else error.message)
    except RecursionError:
        _fail(400, "the body nests too deeply to be read")


# --- the shapes ------------------------------------------------------------------------------


def _placement_json(placement: Placement) -> dict[str, Any]:
    return {
        "name": placement.name,
        "zone_address": placement.zone_address,
        "address": placement.address,
        "port": placement.port,
        "answer": placement.answer,
    }


def _host_json(host: MailHost, placement: Placement) -> dict[str, Any]:
    """A host address as the ``ready`` record lists it, with what it has seen so far."""
    return {
        **_placement_json(placement),
        "behaviour": host.behaviour_now().describe(),
        "sessions": host.connections,
        "accepted": len(host.mailbox),
    }


def _at(host: str, address: str, zone_address: str) -> dict[str, Any]:
    """Which host address: its name, where it listens, the address its zone gives."""
    return {"host": host, "address": address, "zone_address": zone_address}


def _message_json(stored: StoredMessage, placement: Placement) -> dict[str, Any]:
    return {
        **_at(placement.name, placement.address, placement.zone_address),
        "t": round(stored.t, 6),
        "sender": stored.sender,
        "recipients": list(stored.recipients),
        "message_id": stored.message_id,
        "client": stored.client,
        "size": len(stored.data),
        "text": stored.data.decode("utf-8", errors="replace"),
    }


def _session_json(session: Session) -> dict[str, Any]:
    return {
        **_at(session.host, session.address, session.zone_address),
        "client": session.client,
        "opened": round(session.opened, 6),
        "closed": None if session.closed is None else round(session.closed, 6),
        "behaviour": session.behaviour,
        "outline": session.outline,
        "commands": list(session.commands),
        "replies": list(session.replies),
        "transcript": [[round(t, 6), side, line] for t, side, line in session.transcript],
    }


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "severity": finding.severity,
        "rule": finding.rule,
        "zone": finding.zone,
        "zone_line": finding.zone_line,
        "phase": finding.phase,
        "message": finding.message,
        "mend": finding.mend,
        "rfc": finding.rfc,
    }
