"""The sender's TLS work around the core's rules: DANE look-ups, MTA-STS policies, STARTTLS.

The agent (``agent.py``) drives attempts; this module does, for it, what TLS needs from the
network, and turns what it finds into the core's facts and outcomes. It decides nothing:
``core.tls`` does.

Before an attempt (:meth:`TlsShell.facts`)
    At level ``dane``, the TLSA records of ``_25._tcp.<mx host>`` for each MX host whose MX
    answer and address answers were DNSSEC-validated (RFC 7672 §2.2: for a host reached
    through insecure DNS, DANE does not apply, and its TLSA records are not looked up), folded
    into a ``DaneState`` by ``tls.dane.lookup_state``. With ``mta_sts: honor``, the
    destination's MTA-STS policy (RFC 8461 §3, §5.1):

    =======================================  ==============================================
    the ``_mta-sts`` TXT record              the policy used
    =======================================  ==============================================
    valid, its ``id`` the cached policy's,   the cached policy
    and the cache still fresh
    valid, anything else                     fetched anew over HTTPS; if the fetch fails,
                                             the cached one while fresh, else none (the
                                             failure goes into the TLS-RPT report)
    missing or invalid                       the cached one while fresh, else none
    =======================================  ==============================================

    The fetch resolves ``mta-sts.<domain>`` through the sandbox's DNS and connects through the
    sandbox's address map (``socket_for(address, "https")``); the certificate must chain to
    the world's CA and name ``mta-sts.<domain>`` (``sender.mta_sts.fetch_policy``). A policy
    is cached for its ``max_age`` on the run's clock.

STARTTLS (:meth:`TlsShell.upgrade`)
    ``SmtpConnection.starttls`` (aiosmtplib, without certificate checks), then the verdicts:
    PKIX by ``tls.verify.judge`` against the world's CA at the run's moment (the run's epoch
    plus its clock), and with DANE ``tls.dane.check`` against the host's TLSA records, with
    the MX host and the recipient domain as reference names (RFC 7672 §3.2.2; Postfix adds
    the next-hop domain).

TLS-RPT (:meth:`TlsShell.record`)
    Every session under a policy (MTA-STS in enforce or testing mode, or usable TLSA
    records), and every policy that could not be fetched, as ``core.tlsrpt.SessionResult``s;
    :meth:`TlsShell.reports` writes one RFC 8460 report per policy domain.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from sandbox.core.addresses import AddressMap
from sandbox.core.classify import NoReply, ServerReply
from sandbox.core.delivery import StartTls
from sandbox.core.mta_sts import (
    PolicyProblem,
    StsPolicy,
    StsRecord,
    choose_record,
    parse_policy,
)
from sandbox.core.mx import Answer, Route
from sandbox.core.policy import Profile
from sandbox.core.tls import DaneState, Established, HandshakeFailed, TlsFacts, TlsStep
from sandbox.core.tlsrpt import PolicyType, ResultType, SessionResult, build_report
from sandbox.errors import NotInSandbox
from sandbox.sender.message import RUN_EPOCH
from sandbox.sender.mta_sts import WELL_KNOWN, FetchFailed, fetch_policy
from sandbox.sender.smtp import SmtpConnection
from sandbox.sender.starttls import TlsUp
from sandbox.tls.certificates import CertificateAuthority
from sandbox.tls.dane import Tlsa, check, lookup_state
from sandbox.tls.verify import CertificateCheck, judge

__all__ = ["PolicyFound", "TlsShell", "Upgrade"]

# Ask DNS and report it (the agent's own query, which tells the story): name, type -> answer.
Ask = Callable[[str, str], Awaitable[Answer]]

_JUDGED_KEPT = 256
_POLICY_FETCH_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class PolicyFound:
    """What the MTA-STS look-up found, for the story: the policy in force (or None), where
    it came from, and why there is none."""

    domain: str
    policy: StsPolicy | None = None
    id: str = ""
    source: str = ""  # fetched, cached
    url: str = ""
    failure: ResultType | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Upgrade:
    """STARTTLS as the core needs it (``outcome``), and the host's 220 for the story."""

    outcome: ServerReply | NoReply | HandshakeFailed | Established
    ready: ServerReply | None = None


@dataclass(slots=True)
class _Cached:
    id: str
    policy: StsPolicy
    expires: float


@dataclass(slots=True)
class _Attempt:
    """What one attempt's TLS facts were made of: TLSA records per host, the policy."""

    tlsa: dict[str, tuple[Tlsa, ...]] = field(default_factory=dict)
    policy: StsPolicy | None = None


