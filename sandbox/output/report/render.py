"""The timeline report: one self-contained HTML file that shows a run at a glance.

``render_report`` draws a run's ``Flow`` (see ``flow.py``) as a page that needs no network:
the CSS, the SVG and the little JavaScript are all inline. From top to bottom:

- a headline: what happened to the mail, in one or two sentences;
- the timeline: a lane per mail host across virtual time, its scripted phases shaded (down,
  tempfail, greylisting, …), every connection attempt a mark shaped and coloured by its
  outcome, each message's path from host to host over its attempts, and a line across the
  lanes at each moment that explains them (a zone that changes, a cached answer that
  expires);
- the MX table in the order the sender chose (each MX set the sender met, from when), and
  the balancing chart of equal preferences;
- the paths, grouped (a thousand messages that took the same way are one row), the
  expectations and the zone check.

Readable at any size: a run whose every event happened at the same virtual instant is drawn
in the order of its connection attempts instead of on a time axis that would stack every
mark on the first pixel; marks that fall in the same few pixels of a lane become one stacked
bar with their count; past ``MANY_PATHS`` messages the paths are drawn as aggregated flows,
and a picker draws any single message's path on demand.

Every lane carries ``data-lane`` and every mark ``data-mark`` with ``data-count`` (how many
connection attempts it stands for), so that a test can count them in the rendered page; a
self-check in the page does the same and writes its verdict into ``#selfcheck``.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sandbox.core.durations import format_duration
from sandbox.output.narrative import clock_text
from sandbox.output.report.data import (
    OUTCOMES,
    PHASE_KINDS,
    TLS_OUTCOMES,
    Flow,
    Mark,
    Path,
    build_flow,
)
from sandbox.output.report.style import REPORT_CSS as _CSS
from sandbox.result.model import RunResult
from sandbox.result.stats import BalanceGroup, balance_groups, verdict
from sandbox.scenario.lint import Finding

__all__ = ["MANY_PATHS", "render_report"]

# The drawing's own coordinates; the SVG scales to the page's width.
WIDTH = 1100
GUTTER = 200  # lane labels
RIGHT = 24
TOP = 12
LANE_HEIGHT = 72
AXIS_HEIGHT = 46
PLOT = WIDTH - GUTTER - RIGHT
BIN = 7  # marks closer than this in one lane are drawn as one bar
# When more than this share of the attempts would collide with another in their lane, or
# there are more than DENSE_MAX of them, every lane becomes a histogram of DENSE_BINS bars.
DENSE_SHARE = 0.25
DENSE_MAX = 400
DENSE_BINS = 80
ARROWS_UP_TO = 40  # a path with more hops than this is drawn without arrows: they would crowd
MANY_PATHS = 60  # above this many messages, paths are aggregated
MAX_PICKER_POINTS = 60_000  # the picker's data stays small even for huge runs
_NICE_STEPS = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    432000,
    864000,
)
_OUTCOME_WORDS = {
    "accepted": "accepted",
    "refused": "refused",
    "timeout": "timed out",
    "tempfail": "4xx",
    "rejected": "5xx",
    "lost": "lost",
    "error": "error",
}
_OUTCOME_MARKS = {
    "accepted": "●",
    "refused": "✕",
    "timeout": "◷",
    "tempfail": "▲",
    "rejected": "■",
    "lost": "◆",
    "error": "✕",
}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_report(result: RunResult, findings: Sequence[Finding] = ()) -> str:
    """The whole HTML page for one run."""
    flow = build_flow(result)
    axis = _Axis.for_flow(flow)
    scenario = result.scenario
    title = scenario.name + (f" — {scenario.title}" if scenario.title else "")
    body = [
        _header(result, flow, title),
        _timeline_section(flow, axis),
        '<div class="row">',
        _mx_section(flow),
        _balance_section(balance_groups(result.events)),
        "</div>",
        _paths_section(flow),
        _expectations_section(result),
        _findings_section(findings, scenario.source),
        '<div id="selfcheck" hidden></div>',
    ]
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · MX Sandbox</title>"
        f"<style>{_CSS}</style>"
        f"<script>{_EARLY_JS}</script>"
        "</head><body><main>\n"
        + "\n".join(body)
        + f'\n<script type="application/json" id="flow-data">{_picker_data(flow, axis)}</script>'
        + f"\n<script>{_JS}</script>\n</main></body></html>\n"
    )


# --- the axis ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Axis:
    """Virtual time, or, when the whole run took no virtual time, the order of attempts."""

    by_order: bool
    span: float
    count: int

    @classmethod
    def for_flow(cls, flow: Flow) -> _Axis:
        if flow.end <= 0:
            return cls(True, 0.0, max(1, len(flow.marks)))
        return cls(False, flow.end * 1.03, len(flow.marks))

    def x_of_time(self, t: float) -> float:
        if self.by_order:
            return GUTTER if t <= 0 else GUTTER + PLOT
        return GUTTER + min(t, self.span) / self.span * PLOT

    def x_of(self, mark: Mark) -> float:
        if self.by_order:
            return GUTTER + (mark.index + 0.5) / self.count * PLOT
        return self.x_of_time(mark.t)

    def ticks(self) -> list[tuple[float, str]]:
        if self.by_order:
            step = _nice(
                self.count / 6,
                (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000),
            )
            return [
                (GUTTER + (n - 0.5) / self.count * PLOT, f"#{n}")
                for n in [1, *range(step, self.count + 1, step)]
            ]
        step = _nice(self.span / 7, _NICE_STEPS)
        return [
            (self.x_of_time(t), clock_text(t))
            for t in (i * step for i in range(int(self.span // step) + 1))
        ]

    def caption(self) -> str:
        if self.by_order:
            return "connection attempts in order: the whole run happened at 0:00:00 of virtual time"
        return "virtual time since the start of the run"


def _nice(rough: float, steps: Iterable[float]) -> int:
    for step in steps:
        if step >= rough:
            return int(step)
    return int(max(steps))


# --- the header ----------------------------------------------------------------------------------


def _header(result: RunResult, flow: Flow, title: str) -> str:
    scenario = result.scenario
    statuses = Counter(p.status for p in flow.paths)
    chips = " ".join(
        f'<span class="chip s-{status}">{statuses[status]} {status}</span>'
        for status in ("delivered", "deferred", "bounced")
        if statuses[status]
    )
    held = sum(e.ok for e in result.expectations)
    expectations = ""
    if result.expectations:
        ok = held == len(result.expectations)
        expectations = (
            f'<span class="chip {"ok" if ok else "bad"}">{held} of '
            f"{len(result.expectations)} expectations hold</span>"
        )
    description = (
        f'<p class="description">{_e(scenario.description)}</p>' if scenario.description else ""
    )
    return (
        f"<header><h1>{_e(title)}</h1>{description}"
        f'<p class="headline">{_e(_headline(flow))}</p>'
        f'<p class="meta">{len(flow.paths)} message(s): {chips} {expectations} '
        f'<span class="quiet">seed {result.seed} · sender profile {_e(result.profile.name)} · '
        f"run ended at {clock_text(result.ended_at)} virtual time</span></p></header>"
    )


def _headline(flow: Flow) -> str:
    if not flow.paths:
        return "No message was sent."
    if len(flow.paths) == 1:
        return f"Message {flow.paths[0].message}: {_path_story(flow, flow.paths[0])}"
    hosts = Counter(p.host for p in flow.paths if p.status == "delivered")
    took = ", ".join(f"{host} took {n}" for host, n in hosts.most_common())
    first_try = sum(p.status == "delivered" and p.attempts == 1 for p in flow.paths)
    failover = sum(
        p.status == "delivered" and any(flow.marks[i].outcome != "accepted" for i in p.marks)
        for p in flow.paths
    )
    parts = [f"{len(flow.paths)} messages"]
    if took:
        parts.append(took)
    if hosts:
        parts.append(f"{first_try} delivered at the first attempt")
    if failover:
        parts.append(f"{failover} only after a failed connection")
    return "; ".join(parts) + "."


# --- the timeline --------------------------------------------------------------------------------


def _timeline_section(flow: Flow, axis: _Axis) -> str:
    height = TOP + LANE_HEIGHT * max(1, len(flow.lanes)) + AXIS_HEIGHT
    positions = _positions(flow, axis)
    parts = [
        f'<svg id="timeline-svg" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="timeline of connection attempts per mail host" '
        f'data-lanes="{len(flow.lanes)}" data-marks="{len(flow.marks)}" '
        f'data-axis="{"order" if axis.by_order else "time"}">',
        _DEFS,
        _lanes_svg(flow, axis),
        _axis_svg(flow, axis),
        _moments_svg(flow, axis),
        _paths_svg(flow, positions),
        '<g id="picked"></g>',
        _marks_svg(flow, axis),
        "</svg>",
    ]
    many = len(flow.paths) > MANY_PATHS and any(len(p.marks) > 1 for p in flow.paths)
    picker = (
        ""
        if len(flow.paths) < 2
        else (
            '<p class="picker"><label>Follow message <input id="pick" type="number" min="1" '
            f'max="{len(flow.paths)}" placeholder="1…{len(flow.paths)}"></label> '
            '<span id="pick-info" class="quiet"></span></p>'
        )
    )
    note = (
        f'<p class="quiet">{len(flow.paths)} messages: their paths are drawn as '
        "flows whose width grows with the number of messages that took them.</p>"
        if many
        else ""
    )
    return (
        '<section id="timeline"><h2>Timeline</h2>'
        + _legend(flow)
        + '<div class="scroll">'
        + "".join(parts)
        + "</div>"
        + _moments_list(flow)
        + picker
        + note
        + "</section>"
    )


def _moments_svg(flow: Flow, axis: _Axis) -> str:
    """A dashed line across the lanes at each moment, numbered as in the list below."""
    if axis.by_order or not flow.moments:
        return ""
    bottom = TOP + LANE_HEIGHT * max(1, len(flow.lanes))
    out = ['<g class="moments">']
    for number, moment in enumerate(flow.moments, start=1):
        x = axis.x_of_time(moment.t)
        out.append(
            f'<g class="moment m-{moment.kind}" data-moment="{moment.kind}" '
            f'data-t="{moment.t:g}"><title>{clock_text(moment.t)}: {_e(moment.text)}</title>'
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom}"/>'
            f'<text x="{x + 3:.1f}" y="{TOP + 11}">{number}</text></g>'
        )
    out.append("</g>")
    return "".join(out)


def _moments_list(flow: Flow) -> str:
    if not flow.moments:
        return ""
    items = "".join(
        f'<li data-moment="{moment.kind}"><b>{clock_text(moment.t)}</b> {_e(moment.text)}</li>'
        for moment in flow.moments
    )
    return f'<ol class="moments-list">{items}</ol>'


def _lane_y(lane: int) -> float:
    return TOP + lane * LANE_HEIGHT + LANE_HEIGHT / 2


def _lanes_svg(flow: Flow, axis: _Axis) -> str:
    out = []
    for index, lane in enumerate(flow.lanes):
        top = TOP + index * LANE_HEIGHT
        out.append(f'<g class="lane" data-lane="{_e(lane.host)}">')
        out.append(
            f'<rect class="lane-bg{" odd" if index % 2 else ""}" x="0" y="{top}" '
            f'width="{WIDTH}" height="{LANE_HEIGHT}"/>'
        )
        for phase in lane.phases:
            if axis.by_order and phase.start > 0:
                continue  # an instant run lives entirely in the first phase
            x0 = axis.x_of_time(phase.start)
            x1 = GUTTER + PLOT if axis.by_order else axis.x_of_time(phase.end)
            if phase.end >= flow.end and not axis.by_order:
                x1 = GUTTER + PLOT
            w = max(0.0, x1 - x0)
            words = f"{PHASE_KINDS[phase.kind]} ({phase.label})"
            span = (
                f"{clock_text(phase.start)} to {clock_text(phase.end)}"
                if not axis.by_order
                else "the whole run"
            )
            out.append(
                f'<rect class="phase k-{phase.kind}" data-phase="{phase.kind}" x="{x0:.1f}" '
                f'y="{top + 3}" width="{w:.1f}" height="{LANE_HEIGHT - 6}">'
                f"<title>{_e(lane.host)}: {_e(words)}, {span}</title></rect>"
            )
            label = _phase_label(phase.kind, phase.label)
            if w > 7 * len(label):
                # Bottom right of the phase: clear of the marks in the lane's middle.
                out.append(
                    f'<text class="phase-label" x="{x0 + w - 6:.1f}" y="{top + LANE_HEIGHT - 10}" '
                    f'text-anchor="end">{_e(label)}</text>'
                )
        name = lane.host if len(lane.host) <= 26 else lane.host[:25] + "…"
        addresses = ", ".join(lane.addresses)
        addresses = addresses if len(addresses) <= 30 else addresses[:29] + "…"
        out.append(
            f'<text class="lane-name" x="10" y="{top + 27}">{_e(name)}</text>'
            f'<text class="lane-info" x="10" y="{top + 43}">{_e(addresses)}</text>'
            f'<text class="lane-info" x="10" y="{top + 58}">{lane.connections} connections · '
            f"{lane.accepted} accepted</text>"
        )
        out.append("</g>")
    return "".join(out)


def _axis_svg(flow: Flow, axis: _Axis) -> str:
    bottom = TOP + LANE_HEIGHT * max(1, len(flow.lanes))
    out = [
        f'<g class="axis"><line x1="{GUTTER}" y1="{bottom}" x2="{GUTTER + PLOT}" y2="{bottom}"/>'
    ]
    for x, label in axis.ticks():
        out.append(
            f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom + 5}"/>'
            f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">{_e(label)}</text>'
        )
    out.append(
        f'<text class="caption" x="{GUTTER + PLOT / 2}" y="{bottom + 38}" '
        f'text-anchor="middle">{_e(axis.caption())}</text></g>'
    )
    return "".join(out)


def _phase_label(kind: str, described: str) -> str:
    """The words on a phase: its kind, and the script when that says more."""
    words = PHASE_KINDS[kind]
    return (
        words
        if described in ("accept", "refuse", "timeout", "silent")
        else (f"{words}: {described}")
    )


def _dense(flow: Flow, axis: _Axis) -> bool:
    """Sparse runs keep a glyph per attempt; dense ones become histograms."""
    if len(flow.marks) > DENSE_MAX:
        return True
    crowded = sum(len(m) for m in _bins(flow, axis, BIN).values() if len(m) > 1)
    return crowded > DENSE_SHARE * len(flow.marks)


def _bin_width(flow: Flow, axis: _Axis) -> float:
    return PLOT / DENSE_BINS if _dense(flow, axis) else BIN


def _bins(flow: Flow, axis: _Axis, width: float | None = None) -> dict[tuple[int, int], list[Mark]]:
    width = _bin_width(flow, axis) if width is None else width
    bins: dict[tuple[int, int], list[Mark]] = defaultdict(list)
    for mark in flow.marks:
        column = min(int((axis.x_of(mark) - GUTTER) // width), int(PLOT // width))
        bins[(mark.lane, column)].append(mark)
    return bins


def _positions(flow: Flow, axis: _Axis) -> dict[int, tuple[float, float]]:
    """Where each mark is drawn: its own x, or the centre of the bar it was binned into."""
    dense = _dense(flow, axis)
    width = _bin_width(flow, axis)
    where: dict[int, tuple[float, float]] = {}
    for (lane, column), marks in _bins(flow, axis).items():
        for mark in marks:
            alone = len(marks) == 1 and not dense
            x = axis.x_of(mark) if alone else GUTTER + (column + 0.5) * width
            where[mark.index] = (x, _lane_y(lane))
    return where


def _marks_svg(flow: Flow, axis: _Axis) -> str:
    bins = _bins(flow, axis)
    dense = _dense(flow, axis)
    width = _bin_width(flow, axis)
    tallest = max((len(m) for m in bins.values()), default=1)
    out = ['<g class="marks">']
    for (lane, column), marks in sorted(bins.items()):
        y = _lane_y(lane)
        if len(marks) == 1 and not dense:
            (mark,) = marks
            x = axis.x_of(mark)
            tls = f' data-tls="{mark.tls}"' if mark.tls else ""
            out.append(
                f'<g class="mark o-{mark.outcome}" data-mark="" data-count="1" '
                f'data-outcome="{mark.outcome}"{tls} transform="translate({x:.1f},{y:.1f})">'
                f"<title>{_e(_mark_title(mark))}</title>{_GLYPHS[mark.outcome]}"
                f"{_tls_badge(mark.tls)}</g>"
            )
            continue
        room = LANE_HEIGHT - 26
        # A histogram scales to its tallest bar; a few marks that merely collide get a
        # fixed height each, with their count written above.
        height = max(3.0, room * len(marks) / tallest) if dense else min(room, 9.0 * len(marks))
        out.append(_bar(marks, GUTTER + column * width, width, y, height, label=not dense))
    out.append("</g>")
    return "".join(out)


def _bar(marks: list[Mark], x: float, width: float, y: float, height: float, *, label: bool) -> str:
    """Several attempts in a few pixels of one lane: a bar stacked by outcome."""
    counts = Counter(m.outcome for m in marks)
    first, last = marks[0], marks[-1]
    when = (
        clock_text(first.t)
        if first.t == last.t
        else f"{clock_text(first.t)} to {clock_text(last.t)}"
    )
    said = ", ".join(f"{n} {OUTCOMES[o]}" for o, n in counts.items())
    out = [
        f'<g class="mark agg" data-mark="" data-count="{len(marks)}">'
        f"<title>{len(marks)} connection attempts, {when}: {_e(said)}</title>"
    ]
    top = y + height / 2
    for outcome in OUTCOMES:
        if not counts[outcome]:
            continue
        h = height * counts[outcome] / len(marks)
        top -= h
        out.append(
            f'<rect class="seg o-{outcome}" data-outcome="{outcome}" '
            f'data-n="{counts[outcome]}" x="{x + 0.5:.1f}" y="{top:.1f}" '
            f'width="{max(1.0, width - 1.5):.1f}" height="{h:.1f}"/>'
        )
    if label:
        out.append(
            f'<text class="count" x="{x + width / 2:.1f}" y="{y - height / 2 - 3:.1f}" '
            f'text-anchor="middle">{len(marks)}</text>'
        )
    out.append("</g>")
    return "".join(out)


def _mark_title(mark: Mark) -> str:
    tls = f"; {TLS_OUTCOMES[mark.tls]}: {mark.tls_detail}" if mark.tls else ""
    return (
        f"message {mark.message}, attempt {mark.attempt}, {clock_text(mark.t)}: "
        f"{mark.mx}[{mark.address}]: {OUTCOMES[mark.outcome]} ({mark.detail}){tls}"
    )


def _paths_svg(flow: Flow, positions: dict[int, tuple[float, float]]) -> str:
    if len(flow.paths) > MANY_PATHS:
        return _flows_svg(flow, positions)
    out = ['<g class="paths">']
    for path in flow.paths:
        points = _points(path, positions)
        if len(points) < 2:
            continue
        arrows = ' marker-mid="url(#arrow)"' if len(points) <= ARROWS_UP_TO else ""
        crowd = "" if arrows else " crowded"
        out.append(
            f'<polyline class="path s-{path.status}{crowd}" data-message="{path.message}" '
            f'points="{_with_midpoints(points)}"{arrows}>'
            f"<title>message {path.message}: {_e(_path_story(flow, path))}</title></polyline>"
        )
    out.append("</g>")
    return "".join(out)


def _flows_svg(flow: Flow, positions: dict[int, tuple[float, float]]) -> str:
    """Many messages: every hop between two marks, counted, drawn once with its weight."""
    hops: Counter[tuple[tuple[float, float], tuple[float, float]]] = Counter()
    for path in flow.paths:
        points = _points(path, positions)
        hops.update(itertools.pairwise(points))
    if not hops:
        return '<g class="paths"></g>'
    heaviest = max(hops.values())
    out = ['<g class="paths flows">']
    for (a, b), n in sorted(hops.items()):
        width = 1 + 5 * math.sqrt(n / heaviest)
        out.append(
            f'<line class="flow" data-count="{n}" x1="{a[0]:.1f}" y1="{a[1]:.1f}" '
            f'x2="{b[0]:.1f}" y2="{b[1]:.1f}" stroke-width="{width:.1f}">'
            f"<title>{n} message(s) went this way</title></line>"
        )
    out.append("</g>")
    return "".join(out)


def _points(path: Path, positions: dict[int, tuple[float, float]]) -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = []
    for index in path.marks:
        point = positions.get(index)
        if point is not None and (not points or points[-1] != point):
            points.append(point)
    return points


def _with_midpoints(points: list[tuple[float, float]]) -> str:
    """A vertex halfway along each segment, so that marker-mid puts an arrow there, where
    it shows (the real vertices are under the marks)."""
    out = [points[0]]
    for a, b in itertools.pairwise(points):
        out += [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2), b]
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in out)


def _picker_data(flow: Flow, axis: _Axis) -> str:
    positions = _positions(flow, axis)
    data: dict[str, object] = {}
    budget = MAX_PICKER_POINTS
    for path in flow.paths:
        points = _points(path, positions)
        budget -= len(points)
        if budget < 0:
            break
        data[str(path.message)] = {
            "points": [[round(x, 1), round(y, 1)] for x, y in points],
            "status": path.status,
            "story": _path_story(flow, path),
        }
    # "</" inside a script element would end it early.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def _legend(flow: Flow) -> str:
    seen = {m.outcome for m in flow.marks}
    marks = "".join(
        f'<span class="key"><svg viewBox="-8 -8 16 16" width="16" height="16">'
        f'<g class="mark o-{outcome}">{_GLYPHS[outcome]}</g></svg>{_e(words)}</span>'
        for outcome, words in OUTCOMES.items()
        if outcome in seen
    )
    tls_seen = {m.tls for m in flow.marks if m.tls}
    marks += "".join(
        f'<span class="key"><svg viewBox="-8 -8 16 16" width="16" height="16">'
        f'<g class="mark">{_tls_badge(tls, 0, 0)}</g>'
        f"</svg>{_e(words)}</span>"
        for tls, words in TLS_OUTCOMES.items()
        if tls in tls_seen
    )
    kinds = {p.kind for lane in flow.lanes for p in lane.phases}
    phases = "".join(
        f'<span class="key"><i class="swatch k-{kind}"></i>{_e(words)}</span>'
        for kind, words in PHASE_KINDS.items()
        if kind in kinds
    )
    paths = "".join(
        f'<span class="key"><i class="line s-{status}"></i>path of a message {status}</span>'
        for status in ("delivered", "deferred", "bounced")
        if any(p.status == status and len(p.marks) > 1 for p in flow.paths)
    )
    if len(flow.paths) > MANY_PATHS:
        paths = (
            '<span class="key"><i class="line flow-key"></i>the way messages went from host to '
            "host (wider: more messages)</span>"
            if any(len(p.marks) > 1 for p in flow.paths)
            else ""
        )
    return f'<div class="legend">{marks}</div><div class="legend">{phases}{paths}</div>'


# --- the MX table and the balancing chart --------------------------------------------------------


def _mx_section(flow: Flow) -> str:
    # A domain whose MX records changed during the run gets a row per record of every set
    # the sender met, each set headed by when the sender began to use it.
    changed = {row.domain for row in flow.mx_rows if row.answer > 0}
    rows = "".join(
        (
            f'<tr class="answer"><td colspan="6">{_e(row.domain)}: the MX records the sender '
            f"used from {clock_text(row.since)}</td></tr>"
            if row.domain in changed and row.rank == 1
            else ""
        )
        + f"<tr><td>{row.rank}</td><td>{row.preference}</td><td>{_e(row.host)}</td>"
        f"<td>{_e(', '.join(row.addresses) or '—')}</td>"
        f"<td>{row.zone_line if row.zone_line is not None else '—'}</td>"
        f"<td>{row.first:.0%}</td></tr>"
        for row in flow.mx_rows
    )
    domains = sorted({row.domain for row in flow.mx_rows})
    table = (
        '<table class="mx"><thead><tr><th>order</th><th>preference</th><th>host</th>'
        "<th>addresses</th><th>zone line</th><th>tried first</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    notes = "".join(f'<p class="note">{_e(note)}</p>' for note in flow.notes)
    return (
        f'<section id="mx"><h2>MX records of {_e(", ".join(domains) or "the recipients")}, '
        "in the sender's order</h2>"
        '<p class="quiet">Lowest preference first; records of equal preference are shuffled '
        "for every attempt, so “tried first” shows how the sender spread them.</p>"
        f"{table}{notes}</section>"
    )


def _balance_section(groups: Sequence[BalanceGroup]) -> str:
    if not groups:
        return (
            '<section id="balance"><h2>Equal preferences</h2><p class="quiet">No two MX '
            "records of a domain share a preference here, so there is no load to "
            "balance.</p></section>"
        )
    return (
        '<section id="balance"><h2>Equal preferences: the balancing</h2>'
        + "".join(_balance_chart(group) for group in groups)
        + "</section>"
    )


def _sessions(group: BalanceGroup) -> str:
    """How many of the messages chose their host themselves, when sessions were reused."""
    if group.choices == group.total:
        return ""
    return (
        f", over {group.choices} session(s) that chose a host (the chi-square test counts "
        "those: a reused session carries messages without a choice of its own)"
    )


def _balance_chart(group: BalanceGroup) -> str:
    row, left, width = 34, 150, 230
    height = 16 + row * len(group.hosts) + 22
    out = [
        f'<figure class="balance" data-group="{_e(group.domain)}:{group.preference}">'
        f"<figcaption>{_e(group.domain)}, preference {group.preference}: "
        f"{group.total} message(s) among {len(group.hosts)} hosts{_sessions(group)}</figcaption>"
        f'<svg viewBox="0 0 520 {height}" role="img" aria-label="share of each host">'
    ]
    expected_x = left + width * (group.hosts[0].expected if group.hosts else 0)
    for index, host in enumerate(group.hosts):
        y = 10 + index * row
        out.append(
            f'<g data-host="{_e(host.host)}"><text class="lane-name" x="0" y="{y + 16}">'
            f'{_e(host.host)}</text><rect class="track" x="{left}" y="{y + 4}" width="{width}" '
            f'height="16"/><rect class="bar" x="{left}" y="{y + 4}" '
            f'width="{width * host.share:.1f}" height="16"/>'
            f'<text class="value" x="{left + width + 8}" y="{y + 16}">{host.accepted} · '
            f"{host.share:.1%}</text></g>"
        )
    bottom = 10 + row * len(group.hosts)
    out.append(
        f'<line class="expected" x1="{expected_x:.1f}" y1="6" x2="{expected_x:.1f}" '
        f'y2="{bottom}"/><text class="caption" x="{expected_x:.1f}" y="{bottom + 14}" '
        f'text-anchor="middle">fair share {group.hosts[0].expected:.1%}</text></svg>'
    )
    degrees = "degree" if group.dof == 1 else "degrees"
    stats = (
        f"chi-square {group.statistic:.2f} with {group.dof} {degrees} of freedom: "
        if group.statistic is not None
        else ""
    )
    verdict_class = "bad" if group.biased else "ok"
    out.append(f'<p class="verdict {verdict_class}">{_e(stats + verdict(group))}</p></figure>')
    return "".join(out)


# --- paths, expectations, findings ---------------------------------------------------------------


def _short_names(flow: Flow) -> dict[int, str]:
    """Lane index -> a short name: the first label when that is unambiguous."""
    firsts = [lane.host.split(".")[0] for lane in flow.lanes]
    return {
        i: first if firsts.count(first) == 1 else lane.host
        for i, (first, lane) in enumerate(zip(firsts, flow.lanes, strict=True))
    }


def _attempts(flow: Flow, path: Path) -> list[tuple[int, float, tuple[tuple[int, str], ...]]]:
    """(attempt, time, ((lane, outcome), …)) for each attempt that made a connection."""
    grouped: dict[int, list[Mark]] = defaultdict(list)
    for index in path.marks:
        mark = flow.marks[index]
        grouped[mark.attempt].append(mark)
    return [
        (number, marks[0].t, tuple((m.lane, m.outcome) for m in marks))
        for number, marks in sorted(grouped.items())
    ]


def _signature(flow: Flow, path: Path) -> tuple[object, ...]:
    tries = tuple(tried for _, _, tried in _attempts(flow, path))
    return (tries, path.status, path.host, path.attempts)


def _tried_text(flow: Flow, tried: tuple[tuple[int, str], ...]) -> str:
    names = _short_names(flow)
    return ", ".join(f"{names[lane]} {_OUTCOME_MARKS[o]} {_OUTCOME_WORDS[o]}" for lane, o in tried)


def _path_story(flow: Flow, path: Path, *, times: bool = True) -> str:
    """One message's way in a sentence: identical attempts in a row folded into one."""
    parts: list[str] = []
    attempts = _attempts(flow, path)
    index = 0
    while index < len(attempts):
        end = index
        while end + 1 < len(attempts) and attempts[end + 1][2] == attempts[index][2]:
            end += 1
        first, last = attempts[index], attempts[end]
        label = f"attempt {first[0]}" if end == index else f"attempts {first[0]} to {last[0]}"
        when = ""
        if times:
            when = (
                f" at {clock_text(first[1])}"
                if end == index
                else f" ({clock_text(first[1])} to {clock_text(last[1])})"
            )
        parts.append(f"{label}{when}: {_tried_text(flow, first[2])}")
        index = end + 1
    ending = {
        "delivered": f"delivered by {path.host}",
        "bounced": "bounced (returned to the sender)",
        "deferred": "still deferred when the run ended",
    }.get(path.status, path.status)
    if times:
        ending += f" at {clock_text(path.at)}"
    ending += f" after {path.attempts} attempt(s)"
    story = "; ".join(parts)
    return f"{story} → {ending}" if story else f"no connection made → {ending}"


