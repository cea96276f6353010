"""The sandbox's own error tree.

Third-party exceptions (PyYAML, dnslib, aiosmtplib, OS errors) are translated into these at
one boundary each, so that callers catch ``SandboxError`` and nothing else.
"""

from __future__ import annotations

__all__ = ["SandboxError", "ScenarioError", "ZoneSyntaxError"]


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
