"""The conformance report as one self-contained HTML page, in the look of the timeline report.

From the report object (``reports.to_json``): a header with the score of each requirement
level, a table of every case (verdict, level, clause, what was seen), then one section per
case with its lesson, its world (the zone text, the hosts' behaviours, DNS faults), a small
timeline drawing (a lane for the sender, one for DNS, one per mail host: each session a bar
coloured by how it ended, each query a tick), the sessions' transcripts, the DNS queries and
what the sender printed. Buttons filter the cases by verdict.

The page needs no network: CSS, SVG and the little JavaScript are inline. Every case section
carries ``data-case`` and ``data-verdict``; a self-check in the page counts them, records any
script error, and writes its verdict into ``#selfcheck`` for a headless browser to read.
"""

from __future__ import annotations

import html
from typing import Any

# Registered first in the page, so that any later script error is recorded for the self-check.
from sandbox.output.report.render import _EARLY_JS

__all__ = ["render_html"]

_WIDTH = 960
_GUTTER = 150
_LANE = 26
_VERDICT_WORDS = {"pass": "pass", "fail": "fail", "info": "informational"}
_LEVELS = ("MUST", "SHOULD", "profile")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(report: dict[str, Any]) -> str:
    cases = report["cases"]
    title = "mxsandbox conform" + (f" — {report['label']}" if report.get("label") else "")
    body = [
        _header(report, title),
        _filters(cases),
        _table(cases),
        *(_case_section(case) for case in cases),
        f'<div id="selfcheck" data-cases="{len(cases)}"></div>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style><script>{_EARLY_JS}</script>"
        "</head><body><main>\n" + "\n".join(body) + f"\n<script>{_JS}</script>\n"
        "</main></body></html>\n"
    )


def _header(report: dict[str, Any], title: str) -> str:
    cards = []
    for level in _LEVELS:
        row = report.get("summary", {}).get(level)
        if not row or not row["total"]:
            continue
        graded = row["pass"] + row["fail"]
        score = f"{row['pass']}/{graded}" if graded else "—"
        state = "ok" if row["fail"] == 0 else "bad"
        cards.append(
            f'<div class="card {state if graded else ""}"><div class="level">{_e(level)}</div>'
            f'<div class="score">{_e(score)}</div><div class="quiet">{row["fail"]} failed · '
            f"{row['info']} informational</div></div>"
        )
    scale = report.get("time_scale", 1)
    return (
        f"<header><h1>{_e(title)}</h1>"
        f'<p class="meta"><b>sender</b> <code>{_e(report.get("sender", ""))}</code></p>'
        f'<p class="meta quiet">mode {_e(report.get("mode", ""))} · case deadline '
        f"{_e(report.get('case_timeout', ''))} s · time scale x{_e(scale)} · "
        f"{len(report['cases'])} cases in {float(report.get('duration', 0)):.1f} s · "
        f"{_e(report.get('started', ''))}</p>"
        f'<div class="cards">{"".join(cards)}</div></header>'
    )


def _filters(cases: list[dict[str, Any]]) -> str:
    counts = {v: sum(c["verdict"] == v for c in cases) for v in _VERDICT_WORDS}
    buttons = [f'<button type="button" data-filter="all" class="on">all {len(cases)}</button>']
    buttons += [
        f'<button type="button" data-filter="{v}">{word} {counts[v]}</button>'
        for v, word in _VERDICT_WORDS.items()
    ]
    return f'<nav class="filters" aria-label="filter the cases">{"".join(buttons)}</nav>'


def _chip(verdict: str) -> str:
    return f'<span class="chip v-{_e(verdict)}">{_e(_VERDICT_WORDS.get(verdict, verdict))}</span>'


def _table(cases: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr data-row="{_e(c["verdict"])}"><td>{_chip(c["verdict"])}</td>'
        f"<td>{_e(c['level'])}</td>"
        f'<td><a href="#case-{_e(c["id"])}"><code>{_e(c["id"])}</code></a></td>'
        f"<td>{_e(c['clause'])}</td><td>{_e(c['detail'])}</td></tr>"
        for c in cases
    )
    return (
        '<section id="cases"><h2>Cases</h2><div class="scroll"><table><thead><tr>'
        "<th>verdict</th><th>level</th><th>case</th><th>clause</th><th>what was seen</th>"
        f"</tr></thead><tbody>{rows}</tbody></table></div></section>"
    )


