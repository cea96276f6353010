"""The look of the HTML report, shared by every page that should look like it: the report
(``render.py``) and serve's live page (``sandbox/serve/live``): the colours of the outcomes and
the phases, the sections, lanes, marks, chips and tables."""

from __future__ import annotations

__all__ = ["REPORT_CSS"]

REPORT_CSS = """
:root{--ink:#1d2733;--quiet:#5b6673;--line:#d5dbe1;--ok:#2e7d32;--bad:#c62828;--warn:#b26a00;
--accepted:#2e7d32;--refused:#d32f2f;--timeout:#ef6c00;--tempfail:#f9a825;--rejected:#7b1fa2;
--lost:#546e7a;--error:#757575}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 22px 40px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:0 0 8px}
section,header{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 16px;
margin:0 0 14px}
.description{margin:4px 0 8px;color:var(--quiet);max-width:80em}
.headline{font-size:16px;font-weight:600;margin:6px 0}
.meta{margin:6px 0 0}.quiet{color:var(--quiet);font-size:13px}
.chip{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;font-weight:600;
background:#eceff1}
.chip.s-delivered,.chip.ok{background:#e3f4e4;color:var(--ok)}
.chip.s-bounced,.chip.bad{background:#fde4e4;color:var(--bad)}
.chip.s-deferred{background:#fff1d6;color:var(--warn)}
.chip.sev-error{background:#fde4e4;color:var(--bad)}
.chip.sev-warning{background:#fff1d6;color:var(--warn)}
.chip.sev-info{background:#e3eefb;color:#1565c0}
.row{display:flex;gap:14px;flex-wrap:wrap}.row>section{flex:1 1 460px}
.scroll{overflow-x:auto}svg{display:block;width:100%;height:auto}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;margin:0 0 6px;font-size:13px;color:var(--quiet)}
.key{display:inline-flex;align-items:center;gap:5px}
.swatch{display:inline-block;width:18px;height:12px;border:1px solid #0002;border-radius:2px}
i.line{display:inline-block;width:22px;height:0;border-top-width:3px;border-top-style:solid}
.lane-bg{fill:#fff}.lane-bg.odd{fill:#fafbfc}
.lane-name{font:600 13px system-ui,sans-serif;fill:var(--ink)}
.lane-info{font:11px system-ui,sans-serif;fill:var(--quiet)}
.phase-label{font:12px system-ui,sans-serif;fill:#000a}
.count{font:600 10px system-ui,sans-serif;fill:var(--ink)}
.key svg{display:inline-block;width:16px;height:16px}
.phase{stroke:#0001}
.k-up{fill:#e8f5e9;background:#e8f5e9}
.k-refuse{fill:#ffd6d6;background:#ffd6d6}
.k-timeout{fill:#ffe3c2;background:#ffe3c2}
.k-silent{fill:#e6dcf2;background:#e6dcf2}
.k-tempfail{fill:#fff0b3;background:#fff0b3}
.k-greylist{fill:#dfe3ea;background:#dfe3ea}
.k-reject{fill:#f3d0e6;background:#f3d0e6}
.k-drop{fill:#e8dcd5;background:#e8dcd5}
.k-slow{fill:#d7ecfa;background:#d7ecfa}
.k-partial{fill:#f1f5d0;background:#f1f5d0}
.axis line{stroke:#9aa5b1}.axis .grid{stroke:#0000001a}
.axis text{font:11px system-ui,sans-serif;fill:var(--quiet)}
.axis .caption,.caption{font:12px system-ui,sans-serif;fill:var(--quiet)}
.moment line{stroke:#1565c0;stroke-width:1.5;stroke-dasharray:5 4}
.moment.m-cache line{stroke:#6a1b9a}
.moment text{font:600 11px system-ui,sans-serif;fill:#1565c0}.moment.m-cache text{fill:#6a1b9a}
.moments-list{margin:6px 0 0;padding-left:22px;font-size:13px;color:var(--quiet)}
tr.answer td{font-weight:600;color:var(--quiet);font-size:13px}
.mark circle,.mark path,.mark rect{stroke-width:2}
.tls path,.tls rect,.tls circle{stroke-width:1.2}
.t-verified rect{fill:#2e7d32;stroke:#2e7d32}.t-verified path{fill:none;stroke:#2e7d32}
.t-untrusted rect{fill:#fff;stroke:#e08e00}.t-untrusted path{fill:none;stroke:#e08e00}
.t-failed rect{fill:#c62828;stroke:#c62828}.t-failed path{fill:none;stroke:#c62828}
.t-plain circle{fill:#777;stroke:#777}
.o-accepted circle{fill:var(--accepted);stroke:#fff}
.o-refused path,.o-error path{fill:none;stroke-width:3;stroke-linecap:round}
.o-refused path{stroke:var(--refused)}.o-error path{stroke:var(--error)}
.o-timeout circle{fill:#fff;stroke:var(--timeout);stroke-width:2.5}
.o-timeout path{fill:none;stroke:var(--timeout);stroke-width:1.6}
.o-tempfail path{fill:var(--tempfail);stroke:#8a6100;stroke-width:1}
.o-rejected rect{fill:var(--rejected);stroke:#fff;stroke-width:1}
.o-lost path{fill:var(--lost);stroke:#fff;stroke-width:1}
.seg{stroke:#fff;stroke-width:.5}
.seg.o-accepted{fill:var(--accepted)}.seg.o-refused{fill:var(--refused)}
.seg.o-timeout{fill:var(--timeout)}.seg.o-tempfail{fill:var(--tempfail)}
.seg.o-rejected{fill:var(--rejected)}.seg.o-lost{fill:var(--lost)}.seg.o-error{fill:var(--error)}
.path{fill:none;stroke-width:2.2;stroke-opacity:.55;stroke-linejoin:round}
.path.crowded{stroke-width:1.2;stroke-opacity:.35}
.path:hover,.path.picked{stroke-opacity:1;stroke-width:3.2}
.s-delivered{stroke:var(--ok);border-color:var(--ok)}
.s-bounced{stroke:var(--bad);border-color:var(--bad)}
.s-deferred{stroke:var(--warn);border-color:var(--warn)}
.arrowhead{fill:#37474f;fill-opacity:.7}
.flow-key{border-color:#37474f80}
.flow{stroke:#37474f;stroke-opacity:.28;stroke-linecap:round}
.picker{margin:8px 0 0;font-size:14px}.picker input{width:110px;font:inherit;padding:2px 6px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--quiet);font-size:13px}td.num{text-align:right;font-weight:600}
.note{margin:6px 0 0}
figure.balance{margin:0 0 10px}figcaption{font-weight:600;margin:0 0 4px}
.balance .track{fill:#eceff1}.balance .bar{fill:#1976d2}
.balance .value{font:600 13px system-ui,sans-serif;fill:var(--ink)}
.balance .expected{stroke:var(--ink);stroke-width:1.5;stroke-dasharray:4 3}
.verdict{margin:4px 0 0;font-weight:600}.verdict.ok{color:var(--ok)}.verdict.bad{color:var(--bad)}
#expectations ul,#findings ul{list-style:none;margin:0;padding:0}
#expectations li,#findings li{padding:5px 0;border-bottom:1px solid var(--line)}
#expectations li.ok b{color:var(--ok)}#expectations li.bad b{color:var(--bad)}
#expectations li span{color:var(--quiet);font-size:13px}
code{font:13px ui-monospace,"DejaVu Sans Mono",monospace}
"""
