"""sandbox.output.term: colour only at a terminal, plain text byte for byte otherwise."""

from __future__ import annotations

import io
import re

from sandbox import RecipientFinal, RunStarted
from sandbox.output.term import PLAIN, RICH, Progress, style_for, table

ANSI = re.compile(r"\x1b\[[0-9;]*[mK]")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rich_only_on_a_terminal_without_no_color() -> None:
    assert style_for(Tty(), {}) is RICH
    assert style_for(io.StringIO(), {}) is PLAIN
    assert style_for(Tty(), {"NO_COLOR": "1"}) is PLAIN
    assert style_for(Tty(), {"NO_COLOR": ""}) is RICH  # no-color.org: set and not empty
    assert style_for(Tty(), {"TERM": "dumb"}) is PLAIN


def test_a_closed_stream_is_plain_not_a_crash() -> None:
    stream = io.StringIO()
    stream.close()
    assert style_for(stream, {}) is PLAIN


ROWS = [("host", "accepted"), ("mx1.example.test", "106"), ("mx2.example.test", "94")]


def test_plain_tables_are_aligned_text() -> None:
    assert table(ROWS) == [
        "  host              accepted",
        "  mx1.example.test  106",
        "  mx2.example.test  94",
    ]


def test_rich_tables_are_drawn_and_keep_their_columns() -> None:
    lines = [ANSI.sub("", line) for line in table(ROWS, RICH)]
    assert lines[0].startswith("  ┌") and lines[-1].startswith("  └")
    assert lines[1] == "  │ host             │ accepted │"
    assert lines[3] == "  │ mx1.example.test │ 106      │"
    assert len({len(line) for line in lines}) == 1


def test_long_tables_are_elided_in_the_middle() -> None:
    rows = [("n",), *((str(i),) for i in range(100))]
    lines = table(rows)
    assert len(lines) == 57 and "…" in lines[51]


STORY = """\
Message 1: bob@example.net → alice@example.test
       0:00:00  connect to mx1.example.test[192.0.2.10]:25 … refused
                  ⇒ the connection was refused: try the next host
       0:00:00  connect to mx2.example.test[192.0.2.11]:25 … connected
       0:00:00  S: 220 mx2.example.test ESMTP
       0:00:00  C: RCPT TO:<carol@example.test>     S: 550 5.1.1 No such user
       0:00:00  ✔ delivered to alice@example.test by mx2.example.test (dsn 2.0.0)"""


def test_plain_style_leaves_text_untouched() -> None:
    assert PLAIN.text(STORY) == STORY


def test_rich_style_paints_without_changing_the_words() -> None:
    painted = RICH.text(STORY)
    assert ANSI.sub("", painted) == STORY
    lines = painted.split("\n")
    assert "\x1b[31m… refused" in lines[1]  # red
    assert "\x1b[32m… connected" in lines[3]  # green
    assert "\x1b[32;1m250" not in painted and "\x1b[32;1m220" in lines[4]
    assert "\x1b[31;1m550" in lines[5]
    assert lines[6].count("\x1b[32;1m✔ delivered") == 1


def test_progress_waits_a_second_then_writes_one_rewritten_line() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, total=2, show_time=lambda t: f"T{t:g}", wall=lambda: now[0])
    progress(RunStarted(t=0.0, scenario="s", seed=0))
    assert stream.getvalue() == ""  # a short run stays silent
    now[0] = 1.5
    progress(
        RecipientFinal(
            t=300.0,
            message=1,
            recipient="a@x.test",
            status="delivered",
            host="mx",
            address=None,
            dsn="2.0.0",
            reply="",
            attempts=1,
        )
    )
    assert stream.getvalue() == "\r\x1b[K  virtual time T300 · 1/2 settled"
    now[0] = 1.52  # too soon after the last line: nothing
    progress(RunStarted(t=301.0, scenario="s", seed=0))
    assert stream.getvalue().count("\r") == 1
    progress.close()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_progress_that_never_showed_leaves_nothing_behind() -> None:
    stream = io.StringIO()
    progress = Progress(stream, total=1, show_time=str, wall=lambda: 0.0)
    progress(RunStarted(t=0.0, scenario="s", seed=0))
    progress.close()
    assert stream.getvalue() == ""
