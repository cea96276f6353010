"""STARTTLS, MTA-STS and DANE in ``mxsandbox serve``: what a sender outside the sandbox gets.

``serve`` runs in its own process (real time, loopback, ports it picks); the tests are that
outside sender: they trust the CA file the ready line names, verify a host's certificate as
Postfix at ``verify`` would, fetch an MTA-STS policy over HTTPS from the address DNS gives
``mta-sts.<domain>``, read the AD bit with ``dig``, and change a host's ``tls:`` through the
control API.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from pathlib import Path

import aiosmtplib
import pytest

from sandbox.sender.mta_sts import PolicyFetched, fetch_policy
from tests.integration.serve_process import PICK_PORTS, dig, serve

SCENARIO = """\
name: served-tls
zones:
  example.test: |
    @          IN MX  10 mx1.example.test.
    @          IN MX  20 mx2.example.test.
    mx1        IN A   192.0.2.10
    mx2        IN A   192.0.2.11
    mta-sts    IN A   192.0.2.80
    _mta-sts   IN TXT "v=STSv1; id=7;"
dnssec: [example.test]
mta_sts:
  example.test: |
    version: STSv1
    mode: enforce
    mx: mx1.example.test
    max_age: 600
hosts:
  mx2.example.test: {tls: self-signed}
"""
POLICY = "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 600\n"


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "served-tls.yaml"
    path.write_text(SCENARIO)
    return path


def address_of(ready: dict[str, object], name: str) -> str:
    hosts = ready["hosts"]
    assert isinstance(hosts, list)
    return str(next(h["address"] for h in hosts if h["name"] == name))


async def starttls(address: str, port: int, ca_file: str, name: str) -> str:
    """A session that verifies the host's certificate against the CA file; the version."""
    context = ssl.create_default_context(cafile=ca_file)
    client = aiosmtplib.SMTP(
        hostname=address,
        port=port,
        start_tls=False,
        timeout=10,
        local_hostname="outside.example.net",
    )
    await client.connect()
    try:
        await client.ehlo()
        await client.starttls(tls_context=context, server_hostname=name)
        transport = client.transport
        assert transport is not None
        ssl_object = transport.get_extra_info("ssl_object")
        return str(ssl_object.version())
    finally:
        client.close()


def put(request: urllib.request.Request) -> int:
    """The status of one control API request (its response closed, its socket with it)."""
    with urllib.request.urlopen(request, timeout=10) as reply:
        return int(reply.status)


async def test_the_ready_record_names_the_ca_file_and_the_policy_sites(scenario: Path) -> None:
    async with serve(scenario, *PICK_PORTS, "--https-port", "0", as_json=True) as served:
        ready = served.ready
        ca_file = Path(str(ready["ca_file"]))
        assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        (site,) = ready["mta_sts"]
        assert site["domain"] == "example.test"
        assert site["url"] == "https://mta-sts.example.test/.well-known/mta-sts.txt"
        assert site["address"] == address_of(ready, "mta-sts.example.test")
        assert site["port"] > 0
        await served.stop()
    assert not ca_file.exists()  # nothing is left outside a temporary directory


async def test_a_sender_outside_verifies_a_valid_host_and_refuses_a_self_signed_one(
    scenario: Path,
) -> None:
    async with serve(scenario, *PICK_PORTS, "--https-port", "0", as_json=True) as served:
        mx1 = address_of(served.ready, "mx1.example.test")
        mx2 = address_of(served.ready, "mx2.example.test")
        version = await starttls(mx1, served.smtp_port, served.ca_file, "mx1.example.test")
        assert version in ("TLSv1.3", "TLSv1.2")
        with pytest.raises((ssl.SSLCertVerificationError, aiosmtplib.SMTPException)):
            await starttls(mx2, served.smtp_port, served.ca_file, "mx2.example.test")
        await served.stop()


async def test_the_policy_is_served_over_https_where_dns_says(scenario: Path) -> None:
    async with serve(scenario, *PICK_PORTS, "--https-port", "0", as_json=True) as served:
        (address,) = await dig(served.dns, "A", "mta-sts.example.test")
        site = served.ready["mta_sts"][0]
        assert address == site["address"]
        context = ssl.create_default_context(cafile=served.ca_file)
        fetched = await fetch_policy("example.test", (address, site["port"]), context)
        assert fetched == PolicyFetched(POLICY)
        await served.stop()
    served_events = [json.loads(line) for line in served.lines if line.startswith("{")]
    assert any(e.get("kind") == "policy_served" and e["status"] == 200 for e in served_events)


async def test_dnssec_zones_carry_the_ad_bit_for_clients_that_ask(scenario: Path) -> None:
    async with serve(scenario, *PICK_PORTS, "--https-port", "0") as served:
        host, port = served.dns
        process = await asyncio.create_subprocess_exec(
            "dig",
            f"@{host}",
            "-p",
            str(port),
            "+dnssec",
            "MX",
            "example.test",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        flags = next(line for line in out.decode().splitlines() if "flags:" in line)
        assert "ad" in flags.split("flags:")[1].split(";")[0].split()
        await served.stop()


async def test_the_control_api_changes_a_host_s_certificate(scenario: Path) -> None:
    options = (*PICK_PORTS, "--https-port", "0", "--control", "127.0.0.1:0")
    async with serve(scenario, *options, as_json=True) as served:
        mx1 = address_of(served.ready, "mx1.example.test")
        url = f"http://{served.control}/api/v1/hosts/mx1.example.test/behaviour"
        body = json.dumps({"tls": "expired"}).encode()
        request = urllib.request.Request(url, body, method="PUT")
        request.add_header("Content-Type", "application/json")
        assert await asyncio.to_thread(put, request) == 200
        with pytest.raises((ssl.SSLCertVerificationError, aiosmtplib.SMTPException)) as caught:
            await starttls(mx1, served.smtp_port, served.ca_file, "mx1.example.test")
        assert "expired" in str(caught.value)
        await served.stop()
