"""MX Sandbox: watch and test how mail finds its way by MX records.

An embedded authoritative DNS server, scripted mail hosts and a sender agent that walks the
MX records the way real MTAs do, all on one event loop with virtual time.

The library API in one place::

    from sandbox import load_scenario, run_scenario

    result = run_scenario(load_scenario("scenarios/primary-down.yaml"))
    assert result.ok, [e.detail for e in result.expectations if not e.ok]

and, to test a sender of your own against a served scenario::

    from sandbox import ServedScenario

    async with ServedScenario.from_source("primary-down") as sb:
        ...  # point the sender at sb.dns and sb.smtp_port, then assert on sb.sessions()

Every name below is imported on first use (PEP 562), so that ``import sandbox.core`` stays
light: the core, the scenario model and the errors load no event loop, SMTP or DNS library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.core.policy import PROFILES, Profile
    from sandbox.errors import (
        AddressInUse,
        BindError,
        DnsAddressInUse,
        NotInSandbox,
        NotLoopback,
        OutputError,
        SandboxError,
        ScenarioError,
        ServerError,
        ServerFault,
        ZoneSyntaxError,
    )
    from sandbox.events import (
        AttemptFinished,
        AttemptStarted,
        Connected,
        ConnectFailed,
        ConnectionAttempt,
        ControlAction,
        ControlChanged,
        Decision,
        DecisionAction,
        DnsAnswered,
        DnsAsked,
        DnsServed,
        DsnCreated,
        Emit,
        Event,
        HostAccepted,
        HostPhase,
        HostSession,
        MessageQueued,
        MtaStsChecked,
        PolicyServed,
        RecipientDeferred,
        RecipientFinal,
        RouteChosen,
        RouteFailed,
        RunEnd,
        RunFinished,
        RunStarted,
        SmtpExchange,
        SmtpFailure,
        TlsChecked,
        Transport,
        Warning,
        event_to_dict,
    )
    from sandbox.result.model import (
        DeliveryRow,
        ExpectationResult,
        HostStats,
        ReturnedRow,
        RunResult,
    )
    from sandbox.run import Sandbox, profile_for, run_scenario
    from sandbox.scenario.load import load_scenario, load_scenario_text, scenario_from_mapping
    from sandbox.scenario.model import Scenario
    from sandbox.serve.harness import ConnectAttempt, ServedScenario, Session
    from sandbox.serve.plan import Placement
    from sandbox.serve.world import ServedWorld
    from sandbox.world import World

_EXPORTS: dict[str, tuple[str, ...]] = {
    "sandbox.core.policy": ("PROFILES", "Profile"),
    "sandbox.errors": (
        "AddressInUse",
        "BindError",
        "DnsAddressInUse",
        "NotInSandbox",
        "NotLoopback",
        "OutputError",
        "SandboxError",
        "ScenarioError",
        "ServerError",
        "ServerFault",
        "ZoneSyntaxError",
    ),
    "sandbox.events": (
        "AttemptFinished",
        "AttemptStarted",
        "ConnectFailed",
        "Connected",
        "ConnectionAttempt",
        "ControlAction",
        "ControlChanged",
        "Decision",
        "DecisionAction",
        "DnsAnswered",
        "DnsAsked",
        "DnsServed",
        "DsnCreated",
        "Emit",
        "Event",
        "HostAccepted",
        "HostPhase",
        "HostSession",
        "MessageQueued",
        "MtaStsChecked",
        "PolicyServed",
        "RecipientDeferred",
        "RecipientFinal",
        "RouteChosen",
        "RouteFailed",
        "RunEnd",
        "RunFinished",
        "RunStarted",
        "SmtpExchange",
        "SmtpFailure",
        "TlsChecked",
        "Transport",
        "Warning",
        "event_to_dict",
    ),
    "sandbox.result.model": (
        "DeliveryRow",
        "ExpectationResult",
        "HostStats",
        "ReturnedRow",
        "RunResult",
    ),
    "sandbox.run": ("Sandbox", "profile_for", "run_scenario"),
    "sandbox.scenario.load": ("load_scenario", "load_scenario_text", "scenario_from_mapping"),
    "sandbox.scenario.model": ("Scenario",),
    "sandbox.serve.harness": ("ConnectAttempt", "ServedScenario", "Session"),
    "sandbox.serve.plan": ("Placement",),
    "sandbox.serve.world": ("ServedWorld",),
    "sandbox.world": ("World",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "PROFILES",
    "AddressInUse",
    "AttemptFinished",
    "AttemptStarted",
    "BindError",
    "ConnectAttempt",
    "ConnectFailed",
    "Connected",
    "ConnectionAttempt",
    "ControlAction",
    "ControlChanged",
    "Decision",
    "DecisionAction",
    "DeliveryRow",
    "DnsAddressInUse",
    "DnsAnswered",
    "DnsAsked",
    "DnsServed",
    "DsnCreated",
    "Emit",
    "Event",
    "ExpectationResult",
    "HostAccepted",
    "HostPhase",
    "HostSession",
    "HostStats",
    "MessageQueued",
    "MtaStsChecked",
    "NotInSandbox",
    "NotLoopback",
    "OutputError",
    "Placement",
    "PolicyServed",
    "Profile",
    "RecipientDeferred",
    "RecipientFinal",
    "ReturnedRow",
    "RouteChosen",
    "RouteFailed",
    "RunEnd",
    "RunFinished",
    "RunResult",
    "RunStarted",
    "Sandbox",
    "SandboxError",
    "Scenario",
    "ScenarioError",
    "ServedScenario",
    "ServedWorld",
    "ServerError",
    "ServerFault",
    "Session",
    "SmtpExchange",
    "SmtpFailure",
    "TlsChecked",
    "Transport",
    "Warning",
    "World",
    "ZoneSyntaxError",
    "event_to_dict",
    "load_scenario",
    "load_scenario_text",
    "profile_for",
    "run_scenario",
    "scenario_from_mapping",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found once; later look-ups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
