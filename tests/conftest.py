"""Suite-wide settings: the Hypothesis profiles, and an event loop policy that never creates
a loop behind the suite's back.

``ci`` (the default) is what ``make test`` runs: at least 300 random scenarios for the no-loss
property, with no per-example deadline (a scenario's run is real sockets on a virtual clock,
and a slow CI machine must not turn into a flaky test). ``deep`` is the same checks with ten
times the examples, for a night run or before a release::

    HYPOTHESIS_PROFILE=deep .venv/bin/python -m pytest -n 2 tests/reliability

Tests that fix their own ``max_examples`` keep it; the reliability fuzzers scale theirs with
the profile (``tests/reliability/budget.py``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from sandbox.tls.certificates import CertificateAuthority

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "deep",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    """Never let anything create an event loop implicitly.

    looptime's pytest plugin asks the policy for the current loop around every test, sync
    tests included. The default policy answers by creating a loop that nobody closes, and
    ``filterwarnings = error`` then fails the run on its ResourceWarning. Once
    ``set_event_loop(None)`` has been called, the policy raises instead of creating one, which
    the plugin treats as "no loop here"; pytest-asyncio sets its loops explicitly.
    """
    asyncio.set_event_loop(None)


@pytest.fixture(scope="module")
def ca() -> Iterator[CertificateAuthority]:
    """A certificate authority of the sandbox's own (a temporary directory), per test module."""
    from sandbox.tls.certificates import CertificateAuthority

    with CertificateAuthority() as authority:
        yield authority


def pytest_terminal_summary(terminalreporter: object, config: pytest.Config) -> None:
    """The differential suites' agreement tables, when they ran (tests/differential)."""
    from tests.differential.summary import terminal_summary

    terminal_summary(terminalreporter, config)