def _paths_section(flow: Flow) -> str:
    groups: dict[tuple[object, ...], list[Path]] = defaultdict(list)
    for path in flow.paths:
        groups[_signature(flow, path)].append(path)
    ordered = sorted(groups.values(), key=lambda paths: (-len(paths), paths[0].message))
    rows = []
    for paths in ordered[:30]:
        first = paths[0]
        times = sorted(p.at for p in paths)
        when = (
            clock_text(times[0])
            if times[0] == times[-1]
            else f"{clock_text(times[0])} to {clock_text(times[-1])}"
        )
        which = _ranges([p.message for p in paths])
        rows.append(
            f'<tr data-paths="{len(paths)}"><td class="num">{len(paths)}</td>'
            f"<td>{_e(which)}</td><td>{_e(_path_story(flow, first, times=False))}</td>"
            f'<td><span class="chip s-{first.status}">{first.status}</span></td>'
            f"<td>{when}</td></tr>"
        )
    more = (
        f'<p class="quiet">… and {len(ordered) - 30} other kinds of path.</p>'
        if len(ordered) > 30
        else ""
    )
    return (
        '<section id="paths"><h2>Paths</h2><p class="quiet">Messages that took the same '
        "way are one row.</p>"
        "<table><thead><tr><th>messages</th><th>which</th><th>the way they went</th>"
        "<th>outcome</th><th>final at</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{more}</section>"
    )


