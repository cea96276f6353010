"""A real MTA against `mxsandbox serve`: Debian's Postfix, in a network namespace of its own.

The namespace has only ``lo``, so nothing can leave it, and ports 25 and 53 are free there:
the sandbox serves DNS on 127.0.0.1:53 and every mail host on port 25, and
``/etc/netns/NAME/resolv.conf`` points Postfix's resolver at the sandbox. Postfix runs from a
configuration directory of its own (``postfix -c DIR``), its queue in the test's temporary
directory and its smtp client out of chroot, with retry settings of a second or two so the
test stays short. The system's Postfix is never touched.

What it shows, from what the sandbox's hosts recorded (and from Postfix's own log for the
refused connection, which no server can see): Postfix fails over from a refusing primary to
the backup, and defers on greylisting, then comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.serve_process import serve

POSTFIX = "/usr/sbin/postfix"
SENDMAIL = "/usr/sbin/sendmail"
NETNS_ETC = Path("/etc/netns")
DELIVERY_TIMEOUT = 40.0
COMMAND_TIMEOUT = 20.0

SCENARIO = """\
name: postfix-meets-the-sandbox
zones:
  failover.test: |
    @    IN MX 10 mx1
    @    IN MX 20 mx2
    mx1  IN A  192.0.2.10
    mx2  IN A  192.0.2.11
  greylist.test: |
    @    IN MX 10 mx1
    @    IN MX 20 mx2
    mx1  IN A  192.0.2.20
    mx2  IN A  192.0.2.21
hosts:
  mx1.failover.test: refuse
  mx2.failover.test: accept
  # Both greylist; the primary's period ends first, so the retry that gets through is its.
  mx1.greylist.test: {greylist: 3s}
  mx2.greylist.test: {greylist: 10m}
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
meta_directory = /etc/postfix
maillog_file = {log}
maillog_file_prefixes = {base}
myhostname = sender.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
relayhost =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
alias_maps =
alias_database =
smtputf8_enable = no
smtp_tls_security_level = none
smtp_connection_cache_on_demand = no
smtp_connect_timeout = 5s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""

# Only what delivery needs: no smtpd listening, and every service out of chroot.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with only ``lo`` up, its resolv.conf naming 127.0.0.1;
    removed afterwards with whatever still runs in it."""
    name = f"mxsandbox-{secrets.token_hex(4)}"
    try:
        added = subprocess.run(
            ["ip", "netns", "add", name],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("this machine cannot create network namespaces: the `ip` command is missing")
    if added.returncode != 0:
        pytest.skip(f"this machine cannot create network namespaces: {added.stderr.strip()}")
    etc = NETNS_ETC / name
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            check=True,
            timeout=COMMAND_TIMEOUT,
        )
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
        yield name
    finally:
        _end_everything_in(name)
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=COMMAND_TIMEOUT)
        shutil.rmtree(etc, ignore_errors=True)
        if NETNS_ETC.exists() and not any(NETNS_ETC.iterdir()):
            NETNS_ETC.rmdir()


@pytest.fixture
def postfix_home() -> Iterator[Path]:
    """A directory for Postfix's configuration, queue, data and log. Not under tmp_path:
    Postfix's daemons drop to the ``postfix`` user, who cannot pass pytest's root-only
    temporary directories."""
    home = Path(tempfile.mkdtemp(prefix="mxsandbox-postfix-"))
    try:
        home.chmod(0o755)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _end_everything_in(namespace: str) -> None:
    """Kill, by pid, the processes left in our namespace (only ours can be there)."""
    listed = subprocess.run(
        ["ip", "netns", "pids", namespace],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    for pid in listed.stdout.split():
        with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
            os.kill(int(pid), signal.SIGKILL)


def postfix_config(base: Path) -> Path:
    config = base / "postfix"
    config.mkdir()
    (base / "queue").mkdir()
    data = base / "data"
    data.mkdir()
    shutil.chown(data, user="postfix")
    (config / "main.cf").write_text(
        MAIN_CF.format(queue=base / "queue", data=data, log=base / "maillog", base=base)
    )
    (config / "master.cf").write_text(MASTER_CF)
    return config


async def run(*command: str, stdin: bytes | None = None, log: Path | None = None) -> str:
    """Run a command to its end; on failure, say what it and Postfix's log said."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(COMMAND_TIMEOUT):
        out, _ = await process.communicate(stdin)
    if process.returncode != 0:
        logged = log.read_text() if log is not None and log.exists() else ""
        raise AssertionError(f"{' '.join(command)} failed:\n{out.decode()}{logged}")
    return out.decode()


