"""What serve keeps: the ``--retain`` spec, the bounded transcript (lines logged one by one or
in bulk alike) and the content budget, without a socket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.hosts.limits import UNLIMITED, ContentBudget
from sandbox.hosts.transcript import ClientLines, SessionLog, StoredMessage, session_outline
from sandbox.serve.retention import DEFAULT_RETENTION, KEEP_ALL, Retention


def test_the_defaults_read_as_they_are_written() -> None:
    assert str(DEFAULT_RETENTION) == "events=10000,sessions=1000,messages=1000,bytes=64MiB"
    assert Retention.parse(str(DEFAULT_RETENTION)) == DEFAULT_RETENTION


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("events=5", Retention(events=5)),
        ("sessions=0, messages=all", Retention(sessions=0, messages=None)),
        ("bytes=1500", Retention(bytes=1500)),
        ("bytes=2KiB", Retention(bytes=2048)),
        ("bytes=3 MB", Retention(bytes=3_000_000)),
        ("bytes=1GiB,events=all", Retention(events=None, bytes=1 << 30)),
        ("all", KEEP_ALL),
        ("", DEFAULT_RETENTION),
    ],
)
def test_a_spec_names_only_what_it_changes(text: str, expected: Retention) -> None:
    assert Retention.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("events", "is not KEY=VALUE"),
        ("lines=5", "a key among events, sessions, messages, bytes"),
        ("events=-1", "must be a count, or all"),
        ("events=5MiB", "must be a count, or all"),
        ("bytes=5 parsecs", "must be a size such as 64MiB, or all"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Retention.parse(text)


def test_a_mapping_or_none_works_too() -> None:
    assert Retention.of(None) == DEFAULT_RETENTION
    assert Retention.of({"events": 7, "bytes": "1MiB", "sessions": None}) == Retention(
        events=7, sessions=None, bytes=1 << 20
    )
    limits = Retention.of("all").host_limits()
    assert (limits.sessions_kept, limits.messages_kept, limits.content_bytes) == (UNLIMITED,) * 3


def clock(times: list[float]) -> float:
    times.append(len(times))
    return float(len(times) - 1)


def test_a_bounded_transcript_keeps_its_head_and_tail_and_counts_the_rest() -> None:
    times: list[float] = []
    log = SessionLog(lambda: clock(times), "127.0.0.9", "accept", head=3, tail=2, line_chars=8)
    for number in range(10):
        log.add("C", f"NOOP {number}")
    lines = log.lines
    assert [line for _, _, line in lines] == [
        "NOOP 0",
        "NOOP 1",
        "NOOP 2",
        "<… 5 more lines not kept>",
        "NOOP 8",
        "NOOP 9",
    ]
    assert lines[3][:2] == (4.0, "C")  # when the first line left out was said
    log.add("S", "250 2.0.0 a reply far longer than eight characters")
    assert log.lines[-1][2] == "250 2.0.…"
    assert "… 6 more lines not kept" in session_outline(log.lines)


def test_an_unbounded_transcript_keeps_everything() -> None:
    times: list[float] = []
    log = SessionLog(lambda: clock(times), "127.0.0.9", "accept")
    for number in range(1000):
        log.add("C", "X" * number)
    assert len(log.lines) == 1000 and log.lines[-1][2] == "X" * 999


def stored(size: int, number: int) -> StoredMessage:
    return StoredMessage(float(number), "bob@example.net", ("a@example.test",), b"x" * size,
                         f"ID{number}", "127.0.0.9")  # fmt: skip


def test_the_content_budget_drops_the_oldest_and_keeps_the_newest() -> None:
    budget = ContentBudget(limit=100)
    dropped: list[str] = []
    messages = [stored(40, n) for n in range(4)]
    for message in messages:
        budget.add(message, lambda m: dropped.append(m.message_id))
    assert dropped == ["ID0", "ID1"] and budget.kept == 80
    budget.forget(messages[2])  # its host dropped it on its own
    assert budget.kept == 40
    big = stored(500, 9)
    budget.add(big, lambda m: dropped.append(m.message_id))
    assert dropped[-1] == "ID3" and budget.kept == 500  # the newest stays, whatever its size


lines_on_the_wire = st.lists(
    st.sampled_from([b"NOOP", b"DATA", b"data x", b"", b"\xff\xfe", b"x" * 9000, b"QUIT"]),
    max_size=60,
)


@given(
    lines=lines_on_the_wire,
    ends=st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=60, max_size=60),
    cut=st.integers(1, 200),
    bounds=st.sampled_from([{}, {"head": 5, "tail": 3}, {"head": 0, "tail": 0}, {"head": 2}]),
)
def test_lines_logged_in_bulk_read_as_lines_logged_one_by_one(
    lines: list[bytes], ends: list[bytes], cut: int, bounds: dict[str, int]
) -> None:
    wire = b"".join(line + end for line, end in zip(lines, ends, strict=False))
    transcripts = []
    for commands in (True, False):
        log = SessionLog(lambda: 0.0, "127.0.0.9", "accept", line_chars=100, **bounds)
        client = ClientLines(log, hold_after_data_up_to=512)
        for start in range(0, len(wire), cut):
            client.feed(wire[start : start + cut], commands=commands)
        client.finish()
        transcripts.append(log.lines)
    assert transcripts[0] == transcripts[1]
