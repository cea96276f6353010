"""``python -m tests.differential.digest DIR [MTA] [CASE]``: what each real MTA did, case by
case, from the records ``python -m tests.differential --out DIR`` wrote — attempts with their
unscaled times (real seconds x S, from the MTA's time origin), hosts, outcome and DSN, the DSN
sent back, and the MTA's own log lines about the message. The raw material of FINDINGS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.differential.suite import MTAS


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def digest(record: dict[str, Any], scale: float, lines: int = 12) -> str:
    out = [f"### {record['mta']} / {record['case']}"]
    if record.get("error"):
        return "\n".join([*out, "harness error:", record["error"]])
    origin = record["real"]["origin"]
    for side in ("real", "run"):
        for delivery in record[side]["deliveries"]:
            tries = [
                f"{_clock((a['t'] - origin) * scale)}{' (skipped)' if a['skipped'] else ''} "
                f"{'→'.join(a['hosts']) or '-'} {a['outcome']} {a['dsn'] or ''}".rstrip()
                for a in delivery["attempts"]
            ]
            returned = (
                f", DSN back (Status {delivery['returned_status']})" if delivery["returned"] else ""
            )
            out.append(
                f"- {side}: m{delivery['message']} {delivery['recipient']}: {delivery['status']} "
                f"dsn={delivery['dsn']} relay={delivery['relay']}{returned}; "
                f"{len(delivery['attempts'])} attempts: "
                + "; ".join(tries[:8])
                + (" …" if len(tries) > 8 else "")
            )
            if side == "real":
                out += [f"    {line}" for line in delivery["log"][:lines]]
        out.append(f"- {side} sessions: {record[side]['sessions']}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    mtas = [argv[1]] if len(argv) > 1 else list(MTAS)
    for mta in mtas:
        for path in sorted(folder.glob(f"{mta}-*.json")):
            if path.name.endswith("-results.json") or path.name.endswith("-run.json"):
                continue
            record = json.loads(path.read_text())
            if len(argv) > 2 and record["case"] != argv[2]:
                continue
            print(digest(record, MTAS[mta].scale))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
