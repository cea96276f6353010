"""One test per (MTA, case): ``mxsandbox run --profile MTA`` must do what the real MTA did,
field by field, except where tests/differential/pending.py excuses a difference.

Run them with ``pytest -m differential`` (root, and scripts/setup-differential first); the
tables and every case's record land in the session's temporary directory, and
``python -m tests.differential`` prints the same tables on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.differential.suite import MTAS, cases_for

PAIRS = [(mta, case) for mta in MTAS for case in cases_for(mta)]


@pytest.mark.differential
@pytest.mark.parametrize(("mta", "case"), PAIRS, ids=[f"{m}-{c}" for m, c in PAIRS])
def test_profile_matches_the_real_mta(
    mta: str, case: str, differential_results: Callable[[str], dict[str, Any]]
) -> None:
    why = MTAS[mta].unavailable()
    if why:
        pytest.skip(why)
    results = differential_results(mta)
    found = {c["case"]: c for c in results["cases"]}
    assert case in found, f"the runner did not play {case} for {mta}"
    played = found[case]
    assert played["error"] is None, f"the harness failed:\n{played['error']}"
    problems = [
        f"{field}: {verdict['cell']}"
        for field, verdict in played["verdict"].items()
        if verdict["state"] == "differ" and not verdict["excused"]
    ]
    assert not problems, (
        f"mxsandbox run --profile {results['mta']} differs from {results['version']} on "
        f"{case}:\n  " + "\n  ".join(problems)
    )
