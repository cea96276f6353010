"""The lint's TLS checks: MTA-STS records and policies, TLSA records, and what DNSSEC covers.

``lint.lint_scenario`` adds these findings to the zone lint's; like it, they are pure
functions of the parsed scenario, each at the zone line of the record at fault:

=================  ========  ================================================================
rule               severity  finding
=================  ========  ================================================================
mta-sts-record     warning   a domain of ``mta_sts:`` has no valid ``_mta-sts`` TXT record: no
                             sender looks for its policy (RFC 8461 §3.1)
mta-sts-host       warning   ``mta-sts.<domain>`` has no address: no sender can fetch the
                             policy (RFC 8461 §3.3)
mta-sts-policy     warning   a zone announces a policy (``_mta-sts`` TXT) that ``mta_sts:`` does
                             not give: the fetch gets 404 (sts-policy-fetch-error)
tlsa-insecure      warning   TLSA records in a zone outside ``dnssec:``: DANE senders ignore
                             them (RFC 7672 §2.2)
tlsa-unusable      warning   a TLSA record that no SMTP client can use (usage 0 or 1, unknown
                             parameters, a digest of the wrong length: RFC 7672 §3.1)
tlsa-mismatch      warning   a TLSA record that matches no certificate the host can present:
                             DANE senders will not use that host (the ``3 1 1`` that would)
=================  ========  ================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from sandbox.core.mta_sts import StsRecord, choose_record, parse_record
from sandbox.dns.zone import Zone, ZoneRecord, find_zone

__all__ = ["RFC_DANE", "RFC_MTA_STS", "tls_findings"]

RFC_MTA_STS = "RFC 8461 §3"
RFC_DANE = "RFC 7672 §2.2, §3.1"

# (severity, rule, zone, zone line, message, mend, rfc): what ``lint.Finding`` is made of.
Raw = tuple[Literal["warning"], str, str, int, str, str, str]


def tls_findings(
    zones: list[Zone], policies: dict[str, str], signed: frozenset[str]
) -> Iterator[Raw]:
    """The TLS findings for one phase's ``zones``: their apexes, the policy domains of the
    scenario, and the zones answered as validated."""
    yield from _mta_sts(zones, policies)
    for zone in zones:
        yield from _tlsa(zone, zones, signed)


def _mta_sts(zones: list[Zone], policies: dict[str, str]) -> Iterator[Raw]:
    for domain in policies:
        zone = find_zone(zones, domain)
        if zone is None:
            continue  # the loader refuses a policy domain outside every zone
        name = f"_mta-sts.{domain}"
        texts = [_text(r) for r in zone.lookup(name, "TXT")]
        chosen = choose_record(texts)
        if not isinstance(chosen, StsRecord):
            at = zone.lookup(name, "TXT")
            yield (
                "warning",
                "mta-sts-record",
                zone.apex,
                at[0].line if at else 1,
                f"{domain} has a policy under mta_sts:, but {name} has no valid MTA-STS "
                f"record ({chosen.message}): no sender will look for the policy",
                f"add '{_relative(name, zone)} IN TXT \"v=STSv1; id=20260101T000000;\"' "
                f"to {zone.apex}",
                RFC_MTA_STS,
            )
        site = f"mta-sts.{domain}"
        site_zone = find_zone(zones, site)
        if site_zone is None or not site_zone.addresses_of(site):
            owner = site_zone or zone
            yield (
                "warning",
                "mta-sts-host",
                owner.apex,
                1,
                f"{site} has no address: no sender can fetch the policy of {domain} from "
                f"https://{site}/.well-known/mta-sts.txt",
                f"add '{_relative(site, owner)} IN A 192.0.2.80' to {owner.apex}; the "
                "sandbox serves the policy there",
                RFC_MTA_STS,
            )
    for zone in zones:
        for txt in zone.records:
            if txt.rtype != "TXT" or not txt.name.startswith("_mta-sts."):
                continue
            domain = txt.name[len("_mta-sts.") :]
            if domain in policies or not isinstance(parse_record(_text(txt)), StsRecord):
                continue
            yield (
                "warning",
                "mta-sts-policy",
                zone.apex,
                txt.line,
                f"{txt.name} announces an MTA-STS policy, but mta_sts: has none for "
                f"{domain}: a sender that fetches it gets 404 (sts-policy-fetch-error)",
                f"add the policy under mta_sts: {domain}: …, or remove this record",
                RFC_MTA_STS,
            )


def _tlsa(zone: Zone, zones: list[Zone], signed: frozenset[str]) -> Iterator[Raw]:
    records = [r for r in zone.records if r.rtype == "TLSA"]
    if not records:
        return
    from sandbox.tls.certificates import host_key
    from sandbox.tls.dane import Tlsa, association_of_key

    if zone.apex not in signed:
        yield (
            "warning",
            "tlsa-insecure",
            zone.apex,
            records[0].line,
            f"{zone.apex} has TLSA records but is not under dnssec:, so its answers are not "
            "validated and DANE senders ignore them (for them the hosts are TLS 'may')",
            f"add {zone.apex} to dnssec: [{zone.apex}] to have its answers validated",
            RFC_DANE,
        )
    for record in records:
        tlsa = Tlsa.parse(record.rdata)
        host = _host_of(record.name)
        if not tlsa.usable:
            yield (
                "warning",
                "tlsa-unusable",
                zone.apex,
                record.line,
                f"the TLSA record '{tlsa}' is unusable for SMTP (usages 0 and 1, unknown "
                "parameters and digests of the wrong length are): DANE senders still "
                "require TLS, but check no certificate",
                "use usage 3 (DANE-EE), selector 1 and matching type 1: '3 1 1' and the "
                "SHA-256 of the host's key",
                RFC_DANE,
            )
            continue
        host_zone = find_zone(zones, host) if host else None
        if host is None or host_zone is None or not host_zone.addresses_of(host):
            continue
        wanted = association_of_key(host_key(host), tlsa.selector, tlsa.matching)
        if tlsa.usage == 3 and wanted == tlsa.data:
            continue
        pin = association_of_key(host_key(host), 1, 1).hex()
        why = (
            "DANE-TA (usage 2) names a CA, and the sandbox makes a new CA for every run"
            if tlsa.usage == 2
            else f"it is not the key {host} presents"
        )
        yield (
            "warning",
            "tlsa-mismatch",
            zone.apex,
            record.line,
            f"the TLSA record for {host} matches no certificate it can present ({why}): "
            "DANE senders will not deliver to it",
            f"if that is not the lesson, write '{_relative(record.name, zone)} IN TLSA 3 1 1 "
            f"{pin}'",
            RFC_DANE,
        )


def _host_of(name: str) -> str | None:
    """``_25._tcp.mx1.example.test`` -> ``mx1.example.test``."""
    prefix = "_25._tcp."
    return name[len(prefix) :] if name.startswith(prefix) else None


def _text(record: ZoneRecord) -> str:
    """A TXT record's strings, joined (as a resolver hands them over)."""
    return b"".join(record.rr.rdata.data).decode("utf-8", errors="replace")


def _relative(name: str, zone: Zone) -> str:
    return name[: -len(zone.apex) - 1] if name.endswith("." + zone.apex) else name
