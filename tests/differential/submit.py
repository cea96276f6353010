"""Submit messages over SMTP, run inside a namespace: ``python -m tests.differential.submit
HOST PORT`` reads a JSON list of ``{"from", "to": [...], "data"}`` on stdin and sends each in
its own session (Haraka takes its mail this way)."""

from __future__ import annotations

import json
import smtplib
import sys


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    for item in json.load(sys.stdin):
        with smtplib.SMTP(host, port, timeout=30) as client:
            data = item["data"].replace("\r\n", "\n").replace("\n", "\r\n")
            client.sendmail(item["from"], item["to"], data.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
