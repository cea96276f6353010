"""Kept so that ``from sandbox.harness import ServedScenario`` goes on working: the test double
lives in ``sandbox.serve.harness`` (and ``ServedScenario`` is exported by ``sandbox``)."""

from sandbox.serve.harness import ScenarioSource, ServedScenario, Session, load_source

__all__ = ["ScenarioSource", "ServedScenario", "Session", "load_source"]
