"""STARTTLS on the way to an MX host: what the sender's TLS policy makes of each step, sans I/O.

Theory of operation
===================

The sender's TLS policy is a *level*, named after Postfix's ``smtp_tls_security_level``
(postconf(5)): ``none``, ``may``, ``encrypt``, ``verify`` or ``dane``. What a level asks of
one MX host also depends on DNS (DANE: are there DNSSEC-validated TLSA records?) and on the
recipient domain's MTA-STS policy. :func:`plan_host` folds the three into a
:class:`Requirement` before the connection, or skips the host there and then.

The session then meets STARTTLS at four points, and :func:`decide` turns each into one of
these actions:

- ``starttls``: the host offers STARTTLS and we want it: send STARTTLS;
- ``plain``: carry on in plain text in this session;
- ``tls``: the handshake worked and the certificate is good enough: EHLO again, over TLS;
- ``retry_plain``: close, and connect to the same address again without TLS (the new session
  does not count against the attempt's limits: Postfix's ``RETRY_AS_PLAINTEXT``);
- ``next_host``: this host is not good enough: try the next MX (defer when none is left);
- ``defer``: end the whole attempt now (Haraka's ``temp_fail``);
- ``bounce``: a permanent failure: return the mail.

What a level asks of a host (:func:`plan_host`)
-----------------------------------------------

=========  ==========  =============  ==========================  =========================
level      STARTTLS    TLS required   the certificate must        source
=========  ==========  =============  ==========================  =========================
none       never       no             —                           TLS_README "No TLS"
may        if offered  no             —                           TLS_README "Opportunistic"
encrypt    if offered  yes            —                           TLS_README "Mandatory TLS"
verify     if offered  yes            chain to a trusted CA and   TLS_README "Mandatory
                                      name the MX host            server certificate verif."
dane       if offered  see below      match the TLSA records      TLS_README "DANE TLS";
                                                                  RFC 7672 §2.2
=========  ==========  =============  ==========================  =========================

At ``dane`` the TLSA look-up decides (postconf(5) ``dane``; Postfix ``smtp_tls_policy.c``):
no DNSSEC-validated TLSA records, or an insecure zone: as ``may``; records, all unusable
(RFC 7672 §3.1: usages 0 and 1, unknown parameters, malformed data): as ``encrypt``; usable
records: TLS required, the certificate must match one (RFC 7672 §3.1.1 DANE-EE ignores names
and dates; §3.1.2 DANE-TA checks the chain and the names); a failed look-up: the host is
skipped, 4.7.5 "TLSA lookup error" (RFC 7672 §2.2: no downgrade on a lookup failure).

An MTA-STS policy in ``enforce`` mode (RFC 8461 §5) skips an MX host the policy does not list
(§4.1), and for the others requires TLS with a certificate that chains to a trusted CA and
names the MX host (§4.2): ``none``, ``may`` and ``encrypt`` become ``verify`` for those hosts,
the way a policy map (postfix-mta-sts-resolver) overrides Postfix's level per destination. A
DANE requirement stays and is checked first: a passing MTA-STS check never overrides a failing
DANE check (§2). In ``testing`` mode nothing changes but the failures are reported (TLS-RPT,
RFC 8460).

What each step means (:func:`decide`)
-------------------------------------

Postfix (the ``postfix`` profile), from ``smtp_proto.c`` (Postfix 3.7 to 3.12):

=======================  =====================================  =============================
what happened            TLS optional (may, dane→may)           TLS required
=======================  =====================================  =============================
STARTTLS not offered     plain                                  next_host 4.7.4 "TLS is
                                                                required, but was not offered"
reply 4xx to STARTTLS    plain (same session)                   next_host, the reply's status
reply 5xx to STARTTLS    plain (same session)                   bounce, the reply's status
handshake failed         retry_plain once the message has       next_host 4.7.5 "Cannot start
                         waited minimal_backoff_time, else      TLS: handshake failure"
                         next_host 4.7.5
certificate not good     tls ("Untrusted TLS connection")       next_host 4.7.5 "Server
enough                                                          certificate not verified"
certificate good         tls                                    tls
=======================  =====================================  =============================

The ``may`` row for a failed handshake is the subtle one. TLS_README ("Opportunistic TLS")
says the client "retries the transaction with TLS disabled", and so it does, but only for a
message that has spent ``minimal_backoff_time`` in the queue (``smtp.h``:
``PLAINTEXT_FALLBACK_OK_AFTER_STARTTLS_FAILURE`` tests ``PREACTIVE_DELAY >=
var_min_backoff_time``; HISTORY 20140218; postconf(5) of Postfix 3.11 says it in words). A
fresh message moves on to the next MX instead, and is deferred if every MX fails the same way;
its first retry, once old enough, falls back to plain text on the same address.

Exim (the ``exim`` profile), from its specification (the smtp transport's options, and chapter
"Encrypted SMTP connections"): ``tls_tempfail_tryclear`` (default true) sends in clear after a
4xx to STARTTLS and, after a failed negotiation, "opens a new one to the same host" in clear,
at once; a 5xx to STARTTLS is always followed by clear text. ``tls_try_verify_hosts = *``
tries verification but delivers anyway. ``hosts_try_dane = *`` (since 4.93): with
DNSSEC-validated TLSA records, "a DANE-verified TLS connection will be required for the host.
If it does not, the host will not be used". With TLS required (``hosts_require_tls``),
"delivery is always deferred if an encrypted connection cannot be set up. If there are any
other hosts for the address, they are tried": next_host for every failure.

Haraka (the ``haraka`` profile), from ``outbound/hmail.js`` and ``outbound/tls.js``: TLS is on
by default (``enable_tls``) and certificates are not checked (``rejectUnauthorized`` false);
any 4xx ends the attempt (``temp_fail``: defer) and any other 5xx bounces the message, the
reply to STARTTLS included; a failed upgrade tries the next MX (``try_deliver``). With
``force_tls_hosts`` (our ``verify``), a host without STARTTLS or with a certificate that fails
verification ends the attempt ("No TLS available but required", "Host failed TLS verification
required by configuration"). Haraka has no ``encrypt`` or ``dane`` level.

The ``rfc5321`` profile follows the standards alone: RFC 3207 §4.1 (after a 220 to STARTTLS,
a client that cannot complete the handshake "SHOULD abort the connection": next_host), RFC
7672 §2.2 and RFC 8461 §5 (a host that fails a required check is not used: next_host).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from sandbox.core.classify import ServerReply, dsn_of
from sandbox.core.mta_sts import StsMode, StsPolicy
from sandbox.core.policy import LEVELS, Level
from sandbox.core.tlsrpt import ResultType

__all__ = [
    "CERTIFICATE_VERDICTS",
    "HOST_TLS",
    "LEVELS",
    "TLS_RULES",
    "CertificateVerdict",
    "DaneState",
    "DaneVerdict",
    "Established",
    "HandshakeFailed",
    "HostTls",
    "Level",
    "NotOffered",
    "Offered",
    "Requirement",
    "StartTlsRefused",
    "TlsAction",
    "TlsDecision",
    "TlsEvent",
    "TlsFacts",
    "TlsRules",
    "TlsStep",
    "TlsStepKind",
    "decide",
    "offers_starttls",
    "plan_host",
    "rules_for",
]

# The sender's policy, ``Level`` (postconf(5) smtp_tls_security_level; "dane" is Postfix's
# opportunistic DANE, not "dane-only"), is defined with the profiles (``core.policy``).

# What a scripted mail host does about TLS (a host's ``tls:`` key).
HostTls = Literal["valid", "none", "expired", "self-signed", "wrong-name", "handshake-failure"]
HOST_TLS: tuple[HostTls, ...] = get_args(HostTls)

# What the client made of the server's certificate (PKIX, RFC 5280 and RFC 6125): it chains
# to a trusted CA and names the host, or the first thing wrong with it.
CertificateVerdict = Literal["valid", "expired", "self-signed", "wrong-name", "untrusted"]
CERTIFICATE_VERDICTS: tuple[CertificateVerdict, ...] = get_args(CertificateVerdict)

# The TLSA look-up for one MX host (RFC 7672 §2.2): usable records, records that are all
# unusable, no records (a validated denial), an insecure (unsigned) zone, or a failed look-up.
DaneState = Literal["usable", "unusable", "none", "insecure", "error"]
DaneVerdict = Literal["match", "mismatch"]

TlsAction = Literal["starttls", "plain", "tls", "retry_plain", "next_host", "defer", "bounce"]


# --- what one host must offer ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    """What the sender asks of one MX host. ``level`` is the effective level (``dane`` becomes
    ``may`` or ``encrypt`` without usable TLSA records); ``pkix``: the certificate must chain
    to a trusted CA and name the host; ``dane``: it must match the TLSA records; ``sts``: the
    MTA-STS mode that applies to the host (``testing``: report failures, change nothing)."""

    level: Level
    pkix: bool = False
    dane: bool = False
    sts: StsMode | None = None
    why: str = ""

    @property
    def starttls(self) -> bool:
        return self.level != "none"

    @property
    def required(self) -> bool:
        """No plain text with this host."""
        return self.level in ("encrypt", "verify", "dane") or self.pkix


@dataclass(frozen=True, slots=True)
class TlsDecision:
    """An action, the status to report when it fails a host or the mail (RFC 3463), a sentence
    for the story, and the TLS-RPT result of the session (None: nothing to report)."""

    action: TlsAction
    dsn: str = ""
    why: str = ""
    report: ResultType | None = None


def plan_host(
    level: Level,
    *,
    dane: DaneState = "none",
    sts: StsMode | None = None,
    listed: bool = True,
) -> Requirement | TlsDecision:
    """What ``level`` asks of one MX host, given its TLSA look-up and the destination's MTA-STS
    policy (``sts`` its mode, ``listed`` whether its ``mx`` patterns name the host). A
    :class:`TlsDecision` means the host is skipped before any connection."""
    if sts == "enforce" and not listed:
        return TlsDecision(
            "next_host",
            "4.7.5",
            "the MTA-STS policy (enforce) does not list this MX host (RFC 8461 §4.1)",
            "validation-failure",
        )
    effective, dane_required, why = _dane_level(level, dane)
    if isinstance(effective, TlsDecision):
        return effective
    pkix = effective == "verify" or sts == "enforce"
    if sts == "enforce":
        # The policy asks more than a lower level would: TLS with a trusted certificate
        # (a DANE requirement stays, and is checked first).
        if effective in ("none", "may", "encrypt"):
            effective = "verify"
        why = _join(why, "MTA-STS enforce: TLS with a certificate valid for the MX host")
    elif sts == "testing":
        why = _join(why, "MTA-STS testing: failures are reported, not enforced")
    return Requirement(effective, pkix=pkix, dane=dane_required, sts=sts, why=why)


def _dane_level(level: Level, dane: DaneState) -> tuple[Level | TlsDecision, bool, str]:
    if level != "dane":
        return level, False, f"TLS level {level}"
    if dane == "usable":
        return "dane", True, "usable TLSA records: the certificate must match one"
    if dane == "unusable":
        return "encrypt", False, "TLSA records, none usable: TLS without authentication"
    if dane == "error":
        skip = TlsDecision(
            "next_host",
            "4.7.5",
            "the TLSA look-up failed: this host cannot be authenticated (RFC 7672 §2.2)",
            "dnssec-invalid",
        )
        return skip, False, ""
    if dane == "insecure":
        return "may", False, "no DNSSEC for this host: DANE does not apply, TLS is optional"
    return "may", False, "no TLSA records: DANE does not apply, TLS is optional"


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second


# --- the steps of the session ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotOffered:
    """The EHLO reply has no STARTTLS."""


@dataclass(frozen=True, slots=True)
class Offered:
    """The EHLO reply offers STARTTLS."""


@dataclass(frozen=True, slots=True)
class StartTlsRefused:
    """The host answered STARTTLS with a 4xx or 5xx reply."""

    reply: ServerReply


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The host said 220 to STARTTLS but the TLS handshake did not complete."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class Established:
    """The handshake completed: the protocol version, what the client made of the
    certificate, and (with usable TLSA records) whether it matched them."""

    version: str
    certificate: CertificateVerdict
    dane: DaneVerdict | None = None
    detail: str = ""

    @property
    def verified(self) -> bool:
        """The certificate authenticates the host: PKIX-valid, or a TLSA record matched."""
        return self.certificate == "valid" or self.dane == "match"


TlsEvent = NotOffered | Offered | StartTlsRefused | HandshakeFailed | Established

# A profile's rule for one event: an action, or "retry_plain_when_old" (Postfix: plain text
# on the same address once the message has waited minimal_backoff_time, else next_host).
_Rule = TlsAction | Literal["retry_plain_when_old"]
_Event = Literal["not_offered", "refused_4xx", "refused_5xx", "handshake", "certificate"]


@dataclass(frozen=True, slots=True)
class TlsRules:
    """What one MTA does at each step: ``optional`` when plain text is allowed, ``required``
    when it is not. ``level`` is its default as packaged; ``levels`` the ones it has."""

    name: str
    level: Level
    levels: frozenset[Level]
    optional: dict[_Event, _Rule]
    required: dict[_Event, _Rule]
    source: str


_EVENTS: tuple[_Event, ...] = get_args(_Event)


def _rules(
    name: str,
    level: Level,
    levels: tuple[Level, ...],
    *,
    optional: tuple[_Rule, _Rule, _Rule, _Rule, _Rule],
    required: tuple[_Rule, _Rule, _Rule, _Rule, _Rule],
    source: str,
) -> TlsRules:
    """A profile's rules from its two rows, in the order of ``_Event``: not offered, a 4xx to
    STARTTLS, a 5xx to STARTTLS, a failed handshake, a certificate not good enough."""
    return TlsRules(
        name,
        level,
        frozenset(levels),
        dict(zip(_EVENTS, optional, strict=True)),
        dict(zip(_EVENTS, required, strict=True)),
        source,
    )


#                          not offered  4xx          5xx          handshake     certificate
TLS_RULES: dict[str, TlsRules] = {
    "postfix": _rules(
        "postfix",
        # Debian's package appends smtp_tls_security_level=may to main.cf
        # (/usr/share/postfix/main.cf.tls); stock Postfix defaults to none before 3.11.
        "may",
        LEVELS,
        optional=("plain", "plain", "plain", "retry_plain_when_old", "tls"),
        required=("next_host", "next_host", "bounce", "next_host", "next_host"),
        source="Postfix smtp_proto.c, smtp.h; TLS_README; postconf(5) smtp_tls_security_level",
    ),
    "exim": _rules(
        "exim",
        # hosts_try_dane = * (Exim >= 4.93): opportunistic DANE, plain "may" without TLSA.
        "dane",
        LEVELS,
        optional=("plain", "plain", "plain", "retry_plain", "tls"),
        required=("next_host", "next_host", "next_host", "next_host", "next_host"),
        source="Exim specification, smtp transport: tls_tempfail_tryclear, hosts_require_tls, "
        "hosts_try_dane, tls_try_verify_hosts",
    ),
    "haraka": _rules(
        "haraka",
        "may",  # outbound.ini: enable_tls defaults to true
        ("none", "may", "verify"),
        optional=("plain", "defer", "bounce", "next_host", "tls"),
        required=("defer", "defer", "bounce", "next_host", "defer"),
        source="Haraka outbound/hmail.js, outbound/tls.js, config/outbound.ini, config/tls.ini",
    ),
    "rfc5321": _rules(
        "rfc5321",
        # RFC 3207 STARTTLS, opportunistically (RFC 7435), authenticated by DANE where TLSA
        # records are published (RFC 7672 §2.2: without them, exactly "may").
        "dane",
        LEVELS,
        optional=("plain", "plain", "plain", "next_host", "tls"),
        required=("next_host", "next_host", "next_host", "next_host", "next_host"),
        source="RFC 3207 §4.1, RFC 7672 §2.2, RFC 8461 §5",
    ),
}

# The status a sender reports when TLS fails a host (Postfix's words and codes).
_NOT_OFFERED = ("4.7.4", "TLS is required, but was not offered by the host")
_HANDSHAKE = ("4.7.5", "Cannot start TLS: handshake failure")
_NOT_VERIFIED = ("4.7.5", "Server certificate not verified")

# The TLS-RPT result of a certificate the client did not accept (RFC 8460 §4.3.1).
_CERTIFICATE_RESULTS: dict[CertificateVerdict, ResultType] = {
    "expired": "certificate-expired",
    "self-signed": "certificate-not-trusted",
    "untrusted": "certificate-not-trusted",
    "wrong-name": "certificate-host-mismatch",
}


def decide(
    rules: TlsRules,
    requirement: Requirement,
    event: TlsEvent,
    *,
    waited: float = 0.0,
    min_backoff: float = 300.0,
) -> TlsDecision:
    """What the sender does about ``event`` (the tables above). ``waited``: how long the
    message had been queued when this attempt began (Postfix's ``PREACTIVE_DELAY``);
    ``min_backoff``: the profile's ``minimal_backoff_time``."""
    if isinstance(event, (Offered, NotOffered)) and not requirement.starttls:
        return TlsDecision("plain", why="TLS is off (level none): STARTTLS is never sent")
    if isinstance(event, Offered):
        return TlsDecision("starttls", why="the host offers STARTTLS")
    table = rules.required if requirement.required else rules.optional
    if isinstance(event, NotOffered):
        dsn, text = (
            _NOT_OFFERED if requirement.required else ("", "the host does not offer STARTTLS")
        )
        return _failed(table["not_offered"], requirement, dsn, text, "starttls-not-supported")
    if isinstance(event, StartTlsRefused):
        rule = table["refused_5xx" if event.reply.code >= 500 else "refused_4xx"]
        text = f"the host refused STARTTLS: {event.reply}"
        return _failed(rule, requirement, dsn_of(event.reply), text, "starttls-not-supported")
    if isinstance(event, HandshakeFailed):
        dsn, text = _HANDSHAKE
        if event.detail:
            text = f"{text} ({event.detail})"
        rule = table["handshake"]
        if rule != "retry_plain_when_old":
            return _failed(rule, requirement, dsn, text, "validation-failure")
        if waited >= min_backoff:
            return _failed("retry_plain", requirement, dsn, text, "validation-failure")
        young = (
            "the message has not waited minimal_backoff_time yet, so no plain text on this "
            "host for now"
        )
        return _failed("next_host", requirement, dsn, f"{text}; {young}", "validation-failure")
    return _established(table["certificate"], requirement, event)


def _established(rule: _Rule, requirement: Requirement, event: Established) -> TlsDecision:
    problem = _certificate_problem(requirement, event)
    if problem is None:
        good = (
            "the certificate matches a TLSA record (DANE)"
            if requirement.dane
            else "the certificate is valid for the host"
        )
        return TlsDecision("tls", why=f"{event.version}: {good}")
    words, report, enforced = problem
    if enforced:
        dsn, text = _NOT_VERIFIED
        return _failed(rule, requirement, dsn, f"{text}: {words}", report)
    # Nothing requires a better certificate: the session goes on in TLS (Postfix logs an
    # "Untrusted TLS connection"); MTA-STS in testing mode reports what enforce would refuse.
    return TlsDecision(
        "tls",
        why=f"{event.version}: untrusted TLS connection ({words}); encryption is enough here",
        report=report if requirement.sts == "testing" else None,
    )


def _certificate_problem(
    requirement: Requirement, event: Established
) -> tuple[str, ResultType, bool] | None:
    """What is wrong with the certificate, its TLS-RPT result, and whether the requirement
    enforces it. DANE is judged first, and a passing PKIX (MTA-STS) check never makes up for
    a failing DANE check (RFC 8461 §2); a DANE match vouches for the host on its own unless
    MTA-STS enforce asks for PKIX as well."""
    if requirement.dane and event.dane != "match":
        return "it matches none of the TLSA records", "tlsa-invalid", True
    if event.certificate == "valid":
        return None
    words = event.detail or _VERDICT_WORDS[event.certificate]
    report = _CERTIFICATE_RESULTS[event.certificate]
    if requirement.pkix:
        return words, report, True
    if requirement.dane and requirement.sts != "testing":
        return None  # matched: names and dates are DANE's business (RFC 7672 §3.1)
    return words, report, False


_VERDICT_WORDS: dict[CertificateVerdict, str] = {
    "valid": "the certificate is valid",
    "expired": "the certificate has expired",
    "self-signed": "the certificate is self-signed",
    "wrong-name": "the certificate names another host",
    "untrusted": "the certificate does not chain to a trusted CA",
}


def _failed(
    rule: _Rule, requirement: Requirement, dsn: str, text: str, report: ResultType
) -> TlsDecision:
    """A step that did not go as TLS wanted: ``rule`` says what follows. The TLS-RPT result
    is kept when a policy (MTA-STS or DANE) applies to the host."""
    reported = report if requirement.sts is not None or requirement.dane else None
    if rule == "plain":
        return TlsDecision(
            "plain", why=f"{text}: TLS is optional, go on in plain text", report=reported
        )
    if rule == "tls":
        return TlsDecision("tls", why=text, report=reported)
    if rule == "retry_plain":
        why = f"{text}: TLS is optional, so connect to this address again in plain text"
        return TlsDecision("retry_plain", dsn, why, reported)
    if rule in ("next_host", "retry_plain_when_old"):
        # The walk (``core.delivery``) says what comes next: the next host, or nothing left.
        return TlsDecision("next_host", dsn, text, reported)
    if rule == "defer":
        return TlsDecision("defer", dsn, f"{text}: this attempt ends here", reported)
    return TlsDecision("bounce", dsn, f"{text}: permanent", reported)


# --- what the walk needs --------------------------------------------------------------------


def rules_for(profile_name: str) -> TlsRules:
    """The TLS rules of a profile (a profile the table does not know follows Postfix)."""
    return TLS_RULES.get(profile_name, TLS_RULES["postfix"])


def offers_starttls(ehlo_text: str) -> bool:
    """Whether an EHLO reply's text (its lines after the first: one keyword each, RFC 5321
    §4.1.1.1) offers STARTTLS (RFC 3207 §4)."""
    for line in ehlo_text.splitlines()[1:]:
        words = line.split(maxsplit=1)
        if words and words[0].upper() == "STARTTLS":
            return True
    return False


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """What the shell found out before an attempt that bears on TLS: each MX host's TLSA
    look-up (hosts it did not look up count as "none") and the destination's MTA-STS policy
    (None: none, or not honoured). :meth:`plan` asks :func:`plan_host`."""

    dane: Mapping[str, DaneState] = field(default_factory=dict)
    policy: StsPolicy | None = None

    def plan(self, level: Level, host: str) -> Requirement | TlsDecision:
        policy = self.policy
        mode = policy.mode if policy is not None and policy.mode != "none" else None
        listed = policy.lists(host) if policy is not None else True
        return plan_host(level, dane=self.dane.get(host, "none"), sts=mode, listed=listed)


# The points where TLS decides something about one host: before connecting (``skip``), on
# the EHLO reply (``offer``: STARTTLS offered or not), and after STARTTLS (``upgrade``: the
# reply, the handshake and the certificate).
TlsStepKind = Literal["skip", "offer", "upgrade"]


@dataclass(frozen=True, slots=True)
class TlsStep:
    """One TLS decision of a walk, as the shell reports it (an event, a TLS-RPT session)."""

    host: str
    address: str
    step: TlsStepKind
    requirement: Requirement | None
    decision: TlsDecision
    event: TlsEvent | None = None
