"""Scenarios: the typed model (``model``) and the YAML loader that builds it (``load``)."""

from sandbox.scenario.load import load_scenario, load_scenario_text, scenario_from_mapping
from sandbox.scenario.model import (
    STAGES,
    Behaviour,
    DeliveryExpectation,
    DnsBehaviour,
    Expectation,
    HostExpectation,
    MessageSpec,
    Phase,
    Reply,
    Scenario,
    SenderSpec,
    Stage,
    Timeline,
    ZoneSpec,
)

__all__ = [
    "STAGES",
    "Behaviour",
    "DeliveryExpectation",
    "DnsBehaviour",
    "Expectation",
    "HostExpectation",
    "MessageSpec",
    "Phase",
    "Reply",
    "Scenario",
    "SenderSpec",
    "Stage",
    "Timeline",
    "ZoneSpec",
    "load_scenario",
    "load_scenario_text",
    "scenario_from_mapping",
]