def _ranges(numbers: list[int]) -> str:
    """``1-3, 7, 9-12``, shortened past a few ranges."""
    spans: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], n)
        else:
            spans.append((n, n))
    words = [str(a) if a == b else f"{a}-{b}" for a, b in spans]
    return ", ".join(words[:6]) + (f", … ({len(words) - 6} more ranges)" if len(words) > 6 else "")


def _expectations_section(result: RunResult) -> str:
    if not result.expectations:
        return ""
    items = "".join(
        f'<li class="{"ok" if e.ok else "bad"}"><b>{"✔" if e.ok else "✘"}</b> '
        f"<code>{_e(e.text)}</code><br><span>{_e(e.detail)}</span></li>"
        for e in result.expectations
    )
    return f'<section id="expectations"><h2>Expectations</h2><ul>{items}</ul></section>'


def _findings_section(findings: Sequence[Finding], source: str) -> str:
    if not findings:
        return (
            '<section id="findings"><h2>Zone check</h2><p class="quiet">No findings: the '
            "zones have none of the classic MX mistakes.</p></section>"
        )
    items = []
    for f in findings:
        where = f"line {f.line}" if f.line is not None else source
        phase = f", phase {f.phase + 1} (from {format_duration(f.phase_start)})" if f.phase else ""
        tag = f"{f.rule}; {f.rfc}" if f.rfc else f.rule
        about = f"zone {_e(f.zone)} line {f.zone_line}{_e(phase)}" if f.zone else "messages"
        items.append(
            f'<li class="{f.severity}"><span class="chip sev-{f.severity}">{f.severity}</span> '
            f"{about} ({_e(where)}): {_e(f.message)} "
            f'<span class="quiet">[{_e(tag)}]</span><br><i>mend:</i> {_e(f.mend)}</li>'
        )
    return f'<section id="findings"><h2>Zone check</h2><ul>{"".join(items)}</ul></section>'


