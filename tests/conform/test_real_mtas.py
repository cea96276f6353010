"""Postfix, Exim and Haraka run the whole catalogue (``mxsandbox conform --smtp``, each in a
network namespace of its own: tests/conform/mtas.py), and say what docs/conformance.md says
they say.

Each test waits for its MTA's fresh report and checks that the run completed (every case of
the catalogue, at least 30 of them graded pass or fail, none left out but the ones waiting for
a host feature, every failure naming its clause and showing its evidence: the DNS queries and
sessions behind it) and that every verdict is the one kept in docs/conformance/mta-NAME.json,
from which the published table is generated. A change of behaviour (an MTA upgraded, a judge
or the runner changed) therefore fails here until the report is regenerated deliberately
(``make conformance``, as root) and shows up as a diff of that file. Where a real MTA's timing
makes a verdict depend on chance, ``mtas.TIMING_DEPENDENT`` names the verdicts allowed and
why (docs/conformance.md, "How strict the comparison is").

``pytest -m conformance`` (root; scripts/setup-differential installs the MTAs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.conform.catalogue import CATALOGUE
from tests.conform.mtas import GRADINGS, TIMING_DEPENDENT, report_name
from tests.helpers import ROOT

MINIMUM_GRADED = 30
WAITING_FOR_A_FEATURE = {case.id for case in CATALOGUE if case.needs - {"self"}}


@pytest.mark.conformance
@pytest.mark.parametrize("mta", sorted(GRADINGS))
def test_the_real_mta_runs_the_catalogue_and_says_what_the_docs_say(
    mta: str, mta_reports: Callable[[str], dict[str, Any]]
) -> None:
    why = GRADINGS[mta].driver.unavailable()
    if why:
        pytest.skip(why)
    fresh = mta_reports(mta)
    cases = {case["id"]: case for case in fresh["cases"]}
    assert list(cases) == [case.id for case in CATALOGUE], "the run left cases out"
    graded = [c for c in cases.values() if c["verdict"] in ("pass", "fail")]
    assert len(graded) >= MINIMUM_GRADED, f"only {len(graded)} cases graded"
    not_run = {c["id"] for c in cases.values() if c.get("pending")}
    assert not_run <= WAITING_FOR_A_FEATURE, f"not run: {not_run - WAITING_FOR_A_FEATURE}"
    for case in json.loads((Path(fresh["out"]) / f"{mta}-full.json").read_text())["cases"]:
        if case["verdict"] == "fail":  # the clause, and what the MTA did, for every failure
            assert case["clause"].startswith("RFC "), case["id"]
            evidence = case["evidence"]
            assert evidence["detail"] == case["detail"], case["id"]
            assert evidence["dns"] or evidence["sessions"], f"{case['id']}: no evidence"

    saved_path = ROOT / "docs" / "conformance" / f"{report_name(mta)}.json"
    saved = {case["id"]: case for case in json.loads(saved_path.read_text())["cases"]}
    changed = []
    for case_id, case in cases.items():
        chance = TIMING_DEPENDENT.get((mta, case_id))
        allowed = chance.verdicts if chance else {saved[case_id]["verdict"]}
        if case["verdict"] not in allowed:
            changed.append(
                f"{case_id}: {saved[case_id]['verdict']} in {saved_path.name}, now "
                f"{case['verdict']} — {case['detail']}"
            )
    assert not changed, (
        f"{fresh['label']} no longer does what docs/conformance.md says (the fresh reports are "
        f"in {fresh['out']}; if the change is meant, regenerate them: make conformance):\n  "
        + "\n  ".join(changed)
    )