def _case_section(case: dict[str, Any]) -> str:
    evidence = case.get("evidence", {})
    world = evidence.get("world", {})
    parts = [
        f'<section class="case v-{_e(case["verdict"])}" id="case-{_e(case["id"])}" '
        f'data-case="{_e(case["id"])}" data-verdict="{_e(case["verdict"])}">',
        f"<h2>{_chip(case['verdict'])} <code>{_e(case['id'])}</code> — {_e(case['title'])}</h2>",
        f'<p class="clause"><b>{_e(case["clause"])}</b> · {_e(case["level"])}</p>',
        f'<p class="lesson">{_e(case.get("note", ""))}</p>',
        f'<p class="detail">{_e(case.get("detail", ""))}</p>',
        '<div class="row">',
        f'<div><h3>The world</h3><pre class="zone">{_e(_zone_text(world))}</pre></div>',
        f"<div><h3>Hosts and DNS</h3>{_behaviours(world)}</div>",
        "</div>",
    ]
    if "timeline" in evidence:
        parts.append(_drawing(case, evidence))
        parts.append(_timeline_list(evidence))
        parts.append(_sessions(evidence))
        parts.append(_queries(evidence))
        parts.append(_messages(evidence))
    parts.append("</section>")
    return "\n".join(parts)


def _zone_text(world: dict[str, Any]) -> str:
    return f"$ORIGIN {world.get('domain', '')}.\n{world.get('zone', '')}"


def _behaviours(world: dict[str, Any]) -> str:
    items = [
        f"<li><code>{_e(name)}</code>: {_e(what)}</li>"
        for name, what in world.get("hosts", {}).items()
    ]
    items += [
        f"<li>DNS for <code>{_e(name)}</code>: {_e(what)}</li>"
        for name, what in world.get("dns", {}).items()
    ]
    if not items:
        items.append("<li>every host accepts; DNS answers</li>")
    rcpts = ", ".join(world.get("recipients", []))
    count = world.get("messages", 1)
    items.append(f"<li>{count} message(s) to <code>{_e(rcpts)}</code></li>")
    return f"<ul>{''.join(items)}</ul>"


def _session_kind(outline: str) -> str:
    if "<message>→2" in outline:
        return "accepted"
    if outline.startswith("(nothing") or outline == "":
        return "silent"
    codes = [part.rsplit("→", 1)[-1][:1] for part in outline.split(", ")]
    if "5" in codes:
        return "rejected"
    if "4" in codes:
        return "tempfail"
    return "lost"


def _zone_roles(zone: str) -> list[str]:
    """The hosts of the zone (owners of A and AAAA records), the bounce host left out."""
    roles: list[str] = []
    for line in zone.splitlines():
        words = line.split()
        is_address = len(words) >= 3 and ("A" in words[1:3] or "AAAA" in words[1:3])
        if is_address and words[0] not in roles and words[0] != "returns":
            roles.append(words[0])
    return roles


