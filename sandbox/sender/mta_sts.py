"""The sender's MTA-STS policy fetch (RFC 8461 §3.3), with every failure as data.

The sender asks ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` for a domain whose
``_mta-sts`` TXT record it found, over a connection to wherever the sandbox plays that host
(its address map gives the loopback socket). The rules of §3.3:

- the certificate must be valid for ``mta-sts.<domain>`` and chain to a trusted CA (here: the
  world's CA), else the fetch fails with RFC 8460's ``sts-webpki-invalid``;
- only ``200`` gives a policy: redirects are not followed (§3.3), anything else is
  ``sts-policy-fetch-error``, as are a timeout and a lost connection;
- the body is at most ``max_bytes`` (the RFC suggests senders bound it; 64 KiB here) and
  UTF-8, else ``sts-policy-invalid``.

What the text says is ``core.mta_sts.parse_policy``'s business. Discovery (the TXT record
through the stub resolver) and the policy cache (by ``id`` and ``max_age``) join this module
when the sender honours MTA-STS (``sender: {mta_sts: honor}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from sandbox.core.tlsrpt import ResultType

__all__ = ["MAX_POLICY_BYTES", "FetchFailed", "PolicyFetched", "fetch_policy"]

MAX_POLICY_BYTES = 64 * 1024
_HEAD_LIMIT = 16 * 1024
WELL_KNOWN = "/.well-known/mta-sts.txt"


@dataclass(frozen=True, slots=True)
class PolicyFetched:
    text: str


@dataclass(frozen=True, slots=True)
class FetchFailed:
    """Why there is no policy, as RFC 8460 names it, and in words."""

    result: ResultType
    detail: str


async def fetch_policy(
    domain: str,
    connect_to: tuple[str, int],
    context: ssl.SSLContext,
    *,
    timeout: float = 60.0,
    max_bytes: int = MAX_POLICY_BYTES,
) -> PolicyFetched | FetchFailed:
    """GET the policy of ``domain`` from the socket ``connect_to`` (host, port), checking the
    certificate against ``context`` for the name ``mta-sts.<domain>``."""
    site = f"mta-sts.{domain.lower().rstrip('.')}"
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(site, connect_to, context, max_bytes)
    except ssl.SSLCertVerificationError as error:
        return FetchFailed("sts-webpki-invalid", f"{site}: {error.verify_message or error}")
    except TimeoutError:
        return FetchFailed("sts-policy-fetch-error", f"{site}: no answer within {timeout:g} s")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
        return FetchFailed("sts-policy-fetch-error", f"{site}: {error or type(error).__name__}")


async def _fetch(
    site: str, connect_to: tuple[str, int], context: ssl.SSLContext, max_bytes: int
) -> PolicyFetched | FetchFailed:
    host, port = connect_to
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=site, limit=_HEAD_LIMIT
    )
    try:
        request = f"GET {WELL_KNOWN} HTTP/1.1\r\nHost: {site}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        status, headers = _head(await reader.readuntil(b"\r\n\r\n"))
        if status != 200:
            why = "a redirect, which MTA-STS never follows" if 300 <= status < 400 else "no policy"
            return FetchFailed("sts-policy-fetch-error", f"{site}: HTTP {status}: {why}")
        body = await _body(reader, headers, max_bytes)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if body is None:
        return FetchFailed("sts-policy-invalid", f"{site}: the policy is over {max_bytes} bytes")
    try:
        return PolicyFetched(body.decode("utf-8"))
    except UnicodeDecodeError:
        return FetchFailed("sts-policy-invalid", f"{site}: the policy is not UTF-8")


def _head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _body(
    reader: asyncio.StreamReader, headers: dict[str, str], max_bytes: int
) -> bytes | None:
    """The body (by Content-Length, else up to the end), or None when it is too long."""
    length = headers.get("content-length", "")
    if length.isdigit():
        if int(length) > max_bytes:
            return None
        return await reader.readexactly(int(length))
    body = await reader.read(max_bytes + 1)
    while len(body) <= max_bytes and (more := await reader.read(max_bytes + 1 - len(body))):
        body += more
    return None if len(body) > max_bytes else body
