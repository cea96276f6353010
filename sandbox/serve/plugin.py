"""The pytest plugin (registered through the ``pytest11`` entry point): the ``mx_sandbox``
fixture.

::

    async def test_failover(mx_sandbox):
        sb = await mx_sandbox("scenarios/primary-down.yaml")   # or an inline dict
        await my_sender.send(dns=sb.dns, smtp_port=sb.smtp_port, ...)
        sb.assert_accepted("mx2.example.test")

``mx_sandbox(scenario, retain="events=100000")`` keeps more (or less) than the defaults (see
``sandbox.serve.retention``).

The fixture is a function: each call serves one scenario in the test's event loop (real
time; pytest-asyncio runs the test), and every sandbox it started is stopped at teardown.
Errors raised inside the servers are raised again at teardown (and by the assertion
helpers), so a crash in a server fails the test that caused it. Each sandbox listens on a
random 127.B.C.0/24 block at free ports, so pytest-xdist workers never collide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from sandbox.events import Emit
from sandbox.serve.harness import ScenarioSource, ServedScenario, load_source
from sandbox.serve.retention import RetentionSpec

__all__ = ["MxSandbox", "mx_sandbox"]


class MxSandbox(Protocol):
    """The fixture's type, for annotations: ``async def test_x(mx_sandbox: MxSandbox)``."""

    def __call__(
        self,
        scenario: ScenarioSource,
        *,
        on_event: Emit | None = None,
        retain: RetentionSpec = None,
    ) -> Awaitable[ServedScenario]: ...


def _fixture(
    function: Callable[[pytest.FixtureRequest], AsyncIterator[MxSandbox]],
) -> Any:
    """pytest-asyncio's fixture decorator, so that the fixture works in strict mode too."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - pytest-asyncio comes with the dev extras

        @pytest.fixture(name="mx_sandbox")
        def missing() -> None:
            pytest.fail("the mx_sandbox fixture needs pytest-asyncio: pip install pytest-asyncio")

        return missing
    return pytest_asyncio.fixture(name="mx_sandbox")(function)


async def _mx_sandbox(request: pytest.FixtureRequest) -> AsyncIterator[MxSandbox]:
    started: list[ServedScenario] = []
    base = Path(request.config.rootpath)

    async def serve(
        scenario: ScenarioSource, *, on_event: Emit | None = None, retain: RetentionSpec = None
    ) -> ServedScenario:
        served = ServedScenario(load_source(scenario, base=base), on_event=on_event, retain=retain)
        await served.start()
        started.append(served)
        return served

    yield serve
    try:
        for served in reversed(started):
            await served.stop()
    finally:
        for served in started:
            served.raise_errors()


mx_sandbox = _fixture(_mx_sandbox)
