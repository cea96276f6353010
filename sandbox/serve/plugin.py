"""The pytest plugin (registered through the ``pytest11`` entry point): the ``mx_sandbox``
fixture.

::

    async def test_failover(mx_sandbox):
        sb = await mx_sandbox("primary-down")   # a shipped scenario, a file, or an inline dict
        await my_sender.send(dns=sb.dns, smtp_port=sb.smtp_port, ...)
        sb.assert_tried_in_order(["mx1.example.test", "mx2.example.test"])
        sb.assert_accepted("mx2.example.test")

``mx_sandbox(scenario, retain="events=100000")`` keeps more (or less) than the defaults (see
``sandbox.serve.retention``).

The fixture is a function: each call serves one scenario in the test's event loop (real
time; pytest-asyncio runs the test), and every sandbox it started is stopped at teardown.
Errors raised inside the servers are raised again at teardown (and by the assertion
helpers), so a crash in a server fails the test that caused it. Each sandbox listens on a
random 127.B.C.0/24 block at free ports, so pytest-xdist workers never collide.

No configuration is needed: an ``async def`` test that asks for ``mx_sandbox`` is marked
``@pytest.mark.asyncio`` here, so it runs in pytest-asyncio's default strict mode as in its
``auto`` mode. (pytest-asyncio comes with ``pip install 'mxsandbox[pytest]'``.)
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any, Protocol

import pytest

from sandbox.events import Emit
from sandbox.serve.harness import ScenarioSource, ServedScenario, load_source
from sandbox.serve.retention import RetentionSpec

__all__ = ["MxSandbox", "mx_sandbox", "pytest_pycollect_makeitem"]

_FIXTURE = "mx_sandbox"


class MxSandbox(Protocol):
    """The fixture's type, for annotations: ``async def test_x(mx_sandbox: MxSandbox)``."""

    def __call__(
        self,
        scenario: ScenarioSource,
        *,
        on_event: Emit | None = None,
        control: tuple[str, int] | None = None,
        retain: RetentionSpec = None,
    ) -> Awaitable[ServedScenario]: ...


def _fixture(
    function: Callable[[pytest.FixtureRequest], AsyncIterator[MxSandbox]],
) -> Any:
    """pytest-asyncio's fixture decorator, so that the fixture works in strict mode too."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - pytest-asyncio comes with the dev extras

        @pytest.fixture(name=_FIXTURE)
        def missing() -> None:
            pytest.fail(
                "the mx_sandbox fixture needs pytest-asyncio: pip install 'mxsandbox[pytest]'"
            )

        return missing
    return pytest_asyncio.fixture(name=_FIXTURE)(function)


async def _mx_sandbox(request: pytest.FixtureRequest) -> AsyncIterator[MxSandbox]:
    started: list[ServedScenario] = []
    base = Path(request.config.rootpath)

    async def serve(
        scenario: ScenarioSource,
        *,
        on_event: Emit | None = None,
        control: tuple[str, int] | None = None,
        retain: RetentionSpec = None,
    ) -> ServedScenario:
        served = ServedScenario(
            load_source(scenario, base=base), on_event=on_event, control=control, retain=retain
        )
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


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, Any, None]:
    """Mark every ``async def`` test that uses ``mx_sandbox`` with ``@pytest.mark.asyncio``.

    pytest-asyncio turns marked coroutine tests into tests it runs, in a hook wrapper around
    this same hook. Being the innermost wrapper (``trylast``), this one sees the collected
    items first and adds the mark; without it, pytest-asyncio's default strict mode would
    leave the test to pytest, which fails it with "async def functions are not natively
    supported". A test already marked (or run by another plugin, such as anyio) is left as
    it is.
    """
    outcome = yield
    if not inspect.iscoroutinefunction(obj) or outcome.excinfo is not None:
        return
    try:
        import pytest_asyncio  # noqa: F401 - only to know that the mark means something
    except ImportError:  # pragma: no cover - the fixture itself says what is missing
        return
    collected = outcome.get_result()
    items = collected if isinstance(collected, list) else [collected]
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if _FIXTURE not in item.fixturenames:
            continue
        if item.get_closest_marker("asyncio") or item.get_closest_marker("anyio"):
            continue
        item.add_marker(pytest.mark.asyncio)
