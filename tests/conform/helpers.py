"""What the conformance suite's tests share: the Node.js sender's command line, hand-made
observations for the judges, and the JUnit checks (a schema, and a reader CI tools use)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from sandbox.conform.model import (
    Case,
    DnsQuery,
    Mode,
    Observation,
    Returned,
    Run,
    RunStatus,
    SeenSession,
    Stored,
)

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")
NODE_SENDER = HERE / "node_sender.mjs"
JUNIT_XSD = HERE / "junit.xsd"

ENVELOPE = (
    "--dns {dns} --smtp-port {smtp_port} --from {from} --to {to} --message-file {message_file} "
    "--self {self}"
)


def node_command(*breaks: str, queue: bool = False, extra: str = "") -> str:
    """The Node.js sender as a --sender-cmd template, broken on purpose by ``breaks``."""
    words = [str(NODE), str(NODE_SENDER), ENVELOPE]
    if queue:
        words.append("--queue")
    words.extend(f"--break {b}" for b in breaks)
    if extra:
        words.append(extra)
    return " ".join(words)


def send_command(profile: str = "postfix", *, queue: bool = False, scale: int = 100) -> str:
    """Our own sender (``mxsandbox send``) as a --sender-cmd template."""
    words = [sys.executable, "-m", "sandbox", "send", ENVELOPE, f"--profile {profile}"]
    words.append(f"--time-scale {scale}")
    if queue:
        words.append("--queue")
    return " ".join(words)


def session(
    role: str,
    *lines: tuple[str, str],
    opened: float = 0.0,
    address: str = "127.1.2.3",
) -> SeenSession:
    """A session from (side, line) pairs: ``("S", "220 hi"), ("C", "EHLO x"), …``."""
    from sandbox.hosts.transcript import session_outline

    transcript = tuple((opened + i * 0.001, side, line) for i, (side, line) in enumerate(lines))
    return SeenSession(
        role, address, "127.0.0.1", opened, opened + 0.01, transcript, session_outline(transcript)
    )


DELIVERY = (
    ("S", "220 mx ESMTP"),
    ("C", "EHLO sender"),
    ("S", "250 mx"),
    ("C", "MAIL FROM:<bob@returns.x.test>"),
    ("S", "250 ok"),
    ("C", "RCPT TO:<alice@x.test>"),
    ("S", "250 ok"),
    ("C", "DATA"),
    ("S", "354 go"),
    ("C", "<message: 300 bytes>"),
    ("S", "250 queued"),
)
TEMPFAIL_AT_RCPT = (*DELIVERY[:6], ("S", "451 4.3.0 later"), ("C", "QUIT"), ("S", "221 bye"))


def observe(
    case: Case,
    *,
    status: RunStatus = "delivered",
    exit_code: int | None = 0,
    mode: Mode = "command",
    sessions: tuple[SeenSession, ...] = (),
    stored: tuple[tuple[str, float], ...] = (),
    queries: tuple[DnsQuery, ...] = (),
    returned: tuple[Returned, ...] = (),
    time_scale: float = 1.0,
    deadline: float = 30.0,
    ended: float | None = None,
) -> Observation:
    """An observation of ``case`` made by hand: ``stored`` is (role, t) per accepted copy."""
    mid = "<1.case.abc123@conform.mxsandbox.test>"
    run = Run(1, "bob@returns.x.test", ("alice@x.test",), mid, status, exit_code, 0.0, ended)
    return Observation(
        case,
        mode,
        time_scale,
        deadline,
        (run,),
        sessions,
        tuple(Stored(t, role, ("alice@x.test",), mid) for role, t in stored),
        queries,
        returned,
        ended if ended is not None else deadline,
    )


def validate_junit(text: str, tmp_path: Path) -> Any:
    """Check JUnit XML against the schema, then read it as CI tools do (junitparser)."""
    import xmlschema
    from junitparser import JUnitXml

    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(text)
    path = tmp_path / "junit.xml"
    path.write_text(text, encoding="utf-8")
    return JUnitXml.fromfile(str(path))