def _drawing(case: dict[str, Any], evidence: dict[str, Any]) -> str:
    sessions = evidence.get("sessions", [])
    queries = evidence.get("dns", [])
    messages = evidence.get("messages", [])
    end = max(
        [float(evidence.get("ended") or 0.0)]
        + [float(s["closed"] or s["opened"]) for s in sessions]
        + [float(q["t"]) for q in queries]
        + [float(m["ended"] or m["started"] or 0.0) for m in messages],
    )
    end = max(end, 0.001)
    roles = _zone_roles(evidence.get("world", {}).get("zone", ""))
    roles += [r for r in dict.fromkeys(s["role"] for s in sessions) if r not in roles]
    lanes = ["sender", "DNS", *roles]
    height = _LANE * len(lanes) + 24
    plot = _WIDTH - _GUTTER - 10

    def x(t: object) -> float:
        return _GUTTER + plot * min(1.0, max(0.0, float(t or 0.0) / end))  # type: ignore[arg-type]

    shapes = []
    for index, lane in enumerate(lanes):
        y = index * _LANE
        shapes.append(
            f'<g class="lane" data-lane="{_e(lane)}">'
            f'<rect class="lane-bg{" odd" if index % 2 else ""}" '
            f'x="0" y="{y}" width="{_WIDTH}" height="{_LANE}"/>'
            f'<text class="lane-name" x="6" y="{y + 17}">{_e(lane)}</text></g>'
        )
    for m in messages:
        if m.get("started") is None:
            continue
        x1, x2 = x(m["started"]), x(m["ended"] if m["ended"] is not None else end)
        shapes.append(
            f'<rect class="bar s-{_e(m["status"])}" x="{x1:.1f}" y="5" '
            f'width="{max(2.0, x2 - x1):.1f}" height="{_LANE - 10}">'
            f"<title>message {m['number']}: {_e(m['status'])} "
            f"(exit {_e(m['exit_code'])})</title></rect>"
        )
    for q in queries:
        xq = x(q["t"])
        shapes.append(
            f'<line class="tick r-{_e(q["rcode"]).lower()}" x1="{xq:.1f}" x2="{xq:.1f}" '
            f'y1="{_LANE + 4}" y2="{2 * _LANE - 4}"><title>{_e(q["type"])} {_e(q["name"])} → '
            f"{_e(q['rcode'])}</title></line>"
        )
    for s in sessions:
        y = (2 + roles.index(s["role"])) * _LANE
        x1, x2 = x(s["opened"]), x(s["closed"] if s["closed"] is not None else end)
        kind = _session_kind(s["outline"])
        shapes.append(
            f'<rect class="bar k-{kind}" data-session="" x="{x1:.1f}" y="{y + 5}" '
            f'width="{max(3.0, x2 - x1):.1f}" height="{_LANE - 10}">'
            f"<title>{_e(s['host'])} [{_e(s['address'])}]: {_e(s['outline'])}</title></rect>"
        )
    axis = (
        f'<text class="axis" x="{_GUTTER}" y="{height - 6}">0 s</text>'
        f'<text class="axis" x="{_WIDTH - 10}" y="{height - 6}" text-anchor="end">'
        f"{end:.2f} s</text>"
    )
    return (
        '<figure class="drawing"><svg viewBox="0 0 '
        f'{_WIDTH} {height}" role="img" data-sessions="{len(sessions)}" '
        f'aria-label="timeline of case {_e(case["id"])}">{"".join(shapes)}{axis}</svg>'
        '<figcaption class="quiet">A bar per message the sender handled and per SMTP session '
        "a host saw (green accepted, yellow 4xx, purple 5xx, grey cut or silent); a tick per "
        "DNS query. A host that refuses or times out sees no session.</figcaption></figure>"
    )


def _timeline_list(evidence: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="num">{float(row["t"]):.3f}s</td><td>{_e(row["what"])}</td></tr>'
        for row in evidence.get("timeline", [])
    )
    return (
        f"<details open><summary>Timeline</summary><table>{rows}</table></details>" if rows else ""
    )


def _sessions(evidence: dict[str, Any]) -> str:
    blocks = []
    for s in evidence.get("sessions", []):
        lines = "\n".join(f"{side}: {line}" for _, side, line in s["transcript"])
        blocks.append(
            f"<details><summary>{_e(s['host'])} [{_e(s['address'])}] at "
            f"{float(s['opened']):.3f}s: <code>{_e(s['outline'])}</code></summary>"
            f"<pre>{_e(lines)}</pre></details>"
        )
    if not blocks:
        return '<p class="quiet">No SMTP session reached any host.</p>'
    return "<h3>Sessions</h3>" + "".join(blocks)


