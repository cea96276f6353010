"""A small mail sender, written the way a user of the sandbox would write one.

It knows nothing of the sandbox: it asks a DNS server for the MX records (dnspython), walks them
in preference order, talks SMTP with aiosmtplib, and retries the whole list after a pause while
every host answers with a temporary failure. The tests point it at ``sb.dns`` and
``sb.smtp_port`` and check what the sandbox's hosts saw.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib
import dns.asyncresolver
import dns.name
import dns.resolver


@dataclass
class Outcome:
    status: str  # delivered, bounced, deferred
    host: str | None = None
    attempts: int = 0
    reply: str = ""
    log: list[str] = field(default_factory=list)


class _Bounce(Exception):
    pass


class SimpleSender:
    def __init__(
        self,
        dns_server: tuple[str, int],
        smtp_port: int,
        *,
        retry_every: float = 0.5,
        max_attempts: int = 10,
        timeout: float = 5.0,
    ) -> None:
        self.resolver = dns.asyncresolver.Resolver(configure=False)
        self.resolver.nameservers = [dns_server[0]]
        self.resolver.port = dns_server[1]
        self.resolver.lifetime = timeout
        self.smtp_port = smtp_port
        self.retry_every = retry_every
        self.max_attempts = max_attempts
        self.timeout = timeout

    async def send(self, sender: str, recipient: str, message: EmailMessage) -> Outcome:
        outcome = Outcome("deferred")
        domain = recipient.rpartition("@")[2]
        for attempt in range(1, self.max_attempts + 1):
            outcome.attempts = attempt
            try:
                for host in await self.mail_hosts(domain):
                    for address in await self.addresses(host):
                        if await self.try_host(host, address, sender, recipient, message, outcome):
                            outcome.status, outcome.host = "delivered", host
                            return outcome
            except _Bounce as bounce:
                outcome.status, outcome.reply = "bounced", str(bounce)
                return outcome
            if attempt < self.max_attempts:
                await asyncio.sleep(self.retry_every)
        return outcome

    async def mail_hosts(self, domain: str) -> list[str]:
        try:
            answer = await self.resolver.resolve(domain, "MX")
        except dns.resolver.NoAnswer:
            return [domain]  # no MX: the domain itself (RFC 5321 §5.1)
        except dns.resolver.NXDOMAIN:
            raise _Bounce(f"5.1.2 {domain} does not exist") from None
        records = sorted(answer, key=lambda mx: mx.preference)
        if len(records) == 1 and records[0].exchange == dns.name.root:
            raise _Bounce(f"5.1.10 {domain} accepts no mail (null MX)")
        return [mx.exchange.to_text(omit_final_dot=True) for mx in records]

    async def addresses(self, host: str) -> list[str]:
        try:
            answer = await self.resolver.resolve(host, "A")
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return []
        return [record.address for record in answer]

    async def try_host(
        self,
        host: str,
        address: str,
        sender: str,
        recipient: str,
        message: EmailMessage,
        outcome: Outcome,
    ) -> bool:
        """True when the host took the message; a 5xx bounces it; anything else: next."""
        smtp = aiosmtplib.SMTP(
            hostname=address,
            port=self.smtp_port,
            timeout=self.timeout,
            local_hostname="sender.example.net",
            start_tls=False,
        )
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError) as error:
            outcome.log.append(f"{host}[{address}]: cannot connect ({error})")
            return False
        try:
            _, reply = await smtp.sendmail(sender, [recipient], message.as_bytes())
        except aiosmtplib.SMTPRecipientsRefused as refused:
            code, text = refused.recipients[0].code, refused.recipients[0].message
            return self._failed(host, address, code, text, outcome)
        except aiosmtplib.SMTPResponseException as error:
            return self._failed(host, address, error.code, error.message, outcome)
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except aiosmtplib.SMTPException:
                    smtp.close()
        outcome.reply = reply
        outcome.log.append(f"{host}[{address}]: delivered ({reply})")
        return True

    def _failed(self, host: str, address: str, code: int, text: str, outcome: Outcome) -> bool:
        outcome.reply = f"{code} {text}"
        outcome.log.append(f"{host}[{address}]: {code} {text}")
        if code >= 500:
            raise _Bounce(outcome.reply)
        return False


class SkipsThePrimary(SimpleSender):
    """A broken sender: it ignores the best MX and goes straight to the next one (the mistake
    the README's first plugin example must catch)."""

    async def mail_hosts(self, domain: str) -> list[str]:
        return (await super().mail_hosts(domain))[1:]


def make_message(subject: str = "Hello") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "bob@example.net"
    message["To"] = "alice@example.test"
    message["Subject"] = subject
    message.set_content("Hi Alice.\n")
    return message