class TlsShell:
    """The TLS side of one sender (see the module docstring)."""

    def __init__(
        self,
        *,
        profile: Profile,
        authority: CertificateAuthority | None,
        network: AddressMap,
        clock: Callable[[], float],
    ) -> None:
        self.profile = profile
        self._authority = authority
        self._network = network
        self._clock = clock
        self._policies: dict[str, _Cached] = {}
        self._attempts: dict[tuple[int, int], _Attempt] = {}
        self._judged: dict[tuple[tuple[bytes, ...], str, datetime.date], CertificateCheck] = {}
        self.results: list[SessionResult] = []
        self._started = clock()

    # -- before an attempt ------------------------------------------------------------------

    async def facts(
        self,
        key: tuple[int, int],
        domain: str,
        route: Route,
        answers: Sequence[Answer],
        ask: Ask,
        on_policy: Callable[[PolicyFound], None],
    ) -> TlsFacts:
        """The TLS facts of one attempt (``key``: message, attempt number)."""
        found = _Attempt()
        self._attempts[key] = found
        dane: dict[str, DaneState] = {}
        if self.profile.tls == "dane":
            for host in dict.fromkeys(h.host for h in route.hosts if h.addresses):
                dane[host] = await self._tlsa_state(host, domain, answers, ask, found)
        if self.profile.mta_sts == "honor":
            looked = await self._policy(domain, ask)
            on_policy(looked)
            found.policy = looked.policy
        return TlsFacts(dane, found.policy)

    async def _tlsa_state(
        self, host: str, domain: str, answers: Sequence[Answer], ask: Ask, found: _Attempt
    ) -> DaneState:
        mx_secure = all(a.secure for a in answers if a.rdtype == "MX")
        addresses = [a for a in answers if a.name == host and a.rdtype in ("A", "AAAA")]
        if not (mx_secure and addresses and all(a.secure for a in addresses)):
            return "insecure"
        answer = await ask(f"_25._tcp.{host}", "TLSA")
        failed = answer.rcode in ("SERVFAIL", "TIMEOUT")
        records = tuple(_tlsa(text) for text in answer.texts)
        found.tlsa[host] = records
        return lookup_state(records, secure=answer.secure, failed=failed)

    async def _policy(self, domain: str, ask: Ask) -> PolicyFound:
        now = self._clock()
        cached = self._policies.get(domain)
        fresh = cached if cached is not None and cached.expires > now else None
        txt = await ask(f"_mta-sts.{domain}", "TXT")
        record = choose_record(txt.texts) if txt.rcode == "NOERROR" else None
        if not isinstance(record, StsRecord):
            if fresh is not None:
                return PolicyFound(domain, fresh.policy, fresh.id, "cached")
            return PolicyFound(domain, detail=_no_record(domain, txt, record))
        if fresh is not None and fresh.id == record.id:
            return PolicyFound(domain, fresh.policy, fresh.id, "cached")
        url = f"https://mta-sts.{domain}{WELL_KNOWN}"
        fetched = await self._fetch(domain, ask)
        if isinstance(fetched, StsPolicy):
            self._policies[domain] = _Cached(record.id, fetched, now + fetched.max_age)
            return PolicyFound(domain, fetched, record.id, "fetched", url)
        self._fetch_failed(domain, fetched)
        kept = fresh.policy if fresh is not None else None
        return PolicyFound(
            domain,
            kept,
            record.id,
            "cached" if kept is not None else "",
            url,
            failure=fetched.result,
            detail=fetched.detail,
        )

    async def _fetch(self, domain: str, ask: Ask) -> StsPolicy | FetchFailed:
        site = f"mta-sts.{domain}"
        if self._authority is None:
            return FetchFailed("sts-policy-fetch-error", f"{site}: no HTTPS in this sandbox")
        answer = await ask(site, "A")
        if not answer.addresses:
            return FetchFailed("sts-policy-fetch-error", f"{site} has no address ({answer.rcode})")
        try:
            connect_to = self._network.socket_for(answer.addresses[0], "https")
        except NotInSandbox as error:
            return FetchFailed("sts-policy-fetch-error", f"{site}: {error}")
        context = self._authority.trusting_context()
        result = await fetch_policy(domain, connect_to, context, timeout=_POLICY_FETCH_TIMEOUT)
        if isinstance(result, FetchFailed):
            return result
        policy = parse_policy(result.text)
        if isinstance(policy, PolicyProblem):
            return FetchFailed("sts-policy-invalid", f"{site}: {policy}")
        return policy

    def _fetch_failed(self, domain: str, failed: FetchFailed) -> None:
        self.results.append(
            SessionResult(domain, "sts", failed.result, failure_reason_code=failed.detail)
        )

    # -- STARTTLS ---------------------------------------------------------------------------

    async def upgrade(
        self, key: tuple[int, int], domain: str, connection: SmtpConnection, action: StartTls
    ) -> Upgrade:
        """STARTTLS on ``connection``, and the verdicts on what the host presented."""
        if self._authority is None:  # nothing to check certificates against: no TLS client
            return Upgrade(ServerReply(454, "4.7.0 TLS not available to this sender"))
        context = self._authority.client_context()
        up = await connection.starttls(context, action.server_name, action.timeout)
        if isinstance(up, ServerReply | NoReply):
            return Upgrade(up)
        if not isinstance(up, TlsUp):
            return Upgrade(HandshakeFailed(up.detail))
        at = RUN_EPOCH + datetime.timedelta(seconds=self._clock())
        pkix = self._judge(up.chain, action.server_name, at)
        dane = None
        detail = pkix.detail
        if action.dane:
            found = self._attempts.get(key)
            records = found.tlsa.get(action.server_name, ()) if found else ()
            names = (action.server_name, domain)
            verdict = check(up.chain, records, names, at)
            dane, detail = verdict.verdict, verdict.detail
        return Upgrade(Established(up.version, pkix.verdict, dane, detail), up.reply)

    def _judge(
        self, chain: tuple[bytes, ...], host: str, at: datetime.datetime
    ) -> CertificateCheck:
        """PKIX, remembered per chain, host and day: a run judges the same few chains."""
        assert self._authority is not None
        memo = (chain, host, at.date())
        known = self._judged.get(memo)
        if known is None:
            known = judge(chain, host, [self._authority.ca_der], at)
            if len(self._judged) >= _JUDGED_KEPT:
                del self._judged[next(iter(self._judged))]
            self._judged[memo] = known
        return known

    # -- TLS-RPT ----------------------------------------------------------------------------

    def record(self, key: tuple[int, int], domain: str, step: TlsStep) -> None:
        """One TLS decision of an attempt: a TLS-RPT session when a policy applied."""
        found = self._attempts.get(key, _Attempt())
        requirement = step.requirement
        sts = found.policy if found.policy is not None and found.policy.mode != "none" else None
        dane = requirement is not None and requirement.dane
        if step.step == "skip":
            dane = step.decision.report == "dnssec-invalid"
        if sts is None and not dane:
            return
        if step.decision.action == "starttls":
            return  # the session's outcome comes with the upgrade
        failed = step.decision.report
        if failed is None and step.decision.action != "tls":
            return  # not a TLS session (plain text allowed): nothing to report
        event = step.event
        reason = event.detail if isinstance(event, Established | HandshakeFailed) else ""
        if dane:
            kind: PolicyType = "tlsa"
            lines = tuple(str(r) for r in found.tlsa.get(step.host, ()))
            patterns: tuple[str, ...] = ()
        else:
            assert sts is not None
            kind, lines, patterns = "sts", sts.lines, sts.mx
        self.results.append(
            SessionResult(
                domain,
                kind,
                failed,
                lines,
                patterns,
                receiving_mx_hostname=step.host,
                receiving_ip=step.address,
                failure_reason_code=(reason or step.decision.why) if failed else "",
            )
        )

    def done(self, key: tuple[int, int]) -> None:
        """The attempt has ended: forget its facts."""
        self._attempts.pop(key, None)

    def reports(self, scenario: str, seed: int) -> tuple[dict[str, object], ...]:
        """One RFC 8460 report per policy domain, dated on the run's clock."""
        by_domain: dict[str, list[SessionResult]] = {}
        for result in self.results:
            by_domain.setdefault(result.policy_domain, []).append(result)
        start = RUN_EPOCH + datetime.timedelta(seconds=self._started)
        end = RUN_EPOCH + datetime.timedelta(seconds=self._clock())
        return tuple(
            build_report(
                results,
                organization="MX Sandbox",
                contact="postmaster@sender.sandbox.test",
                report_id=f"{scenario or 'sandbox'}-{seed}-{domain}",
                start=start,
                end=end,
            )
            for domain, results in sorted(by_domain.items())
        )


def _tlsa(text: str) -> Tlsa:
    try:
        return Tlsa.parse(text)
    except ValueError:
        return Tlsa(255, 255, 255, b"")  # unreadable: an unusable record


def _no_record(domain: str, txt: Answer, record: StsRecord | PolicyProblem | None) -> str:
    if isinstance(record, PolicyProblem):
        return f"_mta-sts.{domain}: {record}"
    return f"_mta-sts.{domain}: no TXT record ({txt.rcode})"