def _queries(evidence: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="num">{float(q["t"]):.3f}s</td><td>{_e(q["type"])}</td>'
        f"<td><code>{_e(q['name'])}</code></td><td>{_e(q['rcode'])}</td>"
        f'<td class="num">{_e(q["answers"])}</td><td>{_e(q["transport"])}</td></tr>'
        for q in evidence.get("dns", [])
    )
    if not rows:
        return '<p class="quiet">No DNS query reached the server.</p>'
    return (
        "<details><summary>DNS queries</summary><table><thead><tr><th>t</th><th>type</th>"
        "<th>name</th><th>rcode</th><th>answers</th><th>via</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )


def _messages(evidence: dict[str, Any]) -> str:
    blocks = []
    for m in evidence.get("messages", []):
        head = f"message {m['number']} → {_e(', '.join(m['to']))}: {_e(m['status'])}" + (
            f" (exit {_e(m['exit_code'])})" if m.get("exit_code") is not None else ""
        )
        command = " ".join(m.get("command", []))
        blocks.append(
            f'<details><summary>{head}</summary><p class="quiet"><code>{_e(command)}</code>'
            f"</p><pre>{_e(m.get('output', ''))}</pre></details>"
        )
    return "<h3>What the sender said</h3>" + "".join(blocks) if blocks else ""


_CSS = """
:root{--ink:#1d2733;--quiet:#5b6673;--line:#d5dbe1;--ok:#2e7d32;--bad:#c62828;--info:#1565c0;
--accepted:#2e7d32;--tempfail:#f9a825;--rejected:#7b1fa2;--lost:#78909c}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 22px 40px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:0 0 6px}
h3{font-size:15px;margin:10px 0 4px}
section,header{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 16px;
margin:0 0 14px}
section.case.v-fail{border-left:5px solid var(--bad)}
section.case.v-pass{border-left:5px solid var(--ok)}
section.case.v-info{border-left:5px solid var(--info)}
.meta{margin:4px 0}.quiet{color:var(--quiet);font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:10px 0 0}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:150px}
.card.ok{border-color:var(--ok)}.card.bad{border-color:var(--bad)}
.card .level{font-weight:600;color:var(--quiet)}.card .score{font-size:24px;font-weight:700}
.card.ok .score{color:var(--ok)}.card.bad .score{color:var(--bad)}
.chip{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;font-weight:600;
background:#eceff1}
.chip.v-pass{background:#e3f4e4;color:var(--ok)}.chip.v-fail{background:#fde4e4;color:var(--bad)}
.chip.v-info{background:#e3eefb;color:var(--info)}
.filters{margin:0 0 14px;display:flex;gap:8px}
.filters button{font:inherit;border:1px solid var(--line);background:#fff;border-radius:14px;
padding:3px 12px;cursor:pointer}.filters button.on{background:var(--ink);color:#fff}
.hidden{display:none}
.clause{margin:4px 0}.lesson{margin:4px 0;font-style:italic}.detail{margin:6px 0;font-weight:600}
.row{display:flex;gap:14px;flex-wrap:wrap}.row>div{flex:1 1 380px}
pre{background:#f3f5f7;border-radius:6px;padding:8px 10px;overflow-x:auto;margin:4px 0;
font:13px ui-monospace,"DejaVu Sans Mono",monospace}
code{font:13px ui-monospace,"DejaVu Sans Mono",monospace}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--quiet);font-size:13px}td.num{text-align:right;white-space:nowrap}
.scroll{overflow-x:auto}details{margin:4px 0}summary{cursor:pointer}
figure.drawing{margin:8px 0}svg{display:block;width:100%;height:auto}
.lane-bg{fill:#fff}.lane-bg.odd{fill:#fafbfc}
.lane-name{font:600 12px system-ui,sans-serif;fill:var(--ink)}
.axis{font:11px system-ui,sans-serif;fill:var(--quiet)}
.bar{stroke:#0003;stroke-width:1}
.k-accepted,.s-delivered{fill:var(--accepted)}.k-tempfail,.s-deferred{fill:var(--tempfail)}
.k-rejected,.s-failed{fill:var(--rejected)}.k-lost,.k-silent,.s-running,.s-error{fill:var(--lost)}
.tick{stroke:#1976d2;stroke-width:2}.tick.r-nxdomain{stroke:var(--bad)}
.tick.r-servfail,.tick.r-dropped{stroke:#ef6c00}
"""

_JS = """
(function(){
  'use strict';
  var buttons=document.querySelectorAll('[data-filter]');
  function show(which){
    buttons.forEach(function(b){b.classList.toggle('on',b.getAttribute('data-filter')===which);});
    document.querySelectorAll('[data-case]').forEach(function(s){
      s.classList.toggle('hidden',which!=='all'&&s.getAttribute('data-verdict')!==which);
    });
    document.querySelectorAll('[data-row]').forEach(function(r){
      r.classList.toggle('hidden',which!=='all'&&r.getAttribute('data-row')!==which);
    });
  }
  buttons.forEach(function(b){
    b.addEventListener('click',function(){show(b.getAttribute('data-filter'));});
  });
  var check=document.getElementById('selfcheck');
  var cases=document.querySelectorAll('[data-case]').length;
  var rows=document.querySelectorAll('[data-row]').length;
  var ok=cases===Number(check.getAttribute('data-cases'))&&rows===cases&&
         window.__errors.length===0;
  check.setAttribute('data-counted',String(cases));
  check.setAttribute('data-errors',window.__errors.join(' | '));
  check.setAttribute('data-ok',String(ok));
})();
"""
