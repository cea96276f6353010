"""How much work the reliability tests do: CI's budget, or ten times it in the deep profile.

Every loop in these tests is bounded by a count from here, so the folder stays within a few
minutes of CI time and ``HYPOTHESIS_PROFILE=deep`` turns the same tests into a long soak.
"""

from __future__ import annotations

import os

__all__ = ["DEEP", "scaled"]

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"


def scaled(ci: int, deep: int | None = None) -> int:
    """``ci`` in the ci profile; ``deep`` (ten times ``ci`` unless given) in the deep one."""
    if not DEEP:
        return ci
    return deep if deep is not None else ci * 10