# --- the inline assets ---------------------------------------------------------------------------

# A session's TLS, as a small badge at the top right of its mark: a padlock (closed and
# filled: verified; closed and hollow: not verified), an open one (TLS failed), or a
# plain-text dot.
_LOCK = '<path d="M-2,-1V-3A2,2 0 0 1 2,-3V-1"/><rect x="-3" y="-1" width="6" height="4.5"/>'
_OPEN_LOCK = '<path d="M-2,-1V-3A2,2 0 0 1 2,-4"/><rect x="-3" y="-1" width="6" height="4.5"/>'
_TLS_SHAPES = {
    "verified": _LOCK,
    "untrusted": _LOCK,
    "failed": _OPEN_LOCK,
    "plain": '<circle r="1.6"/>',
}


def _tls_badge(tls: str, x: float = 6, y: float = -6) -> str:
    if tls not in _TLS_SHAPES:
        return ""
    return f'<g class="tls t-{tls}" transform="translate({x:g},{y:g})">{_TLS_SHAPES[tls]}</g>'


_GLYPHS = {
    "accepted": '<circle r="6.5"/>',
    "refused": '<path d="M-5,-5L5,5M5,-5L-5,5"/>',
    "timeout": '<circle r="5.5"/><path d="M0,-3.2V0H3"/>',
    "tempfail": '<path d="M0,-6.5L6.5,5.5H-6.5Z"/>',
    "rejected": '<rect x="-5.5" y="-5.5" width="11" height="11"/>',
    "lost": '<path d="M0,-6.5L6.5,0L0,6.5L-6.5,0Z"/>',
    "error": '<path d="M-5,-5L5,5M5,-5L-5,5"/>',
}

