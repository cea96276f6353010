"""Balancing statistics: did equal-preference MX hosts share the mail evenly?

RFC 5321 §5.1 asks a sender to pick at random among MX records of equal preference, so that
the load is spread. Over many choices each of the k hosts of such a group should be picked
about 1/k of the time. "About" is made precise with Pearson's chi-square goodness-of-fit
test: the statistic sums (observed - expected)² / expected over the hosts, and its p-value
(k - 1 degrees of freedom) is the chance that a fair random choice would give a split at
least this uneven. A tiny p-value means chance does not explain the split: the sender is
biased (or a host was down, which the report shows).

What is counted is the choices, not the messages: a message that goes over a session kept
open from an earlier delivery (a connection cache, as Postfix and Exim keep one for a busy
destination) follows the message that opened the session, and makes no draw of its own. A
sender that reuses sessions spreads its sessions evenly, and the messages each session
carried with them: twenty sessions carrying 200 messages make a split of 82 and 118
messages that is no sign of bias, and testing the 200 as independent draws would say it is.

The p-value is the regularised upper incomplete gamma function Q(k/2, x/2), computed here
with the series and the continued fraction of Numerical Recipes (§6.2) rather than by adding
scipy for one function. The tests check it against tabulated critical values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sandbox.events import Connected, RecipientFinal, RouteChosen

if TYPE_CHECKING:
    from sandbox.events import Event

__all__ = [
    "SIGNIFICANCE",
    "BalanceGroup",
    "HostShare",
    "balance_groups",
    "chi_square",
    "chi_square_p",
    "format_p",
    "regularized_gamma_q",
    "verdict",
]

# Below this p-value, an uneven split is called a bias, not chance. Strict on purpose: with
# a fixed seed a fair sender lands below 0.05 one run in twenty, below 0.001 one in a thousand.
SIGNIFICANCE = 0.001
# The chi-square approximation is trusted when every expected count is at least this.
MIN_EXPECTED = 5.0

_EPSILON = 1e-15
_TINY = 1e-300
_MAX_ITERATIONS = 10_000


def regularized_gamma_q(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a), the regularised upper incomplete gamma function."""
    if a <= 0:
        raise ValueError(f"a must be positive, not {a}")
    if x < 0:
        raise ValueError(f"x must not be negative, not {x}")
    if x == 0:
        return 1.0
    # The series converges fast below a + 1, the continued fraction above it.
    if x < a + 1:
        return max(0.0, 1.0 - _lower_series(a, x))
    return _upper_fraction(a, x)


def _log_prefactor(a: float, x: float) -> float:
    return -x + a * math.log(x) - math.lgamma(a)


def _lower_series(a: float, x: float) -> float:
    """P(a, x) by its power series."""
    term = total = 1.0 / a
    denominator = a
    for _ in range(_MAX_ITERATIONS):
        denominator += 1
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _EPSILON:
            break
    return total * math.exp(_log_prefactor(a, x))


def _upper_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction, evaluated with the modified Lentz method."""
    b = x + 1 - a
    c = 1 / _TINY
    d = 1 / b
    fraction = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        step = d * c
        fraction *= step
        if abs(step - 1) < _EPSILON:
            break
    return math.exp(_log_prefactor(a, x)) * fraction


def chi_square(observed: Sequence[float], expected: Sequence[float]) -> float:
    """Pearson's statistic: the sum of (observed - expected)² / expected."""
    if len(observed) != len(expected):
        raise ValueError("observed and expected must have the same length")
    if any(e <= 0 for e in expected):
        raise ValueError("every expected count must be positive")
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


