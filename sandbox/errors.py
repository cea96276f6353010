"""The sandbox's own error tree, in one place.

Third-party exceptions (PyYAML, dnslib, aiosmtplib, OS errors) are translated into these at
one boundary each, so that callers catch ``SandboxError`` and nothing else. Where an error
also is what a standard exception means, it says so by inheritance: a scenario mistake is a
``ValueError``, a port another program holds is an ``OSError`` with ``errno.EADDRINUSE``.

::

    SandboxError
    ├── ScenarioError (ValueError)        a mistake in a scenario file: FILE:LINE: KEY: …
    ├── ZoneSyntaxError (ValueError)      zone text that does not parse, at its line
    ├── OutputError (OSError)             a file the user asked for cannot be written
    ├── NotLoopback (ValueError)          an address outside 127.0.0.0/8 and ::1
    ├── NotInSandbox (LookupError)        an address or host no sandbox host plays
    ├── BindError (OSError)               a server cannot listen where it was asked to
    │   └── AddressInUse                  … because another program holds that address
    └── ServerError (RuntimeError)        errors raised inside the servers, for the test
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AddressInUse",
    "BindError",
    "DnsAddressInUse",
    "NotInSandbox",
    "NotLoopback",
    "OutputError",
    "SandboxError",
    "ScenarioError",
    "ServerError",
    "ServerFault",
    "ZoneSyntaxError",
    "bind_error",
]


class SandboxError(Exception):
    """Base class of every error the sandbox raises on purpose."""


class ScenarioError(SandboxError, ValueError):
    """A mistake in a scenario file: the user's to mend, never a crash.

    ``str()`` gives one line: ``FILE:LINE: KEY: what is wrong; how to mend it``.
    """

    def __init__(
        self, message: str, *, file: str = "<scenario>", line: int | None = None, key: str = ""
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ZoneSyntaxError(SandboxError, ValueError):
    """Zone text that does not parse. ``line`` counts from 1 within the zone text."""

    def __init__(self, message: str, *, line: int) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}")


class OutputError(SandboxError, OSError):
    """A file the user asked for (``--trace``, ``--report``) cannot be written.

    ``str()`` gives one line: ``PATH: cannot write the trace: No space left on device``.
    """

    def __init__(self, path: str, what: str, error: OSError) -> None:
        self.path = path
        self.what = what
        reason = error.strerror or str(error)
        super().__init__(error.errno, f"{path}: cannot write {what}: {reason}")

    def __str__(self) -> str:
        return str(self.strerror)


class NotLoopback(SandboxError, ValueError):
    """An address outside 127.0.0.0/8 and ::1: the sandbox never binds or connects there."""


class NotInSandbox(SandboxError, LookupError):
    """An address or host that no sandbox host plays: the sender never connects outside."""


class BindError(SandboxError, OSError):
    """A server cannot listen where it was asked to. ``errno`` is the operating system's.

    ``str()`` is one sentence that says what could not bind, why, and what to do.
    """

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(code, message)

    def __str__(self) -> str:
        return str(self.strerror)


class AddressInUse(BindError):
    """Another program holds the address and port (``errno.EADDRINUSE``)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EADDRINUSE, message)


class DnsAddressInUse(AddressInUse):
    """The DNS server's address and port is the one held: serve mode says which option moves
    it (``--dns``)."""


@dataclass(frozen=True, slots=True)
class ServerFault:
    """One error inside a server: where it surfaced (asyncio's or a logger's message) and
    the exception itself."""

    where: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.where}: {type(self.error).__name__}: {self.error}"


class ServerError(SandboxError, RuntimeError):
    """Errors raised inside the sandbox's servers, raised again where a test can see them."""

    def __init__(self, faults: Sequence[ServerFault]) -> None:
        self.faults = tuple(faults)
        listed = "\n".join(f"  - {fault}" for fault in self.faults)
        count = len(self.faults)
        noun = "an error" if count == 1 else f"{count} errors"
        super().__init__(f"{noun} inside the sandbox's servers:\n{listed}")


def bind_error(what: str, where: str, error: OSError, mend: str = "") -> BindError:
    """The one translation of a failed bind: ``AddressInUse`` when another program holds the
    address, ``BindError`` otherwise, each with a sentence that says what to do."""
    reason = error.strerror or str(error)
    then = f"; {mend}" if mend else ""
    if error.errno == errno.EADDRINUSE:
        return AddressInUse(f"{what} cannot listen on {where}: another program holds it{then}")
    return BindError(error.errno, f"{what} cannot listen on {where} ({reason}){then}")