def message(to: str, subject: str) -> bytes:
    return (
        f"From: bob@postfix.test\nTo: {to}\nSubject: {subject}\n\nHello from Postfix.\n"
    ).encode()


def outline(session: dict[str, Any]) -> list[tuple[str, str]]:
    """(command verb, reply code) pairs of a session from the JSON summary."""
    pairs: list[tuple[str, str]] = []
    verb = ""
    for _, side, line in session["transcript"]:
        if side == "C":
            verb = line.split()[0].upper() if not line.startswith("<") else "<message>"
        elif line[3:4] != "-":
            pairs.append((verb, line[:3]))
            verb = ""
    return pairs


async def test_postfix_fails_over_and_comes_back_after_greylisting(
    netns: str, postfix_home: Path
) -> None:
    scenario = postfix_home / "postfix.yaml"
    scenario.write_text(SCENARIO)
    config = postfix_config(postfix_home)
    inside = ("ip", "netns", "exec", netns)
    async with serve(
        scenario, "--dns", "127.0.0.1:53", "--smtp-port", "25", prefix=inside, as_json=True
    ) as served:
        address = {h["name"]: h["address"] for h in served.ready["hosts"]}
        await run(*inside, POSTFIX, "-c", str(config), "start", log=postfix_home / "maillog")
        try:
            for to, subject in (
                ("alice@failover.test", "failover"),
                ("carol@greylist.test", "greylisting"),
            ):
                await run(
                    *inside,
                    SENDMAIL,
                    "-C",
                    str(config),
                    "-f",
                    "bob@postfix.test",
                    to,
                    stdin=message(to, subject),
                )
            accepted: set[str] = set()
            async with asyncio.timeout(DELIVERY_TIMEOUT):
                while accepted != {"mx2.failover.test", "mx1.greylist.test"}:
                    event = json.loads(await served.read_line(DELIVERY_TIMEOUT))
                    if event["kind"] == "host_accepted":
                        accepted.add(event["host"])
        finally:
            await run(*inside, POSTFIX, "-c", str(config), "stop")
        code, rest, errors = await served.stop()
    assert code == 0, errors
    saw = {h["name"]: h for h in json.loads(rest.splitlines()[-1])["hosts"]}
    log = (postfix_home / "maillog").read_text()

    # Failover: nothing reached the refusing primary (the kernel refused for it); Postfix's
    # log has the refusal, then the backup took the message in the same delivery.
    assert saw["mx1.failover.test"]["sessions"] == []
    (session,) = saw["mx2.failover.test"]["sessions"]
    assert session["client"] == "127.0.0.1"
    assert outline(session)[:1] == [("", "220")]
    assert ("RCPT", "250") in outline(session) and outline(session)[-2:] == [
        ("<message>", "250"),
        ("QUIT", "221"),
    ]
    assert [m["recipients"] for m in saw["mx2.failover.test"]["accepted"]] == [
        ["alice@failover.test"]
    ]
    refused = log.index(
        f"connect to mx1.failover.test[{address['mx1.failover.test']}]:25: Connection refused"
    )
    sent = log.index(f"relay=mx2.failover.test[{address['mx2.failover.test']}]:25")
    assert refused < sent
    assert "status=sent" in log[sent:].splitlines()[0]

    # Greylisting: every delivery attempt went to mx1, then to mx2, and met 451 at RCPT at
    # both, until mx1's period ended and it took the message.
    sessions = sorted(
        (
            (s["opened"], name, s)
            for name in ("mx1.greylist.test", "mx2.greylist.test")
            for s in saw[name]["sessions"]
        ),
        key=lambda item: item[0],
    )
    hosts = [name for _, name, _ in sessions]
    tries = len(hosts) // 2
    assert tries >= 1
    assert hosts == ["mx1.greylist.test", "mx2.greylist.test"] * tries + ["mx1.greylist.test"]
    for _, _, deferred in sessions[:-1]:
        assert ("RCPT", "451") in outline(deferred)
    assert ("RCPT", "250") in outline(sessions[-1][2])
    (stored,) = saw["mx1.greylist.test"]["accepted"]
    assert stored["recipients"] == ["carol@greylist.test"]
    assert stored["t"] >= sessions[0][0] + 3.0
    assert saw["mx2.greylist.test"]["accepted"] == []
    assert "to=<carol@greylist.test>" in log and "status=deferred" in log
    assert "451 4.7.1 Greylisted" in log
    final = [
        line
        for line in log.splitlines()
        if "to=<carol@greylist.test>" in line and "status=sent" in line
    ]
    assert len(final) == 1 and "relay=mx1.greylist.test" in final[0]
