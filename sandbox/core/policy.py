"""Sender profiles: the timeouts, limits and retry schedule of a real MTA, as plain data.

A profile is what makes our sender behave like Postfix (the default), Exim, Haraka or the
bare RFC. Every field can be overridden under ``sender:`` in a scenario; ``FIELD_KINDS``
tells the scenario loader how to read each one. The retry arithmetic lives here too, as pure
functions of a message's ``RetryHistory`` and the current time, so it is tested to the second
without a clock.

Retry schedules (``Profile.retry``):

=========  =============================================================================
backoff    Postfix: wait the message's age, clamped to [min_backoff, max_backoff]; the
           queue manager picks it up at its next scan (every queue_run_delay); the first
           failure at or after max_lifetime returns the message to its sender.
rules      Exim: retry rules counted from the first failure. ``F,2h,15m`` retries every
           15 minutes until 2 hours after the first failure; ``G,16h,1h,1.5`` then waits
           1 hour, 1.5 hours, 2.25 hours … until 16 hours; ``F,4d,6h`` every 6 hours until
           4 days. A failure past the last rule's cutoff bounces.
doubling   Haraka: after failure n (1, 2, …) wait doubling_base x 2^n, 32 s x 2^n = 2^(n+5)
           seconds (64 s … 2^17 s); failure number max_failures bounces.
fixed      RFC 5321 §4.5.4.1: a fixed retry_interval (at least 30 minutes), give up after
           max_lifetime (4 to 5 days).
=========  =============================================================================
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "FIELD_KINDS",
    "LEVELS",
    "MTA_STS_CHOICES",
    "PROFILES",
    "Level",
    "MtaSts",
    "Profile",
    "Retry",
    "RetryHistory",
    "RetryRule",
    "host_retry_at",
    "next_retry",
    "should_give_up",
]

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

# The sender's TLS policy, named after Postfix's smtp_tls_security_level (postconf(5)); what
# each level asks of a host is ``core.tls``'s table. "dane" is Postfix's opportunistic DANE.
Level = Literal["none", "may", "encrypt", "verify", "dane"]
LEVELS: tuple[Level, ...] = get_args(Level)
# Whether the sender fetches and applies MTA-STS policies (RFC 8461).
MtaSts = Literal["honor", "ignore"]
MTA_STS_CHOICES: tuple[MtaSts, ...] = get_args(MtaSts)


@dataclass(frozen=True, slots=True)
class RetryRule:
    """One Exim retry rule: ``F`` (fixed) or ``G`` (geometric), in force until ``cutoff``
    seconds after the first failure."""

    kind: Literal["F", "G"]
    cutoff: float
    interval: float
    factor: float = 1.0


EXIM_RULES = (
    RetryRule("F", 2 * HOUR, 15 * MINUTE),
    RetryRule("G", 16 * HOUR, 1 * HOUR, 1.5),
    RetryRule("F", 4 * DAY, 6 * HOUR),
)


@dataclass(frozen=True, slots=True)
class Profile:
    """One MTA's behaviour. Times are seconds; the defaults are Postfix's documented ones."""

    name: str = "postfix"
    # Per-stage timeouts (Postfix: smtp_connect_timeout, smtp_helo_timeout, smtp_mail_timeout,
    # smtp_rcpt_timeout, smtp_data_init_timeout, smtp_data_xfer_timeout, smtp_data_done_timeout).
    connect_timeout: float = 30.0
    greeting_timeout: float = 300.0
    ehlo_timeout: float = 300.0
    mail_timeout: float = 300.0
    rcpt_timeout: float = 300.0
    data_timeout: float = 120.0
    data_transfer_timeout: float = 180.0
    dot_timeout: float = 600.0
    # smtp_mx_address_limit and smtp_mx_session_limit: how far one attempt walks the MX list.
    max_addresses: int = 5
    max_sessions: int = 2
    # Exim's smtp transport: hosts_max_try hosts tried per attempt (skipped hosts do not
    # count, and a host of another MX preference still gets its turn), never more than
    # hosts_max_try_hardlimit in all. 0: no such limit.
    hosts_max_try: int = 0
    hosts_max_try_hardlimit: int = 0
    # The retry schedule (see the module docstring) and its parameters.
    retry: Literal["backoff", "rules", "doubling", "fixed"] = "backoff"
    min_backoff: float = 300.0
    max_backoff: float = 4000.0
    queue_run_delay: float = 300.0
    max_lifetime: float = 5 * DAY
    retry_rules: tuple[RetryRule, ...] = ()
    retry_interval: float = 30 * MINUTE
    max_failures: int = 0
    # The doubling schedule's unit: after failure n the wait is doubling_base x 2^n (Haraka:
    # 32 s, so 2^(n+5) s). A field so that a faster clock (`mxsandbox send --time-scale`)
    # can scale it like every other time.
    doubling_base: float = 32.0
    # smtp_skip_5xx_greeting: a 5xx greeting moves on to the next MX instead of bouncing.
    skip_5xx_greeting: bool = True
    # Which replies to EHLO make the sender try HELO on the same connection: a 5xx only
    # (Postfix, RFC 5321 §4.1.4), or any failure, a 4xx included (Exim's smtp transport:
    # EHLO 451, then HELO, then QUIT, seen against the real Exim 4.96).
    ehlo_fallback: Literal["5xx", "any"] = "5xx"
    # Stages where a 4xx ends the whole attempt at once instead of trying the next MX
    # (Haraka's outbound does this at every stage: hmail.js temp-fails on any 4xx reply).
    tempfail_ends_attempt: frozenset[str] = frozenset()
    # What to do with an MX that names a CNAME (RFC 2181 §10.3 forbids it) or an IP literal.
    cname: Literal["follow", "reject"] = "follow"
    ip_literal: Literal["use", "reject"] = "use"
    # MX records exist but none of their hosts has an address: return the mail, or wait.
    no_address: Literal["bounce", "defer"] = "bounce"
    # Postfix suspends a destination whose last attempt failed to connect, for the other
    # messages to it, until min_backoff has passed ("delivery temporarily suspended").
    suspend_dead_destinations: bool = True
    # A session that ended well is kept open when more mail waits for its destination, and
    # the next delivery to that destination starts on it, without trying the MX hosts before
    # it: Postfix's connection cache on demand (smtp_connection_cache_on_demand, yes; the
    # first good session is cached under the next-hop destination, smtp_connect.c) and
    # Exim's continued connections (a delivery hands its open connection to the next message
    # waiting for that host, logged "H=host [ip]*"). Haraka 3.3.4 opens a session per
    # message. A session older than reuse_time_limit is not reused
    # (smtp_connection_reuse_time_limit, 300 s).
    reuse_sessions: bool = True
    reuse_time_limit: float = 300.0
    # Exim: retries are made by a queue runner (every queue_run_delay), which delivers the
    # messages due one after the other (spec.txt ch. 3, "Running an Exim queue runner"; a
    # new message is delivered at once by the process that received it). False: retries run
    # side by side like first attempts (Postfix's queue manager, Haraka).
    serial_queue_runs: bool = False
    # The name our sender gives in EHLO.
    helo_name: str = "sender.sandbox.test"
    # The sender's own address, when it is itself one of the MX hosts (RFC 5321 §5.1: it
    # must discard the records at its own preference and worse).
    address: str | None = None
    # Postfix's destination concurrency (SCHEDULER_README, "Concurrency scheduling"): a
    # destination's window of parallel attempts starts at initial_concurrency
    # (initial_destination_concurrency, 5) and grows by one per attempt without a site
    # failure up to concurrency (default_destination_concurrency_limit, 20); each site
    # failure shrinks it by one and adds 1/window failed cohorts, and at failed_cohort_limit
    # (default_destination_concurrency_failed_cohort_limit, 1) the destination is dead for
    # min_backoff (suspend_dead_destinations).
    concurrency: int = 20
    initial_concurrency: int = 5
    failed_cohort_limit: int = 1
    # Exim keeps retry records per host (address), shared by every message: a host inside
    # its retry time is skipped ("retry time not reached"). Computed with retry_rules from
    # the host's first failure.
    host_retry: bool = False
    # The enhanced status code of a domain that takes no mail (a null MX: RFC 7505 registers
    # 5.1.10; Postfix reports 5.1.0, smtp_addr.c), of a domain that does not exist (RFC 3463
    # 5.1.2 is "bad destination system address"; Postfix reports 5.4.4) and of a DNS failure
    # (Postfix: 4.4.3; Haraka: 4.1.0, hmail.js's "DNS lookup failure").
    null_mx_dsn: str = "5.1.0"
    nxdomain_dsn: str = "5.4.4"
    dns_failure_dsn: str = "4.4.3"
    # When every host of an attempt failed without a reply that ends it (refused, timed out,
    # closed) or none has an address: Haraka defers with "Tried all MXs" and 5.1.2
    # (DSN.addr_bad_dest_system in hmail.js), naming no remote host. "": the last error's own.
    tried_all_dsn: str = ""
    # The status every bounce reports, whatever the reply said: Exim writes "Status: 5.0.0"
    # in each DSN it sends (deliver.c) and keeps the remote reply for Diagnostic-Code.
    # "": the reply's own status (Postfix, Haraka).
    bounce_dsn: str = ""
    # Whose words a recipient's reply uses when no host could be asked (a null MX, a domain
    # that does not exist, DNS trouble, no address): the MTA's own log text (postfix, exim,
    # haraka), or the sandbox's explanation (rfc5321).
    wording: Literal["postfix", "exim", "haraka", "sandbox"] = "postfix"
    # What a recipient given up on reports: its last (4.x.x) status, as Postfix does, or
    # that status made permanent (5.x.x), as Haraka does.
    expired_dsn: Literal["keep", "permanent"] = "keep"
    # Send a "delayed" DSN (RFC 3464 Action: delayed) once a message has waited this long.
    delay_warning: float | None = None
    # Shuffle MX records of equal preference (RFC 5321 §5.1). Deliberately undocumented: it
    # exists so that a test can build a biased sender (always the first of a group, in name
    # order) and show that the balancing statistics catch it.
    shuffle_equal: bool = True
    # STARTTLS (``core.tls``): the TLS level (each profile's default is its MTA's as
    # packaged: ``core.tls.TLS_RULES``), whether MTA-STS policies are honoured (none of
    # Postfix, Exim and Haraka fetches them itself), and how long the STARTTLS reply and the
    # handshake may take (Postfix's smtp_starttls_timeout).
    tls: Level = "may"
    mta_sts: MtaSts = "ignore"
    starttls_timeout: float = 300.0
    # Keep a session that went over TLS open for the next message (Postfix's
    # smtp_tls_connection_reuse, off by default: a TLS session is never cached).
    tls_connection_reuse: bool = False
    # What the sender does with a host's ESMTP extensions (core.esmtp has the table and each
    # MTA's source): a message over the host's SIZE is bounced here ("local", Postfix's
    # smtp_proto.c) or sent for the host to refuse ("server"); SIZE= is declared when offered
    # (size_parameter), Exim's way (size + lines + size_addition) when size_addition is set;
    # a message that needs SMTPUTF8, to a host without it, is bounced (5.6.7), downconverted
    # (Exim's utf8_downconvert -1) or sent with A-label domains (Haraka); Haraka asks for
    # SMTPUTF8 only for a sender address that is not ASCII; BODY=8BITMIME for 8-bit content.
    size_check: Literal["local", "server"] = "local"
    size_parameter: bool = True
    size_addition: int = 0
    without_smtputf8: Literal["bounce", "downconvert", "ascii_domain"] = "bounce"
    smtputf8_for_sender_only: bool = False
    body_8bitmime: bool = True

    def with_overrides(self, overrides: dict[str, object]) -> Profile:
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]


# How the scenario loader reads each overridable field: "duration", "count", "flag", "text",
# "address" (an IP address), "status" (an enhanced status code, 4.x.x or 5.x.x),
# "bounce_status" (a permanent one, 5.x.x), "deferral_status" (a temporary one, 4.x.x),
# "stages" (a list of SMTP stages), or a tuple of the allowed words.
FIELD_KINDS: dict[str, str | tuple[str, ...]] = {
    "connect_timeout": "duration",
    "greeting_timeout": "duration",
    "ehlo_timeout": "duration",
    "mail_timeout": "duration",
    "rcpt_timeout": "duration",
    "data_timeout": "duration",
    "data_transfer_timeout": "duration",
    "dot_timeout": "duration",
    "max_addresses": "count",
    "max_sessions": "count",
    "hosts_max_try": "count",
    "hosts_max_try_hardlimit": "count",
    "min_backoff": "duration",
    "max_backoff": "duration",
    "queue_run_delay": "duration",
    "max_lifetime": "duration",
    "retry_interval": "duration",
    "max_failures": "count",
    "doubling_base": "duration",
    "skip_5xx_greeting": "flag",
    "ehlo_fallback": ("5xx", "any"),
    "tempfail_ends_attempt": "stages",
    "cname": ("follow", "reject"),
    "ip_literal": ("use", "reject"),
    "no_address": ("bounce", "defer"),
    "suspend_dead_destinations": "flag",
    "reuse_sessions": "flag",
    "reuse_time_limit": "duration",
    "serial_queue_runs": "flag",
    "helo_name": "text",
    "address": "address",
    "concurrency": "count",
    "initial_concurrency": "count",
    "failed_cohort_limit": "count",
    "host_retry": "flag",
    "null_mx_dsn": "bounce_status",
    "nxdomain_dsn": "bounce_status",
    "dns_failure_dsn": "deferral_status",
    "tried_all_dsn": "status",
    "bounce_dsn": "bounce_status",
    "wording": ("postfix", "exim", "haraka", "sandbox"),
    "expired_dsn": ("keep", "permanent"),
    "delay_warning": "duration",
    "shuffle_equal": "flag",
    "tls": LEVELS,
    "mta_sts": MTA_STS_CHOICES,
    "starttls_timeout": "duration",
    "tls_connection_reuse": "flag",
    "size_check": ("local", "server"),
    "without_smtputf8": ("bounce", "downconvert", "ascii_domain"),
}

POSTFIX = Profile()

# RFC 5321's own numbers: the §4.5.3.2 timeouts, a fixed §4.5.4.1 retry, no queue scan, and
# none of Postfix's extras. Exim and Haraka are described by how they differ from it.
RFC5321 = Profile(
    name="rfc5321",
    connect_timeout=5 * MINUTE,
    greeting_timeout=5 * MINUTE,
    ehlo_timeout=5 * MINUTE,
    mail_timeout=5 * MINUTE,
    rcpt_timeout=5 * MINUTE,
    data_timeout=2 * MINUTE,
    data_transfer_timeout=3 * MINUTE,
    dot_timeout=10 * MINUTE,
    max_addresses=0,
    max_sessions=0,
    retry="fixed",
    retry_interval=30 * MINUTE,
    queue_run_delay=0,
    max_lifetime=5 * DAY,
    no_address="defer",
    suspend_dead_destinations=False,
    initial_concurrency=20,
    null_mx_dsn="5.1.10",
    # The standards on the way, each used as its RFC describes: opportunistic DANE (RFC 7672
    # §2.2: TLS as "may" where no TLSA records are published, authenticated where they are)
    # and MTA-STS (RFC 8461 §5), DANE first where both apply (RFC 8461 §2).
    tls="dane",
    mta_sts="honor",
    wording="sandbox",
)

PROFILES: dict[str, Profile] = {
    "postfix": POSTFIX,
    # Exim 4.96 as Debian runs it (spec.txt ch. 32 "Retry configuration" and the smtp
    # transport's options; Debian's /etc/default/exim4): one retry rule set for everything,
    # 5 minute timeouts (connect_timeout, command_timeout, data_timeout; final_timeout 10
    # minutes), a queue runner every 30 minutes (QUEUEINTERVAL='30m') that delivers the
    # waiting messages one after the other, retry records per host, hosts_max_try 5 (hard
    # limit 50), allow_mx_to_ip false, EHLO refused in any way falls back to HELO, and every
    # bounce says Status: 5.0.0.
    "exim": dataclasses.replace(
        RFC5321,
        name="exim",
        data_timeout=5 * MINUTE,
        data_transfer_timeout=5 * MINUTE,
        hosts_max_try=5,
        hosts_max_try_hardlimit=50,
        retry="rules",
        retry_rules=EXIM_RULES,
        queue_run_delay=30 * MINUTE,
        serial_queue_runs=True,
        max_lifetime=4 * DAY,
        ip_literal="reject",
        no_address="bounce",
        host_retry=True,
        # hosts_try_dane = * (Exim 4.93 and later): opportunistic DANE; no MTA-STS. A TLS
        # session carries the next messages too: since 4.92 hosts_noproxy_tls is unset by
        # default, so a continued delivery keeps the TLS session (through a proxy process).
        tls="dane",
        mta_sts="ignore",
        tls_connection_reuse=True,
        ehlo_fallback="any",
        bounce_dsn="5.0.0",
        wording="exim",
        size_check="server",
        size_addition=1024,
        without_smtputf8="downconvert",
        body_8bitmime=False,
    ),
    # Haraka 3.3.4's outbound (outbound/hmail.js, client_pool.js, config/outbound.ini):
    # doubling delays, 13 failures; one idle timeout for the whole session (the socket's
    # setTimeout(connect_timeout), 30 s, kept after the connect); any 4xx reply ends the
    # attempt (only connection errors, timeouts and closes try the next MX); a 5xx greeting
    # bounces; NXDOMAIN 5.1.2, DNS failure 4.1.0, every MX tried in vain 5.1.2 ("Tried all
    # MXs"), made permanent when the retries run out; no session reuse.
    "haraka": dataclasses.replace(
        RFC5321,
        name="haraka",
        connect_timeout=30.0,
        greeting_timeout=30.0,
        ehlo_timeout=30.0,
        mail_timeout=30.0,
        rcpt_timeout=30.0,
        data_timeout=30.0,
        data_transfer_timeout=30.0,
        dot_timeout=30.0,
        retry="doubling",
        max_failures=13,
        skip_5xx_greeting=False,
        tempfail_ends_attempt=frozenset(
            {"greeting", "ehlo", "helo", "mail", "rcpt", "data", "message"}
        ),
        nxdomain_dsn="5.1.2",
        dns_failure_dsn="4.1.0",
        tried_all_dsn="5.1.2",
        expired_dsn="permanent",
        # outbound.ini enable_tls = true, certificates not checked: "may". No MTA-STS.
        tls="may",
        mta_sts="ignore",
        reuse_sessions=False,
        wording="haraka",
        size_check="server",
        size_parameter=False,
        without_smtputf8="ascii_domain",
        smtputf8_for_sender_only=True,
        body_8bitmime=False,
    ),
    "rfc5321": RFC5321,
}


@dataclass(frozen=True, slots=True)
class RetryHistory:
    """What a retry schedule needs to know about one message's failures so far.

    ``failures`` counts failed attempts including the one just finished; ``last`` is the
    retry chosen after the previous failure (Exim's geometric rules grow its wait).
    """

    arrived: float
    first_failure: float
    failures: int
    last: Retry | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """The next try: at ``at``, after waiting ``wait``; ``rule`` is the Exim rule used."""

    at: float
    wait: float
    rule: int = -1


def next_retry(profile: Profile, history: RetryHistory, now: float) -> Retry | None:
    """When a message that failed at ``now`` is tried next; None means give up."""
    if should_give_up(profile, history, now):
        return None
    rule = -1
    if profile.retry == "backoff":
        wait = min(max(now - history.arrived, profile.min_backoff), profile.max_backoff)
    elif profile.retry == "rules":
        rule, wait = _rule_interval(profile.retry_rules, history, now)
    elif profile.retry == "doubling":
        wait = profile.doubling_base * 2.0**history.failures
    else:
        wait = profile.retry_interval
    return Retry(_at_queue_scan(profile, now + wait), wait, rule)


def host_retry_at(profile: Profile, first_failure: float, last: Retry | None, now: float) -> Retry:
    """When a host that failed at ``now`` may be tried again (Exim's host retry records):
    the retry rules, counted from the host's first failure. Past the last rule's cutoff the
    host is tried at every queue run."""
    rules = profile.retry_rules
    history = RetryHistory(first_failure, first_failure, 1, last)
    if not rules or now - first_failure >= rules[-1].cutoff:
        return Retry(now, 0.0, len(rules))
    rule, wait = _rule_interval(rules, history, now)
    return Retry(now + wait, wait, rule)


def should_give_up(profile: Profile, history: RetryHistory, now: float) -> bool:
    """A failure at this time returns the message to its sender."""
    if profile.retry == "rules":
        cutoff = profile.retry_rules[-1].cutoff if profile.retry_rules else profile.max_lifetime
        return now - history.first_failure >= cutoff
    if profile.retry == "doubling":
        return history.failures >= profile.max_failures > 0
    return now - history.arrived >= profile.max_lifetime


def _rule_interval(
    rules: tuple[RetryRule, ...], history: RetryHistory, now: float
) -> tuple[int, float]:
    """The rule in force ``now`` and its wait: a G rule grows the wait it chose last time."""
    elapsed = now - history.first_failure
    index = next((i for i, r in enumerate(rules) if elapsed < r.cutoff), len(rules) - 1)
    rule = rules[index]
    last = history.last
    if rule.kind == "G" and last is not None and last.rule == index:
        return index, last.wait * rule.factor
    return index, rule.interval


def _at_queue_scan(profile: Profile, eligible: float) -> float:
    scan = profile.queue_run_delay
    if scan <= 0:
        return eligible
    return math.ceil(eligible / scan - 1e-9) * scan