def chi_square_p(statistic: float, dof: int) -> float:
    """The chance of a statistic at least this large under the null hypothesis."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be at least 1, not {dof}")
    return regularized_gamma_q(dof / 2, statistic / 2)


@dataclass(frozen=True, slots=True)
class HostShare:
    """One host of an equal-preference group: what it took and what a fair split gives it."""

    host: str
    accepted: int
    share: float  # of the group's accepted messages
    expected: float  # 1 / (hosts in the group)
    # Deliveries that reached this host by their own draw, over a session of their own (not
    # one kept open by an earlier message): what the chi-square test counts.
    chosen: int = 0


@dataclass(frozen=True, slots=True)
class BalanceGroup:
    """The MX hosts of one domain at one preference, and how evenly they shared the mail."""

    domain: str
    preference: int
    hosts: tuple[HostShare, ...]
    total: int  # messages the group's hosts accepted for the domain
    statistic: float | None  # None when the group accepted nothing
    dof: int
    p_value: float | None
    choices: int = 0  # the draws the test counts (HostShare.chosen), over all hosts

    @property
    def reliable(self) -> bool:
        """The test's approximation holds: every host expected at least 5 draws."""
        return self.choices / len(self.hosts) >= MIN_EXPECTED

    @property
    def biased(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE

    def share_of(self, host: str) -> HostShare | None:
        return next((h for h in self.hosts if h.host == host), None)


def verdict(group: BalanceGroup) -> str:
    """One sentence on the split, for the summary and the report."""
    if group.p_value is None:
        return "no message reached this group, so there is nothing to test"
    p = format_p(group.p_value)
    caution = "" if group.reliable else " (too few messages for the test to say much)"
    if group.p_value < SIGNIFICANCE:
        return f"p = {p}, not an even split; chance alone does not explain it{caution}"
    if group.p_value < 0.05:
        return f"p = {p}, somewhat uneven, though a fair shuffle does this now and then{caution}"
    return f"p = {p}, consistent with an even split{caution}"


def format_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def balance_groups(events: Sequence[Event]) -> tuple[BalanceGroup, ...]:
    """Every group of two or more equal-preference MX hosts the sender saw, with its split.

    Groups come from the orders the sender chose (``RouteChosen``): hosts are a group when one
    answer gave them the same preference. Two hosts that were each alone at a preference, in
    answers of different times (an MX that moved), shared no load and are no group. The
    counts come from the deliveries (``RecipientFinal``): one per message and domain, however
    many recipients it had, because one SMTP transaction carries them all; a delivery over a
    reused session (``Connected(reused=True)``) counts as accepted but not as a choice.
    """
    groups: dict[tuple[str, int], set[str]] = defaultdict(set)
    for event in events:
        if isinstance(event, RouteChosen) and event.route == "mx":
            together: dict[int, set[str]] = defaultdict(set)
            for preference, host, _ in event.hosts:
                together[preference].add(host)
            for preference, hosts in together.items():
                if len(hosts) > 1:
                    groups[(event.domain, preference)] |= hosts
    taken: dict[tuple[str, str], set[int]] = defaultdict(set)
    chosen: dict[tuple[str, str], set[int]] = defaultdict(set)
    reused: dict[tuple[int, int], bool] = {}  # (message, attempt) -> its last session's
    for event in events:
        if isinstance(event, Connected):
            reused[(event.message, event.attempt)] = event.reused
        elif isinstance(event, RecipientFinal) and event.status == "delivered" and event.host:
            domain = event.recipient.rpartition("@")[2].lower()
            taken[(domain, event.host)].add(event.message)
            if not reused.get((event.message, event.attempts), False):
                chosen[(domain, event.host)].add(event.message)
    return tuple(
        _group(domain, preference, sorted(hosts), taken, chosen)
        for (domain, preference), hosts in sorted(groups.items())
        if len(hosts) > 1
    )


def _group(
    domain: str,
    preference: int,
    hosts: list[str],
    taken: dict[tuple[str, str], set[int]],
    chosen: dict[tuple[str, str], set[int]],
) -> BalanceGroup:
    counts = [len(taken.get((domain, host), ())) for host in hosts]
    draws = [len(chosen.get((domain, host), ())) for host in hosts]
    total, choices = sum(counts), sum(draws)
    fair = 1 / len(hosts)
    shares = tuple(
        HostShare(host, count, count / total if total else 0.0, fair, drawn)
        for host, count, drawn in zip(hosts, counts, draws, strict=True)
    )
    dof = len(hosts) - 1
    if not choices:
        return BalanceGroup(domain, preference, shares, total, None, dof, None, 0)
    statistic = chi_square(draws, [choices * fair] * len(hosts))
    return BalanceGroup(
        domain,
        preference,
        shares,
        total,
        statistic,
        dof,
        chi_square_p(statistic, dof),
        choices,
    )
