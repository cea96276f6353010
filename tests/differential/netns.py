"""Network namespaces for the real MTAs: one per case, with only ``lo``.

Nothing in such a namespace can reach another machine, and ports 25 and 53 are free in it:
``mxsandbox serve`` listens on 127.0.0.1:53 (DNS) and on port 25 of its hosts' loopback
addresses, and ``/etc/netns/NAME/resolv.conf`` (bind-mounted over /etc/resolv.conf by
``ip netns exec``) sends every resolver in the namespace to the sandbox's DNS server.
``options trust-ad`` lets a DANE-aware MTA believe the AD bit later on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["NETNS_ETC", "NamespaceUnavailable", "namespace"]

NETNS_ETC = Path("/etc/netns")
COMMAND_TIMEOUT = 20.0
# A busy machine (fifty deliveries asking at once) must not turn into DNS timeouts: the
# sandbox's DNS never times out unless a case says so.
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:3 attempts:3 trust-ad\n"


class NamespaceUnavailable(RuntimeError):
    """This machine cannot make network namespaces (no root, no `ip`, no CAP_SYS_ADMIN)."""


async def _ip(*args: str, check: bool = True) -> tuple[int, str]:
    try:
        process = await asyncio.create_subprocess_exec(
            "ip",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except FileNotFoundError as error:
        raise NamespaceUnavailable("the `ip` command (iproute2) is missing") from error
    async with asyncio.timeout(COMMAND_TIMEOUT):
        out, _ = await process.communicate()
    text = out.decode(errors="replace").strip()
    if check and process.returncode != 0:
        raise NamespaceUnavailable(f"ip {' '.join(args)}: {text}")
    assert process.returncode is not None
    return process.returncode, text


async def kill_everything_in(name: str) -> None:
    """SIGKILL, by pid, what still runs in our namespace (only our processes are there)."""
    _, listed = await _ip("netns", "pids", name, check=False)
    for pid in listed.split():
        if pid.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


@contextlib.asynccontextmanager
async def namespace(prefix: str = "mxdiff") -> AsyncIterator[str]:
    """A fresh namespace with ``lo`` up and its own resolv.conf; removed afterwards, with
    whatever still runs in it."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    await _ip("netns", "add", name)
    etc = NETNS_ETC / name
    try:
        await _ip("-n", name, "link", "set", "lo", "up")
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(RESOLV_CONF)
        yield name
    finally:
        await kill_everything_in(name)
        await _ip("netns", "del", name, check=False)
        shutil.rmtree(etc, ignore_errors=True)
        with contextlib.suppress(OSError):  # another case's directory may still be there
            NETNS_ETC.rmdir()


def inside(name: str) -> tuple[str, ...]:
    """The command prefix that runs a program in the namespace."""
    return ("ip", "netns", "exec", name)
