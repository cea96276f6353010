"""``--trace FILE``: every event as one JSON object per line, ``{"t": …, "kind": …, …}``.

A sink must never stop the run it watches: a write that fails (a full disk, a closed pipe)
is kept in ``error``, the trace stops there, and the command line reports it after the run
(exit 2, one line) while the run's own result is still printed.
"""

from __future__ import annotations

import json
from typing import IO

from sandbox.errors import OutputError
from sandbox.events import Event, event_to_dict

__all__ = ["JsonLinesTrace", "open_trace"]


class JsonLinesTrace:
    """Call it with each event; it writes one line per event to ``stream``."""

    def __init__(self, stream: IO[str], path: str = "<trace>") -> None:
        self._stream = stream
        self._path = path
        self.error: OutputError | None = None

    def __call__(self, event: Event) -> None:
        if self.error is not None:
            return
        try:
            self._stream.write(json.dumps(event_to_dict(event)) + "\n")
        except OSError as error:
            self.error = OutputError(self._path, "the trace", error)

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError as error:  # the last buffered lines could not be written
            if self.error is None:
                self.error = OutputError(self._path, "the trace", error)


def open_trace(path: str) -> JsonLinesTrace:
    """A trace writing to ``path``; a path that cannot be opened is the user's to mend."""
    try:
        stream = open(path, "w", encoding="utf-8")  # noqa: SIM115 - JsonLinesTrace.close()
    except OSError as error:
        raise OutputError(path, "the trace", error) from None
    return JsonLinesTrace(stream, path)
