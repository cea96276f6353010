"""MX Sandbox: watch and test how mail finds its way by MX records.

An embedded authoritative DNS server, scripted mail hosts and a sender agent that walks the
MX records the way real MTAs do, all on one event loop with virtual time.

The library API in one place::

    from sandbox import load_scenario, run_scenario

    result = run_scenario(load_scenario("scenarios/primary-down.yaml"))
    assert result.ok, [e.detail for e in result.expectations if not e.ok]
"""

from sandbox.core.policy import PROFILES, Profile
from sandbox.errors import SandboxError, ScenarioError, ZoneSyntaxError
from sandbox.runner import DeliveryRow, HostStats, RunResult, Sandbox, profile_for, run_scenario
from sandbox.scenario import load_scenario, load_scenario_text, scenario_from_mapping

__all__ = [
    "PROFILES",
    "DeliveryRow",
    "HostStats",
    "Profile",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "ScenarioError",
    "ZoneSyntaxError",
    "load_scenario",
    "load_scenario_text",
    "profile_for",
    "run_scenario",
    "scenario_from_mapping",
]