_DEFS = (
    '<defs><marker id="arrow" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="7" '
    'markerHeight="7" orient="auto"><path d="M0,1L9,5L0,9z" class="arrowhead"/></marker></defs>'
)


# Registered first, so that an error anywhere later is recorded for the self-check.
_EARLY_JS = (
    "window.__errors=[];window.addEventListener('error',function(e){"
    "window.__errors.push(String(e.message||e));});"
)

_JS = """
(function(){
  'use strict';
  var svg=document.getElementById('timeline-svg');
  var data=JSON.parse(document.getElementById('flow-data').textContent);
  var picked=document.getElementById('picked');
  var input=document.getElementById('pick');
  var info=document.getElementById('pick-info');
  var NS='http://www.w3.org/2000/svg';
  function follow(){
    while(picked.firstChild){picked.removeChild(picked.firstChild);}
    var entry=data[String(input.value)];
    if(!entry){info.textContent=input.value?'no such message in the picture':'';return;}
    var line=document.createElementNS(NS,'polyline');
    line.setAttribute('class','path picked s-'+entry.status);
    line.setAttribute('points',entry.points.map(function(p){return p.join(',');}).join(' '));
    picked.appendChild(line);
    info.textContent='message '+input.value+': '+entry.story;
  }
  if(input){input.addEventListener('input',follow);}
  var lanes=svg.querySelectorAll('[data-lane]').length;
  var marks=0;
  svg.querySelectorAll('[data-mark]').forEach(function(m){
    marks+=Number(m.getAttribute('data-count'));
  });
  var check=document.getElementById('selfcheck');
  var ok=lanes===Number(svg.getAttribute('data-lanes'))&&
         marks===Number(svg.getAttribute('data-marks'))&&window.__errors.length===0;
  check.setAttribute('data-lanes',String(lanes));
  check.setAttribute('data-marks',String(marks));
  check.setAttribute('data-errors',window.__errors.join(' | '));
  check.setAttribute('data-ok',String(ok));
})();
"""
