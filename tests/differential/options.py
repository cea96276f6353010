"""How a few cases are compared, where the plain field-by-field rule would compare chance.

- ``unordered_hosts``: equal-preference MX records are shuffled by the MTA and by the sandbox
  (each with its own randomness): compare the set of hosts per attempt, not their order.
- ``sessions``: ``"total"`` compares the number of SMTP sessions over all hosts, not per
  host (which host of an equal-preference pair gets how many is chance).
- ``tolerance``: attempt times agree within this many real seconds (default: the MTA's).
- ``totals``: fields compared over all the messages together, where which message gets which
  host, or which message the MTA takes first, is chance or internal ordering: ``attempts``
  and ``skipped`` as sums, ``hosts`` as how many hosts the attempts tried, ``times`` as the
  first and last final delivery, the others as the set of values.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CASE_MTAS", "CASE_OPTIONS", "options_for", "plays"]

# case -> options for every MTA; "mta:case" -> options for that MTA only (they win).
CASE_OPTIONS: dict[str, dict[str, Any]] = {
    "equal-preference": {"unordered_hosts": True, "sessions": "total"},
    "twenty-messages-equal-preference": {
        "unordered_hosts": True,
        "sessions": "total",
        "totals": ("relay", "hosts", "times"),
    },
    "fifty-messages-421": {"totals": ("attempts", "hosts", "times", "skipped")},
    "twelve-messages-421": {"totals": ("attempts", "hosts", "times", "skipped")},
    # Which of seven equal hosts come first is chance; how many one attempt tries is not.
    "seven-equal-mx-refusing": {"unordered_hosts": True, "totals": ("hosts",)},
    # Haraka retries each message on its own schedule (no queue scans): per message.
    "haraka:fifty-messages-421": {"totals": ()},
}


def options_for(mta: str, case: str) -> dict[str, Any]:
    return {**CASE_OPTIONS.get(case, {}), **CASE_OPTIONS.get(f"{mta}:{case}", {})}


# Which MTAs play a case (default: all). Cases longer than CI can afford for an MTA, or that
# the MTA's configuration cannot express, are left out for it; FINDINGS.md says why.
CASE_MTAS: dict[str, tuple[str, ...]] = {
    # Haraka's doubling (64 s, 128 s, …) would take 2^12 s to reach the hour: ~130 s real.
    "down-for-an-hour": ("postfix", "exim"),
    # Exim gives up at the last retry rule's cutoff (4 days: 38 min real at S = 150), and the
    # run copy cannot override the profile's retry rules (`retry_rules` is no sender key).
    "give-up": ("postfix", "haraka"),
    "give-up-421": ("postfix", "haraka"),
    # Exim's queue runner delivers one message after the other, in real time: at S = 150 fifty
    # take it longer than its scaled retry times, so Exim plays the case with twelve.
    "fifty-messages-421": ("postfix", "haraka"),
    "twelve-messages-421": ("exim",),
    # STARTTLS, MTA-STS and DANE (issue 14): Postfix at each TLS level it documents, with the
    # sandbox's CA as its smtp_tls_CAfile. Exim's TLS is its build's default (GnuTLS, the
    # system's CAs) and Haraka's is off: their cases do not look at TLS.
    "tls-may": ("postfix",),
    "tls-encrypt": ("postfix",),
    "tls-dane": ("postfix",),
}


def plays(mta: str, case: str) -> bool:
    return mta in CASE_MTAS.get(case, (mta,))
