"""What the sender does with the ESMTP extensions a host offers, sans I/O.

The EHLO reply lists the extensions (RFC 5321 §4.1.1.1); after HELO there are none. Before
MAIL the sender decides, as its profile's MTA does, whether to send the message at all and
what MAIL FROM and RCPT TO carry. Each rule below is read in the MTA's own source:

======================  ===============================================================
the message             postfix (3.7)            exim (4.96)          haraka (3.x)
======================  ===============================================================
larger than the SIZE    not sent: bounced,       sent, with SIZE=     sent, no SIZE=:
the host offers         5.3.4 "message size N    (size + lines +      the host's reply
                        exceeds size limit L     1024): the host's    decides
                        of server H[A]"          552 decides
needs SMTPUTF8, the     sent with SMTPUTF8       sent with SMTPUTF8   SMTPUTF8 only when
host offers it          (RFC 6531)                                    the sender address
                                                                      is not ASCII
needs SMTPUTF8, the     not sent: bounced,       downconverted: the   domains as A-labels,
host does not offer it  5.6.7 "SMTPUTF8 is       addresses as A-      mailboxes as they
                        required, but was not    labels, mailboxes    are, no SMTPUTF8
                        offered by host H[A]"    in Punycode (xn--)
8-bit content, the      BODY=8BITMIME            (none)               (none)
host offers 8BITMIME
======================  ===============================================================

Sources: Postfix ``smtp_proto.c`` (``session->size_limit < request->data_size`` →
``smtp_mesg_fail`` 5.3.4; ``DELIVERY_REQUIRES_SMTPUTF8`` and no ``SMTP_FEATURE_SMTPUTF8`` →
``smtp_mesg_fail`` 5.6.7, at the first such host in 3.7; from 3.11 the other MX hosts are tried
first); Exim ``transports/smtp.c`` (``build_mailcmd_options``: ``SIZE=%d`` with
``size_addition`` 1024, and ``utf8_downconvert`` -1 by default: downconvert when the host does
not offer SMTPUTF8; ``utf8.c`` for the conversion); Haraka ``outbound/hmail.js``
(``get_reverse_path_with_params``: ``SMTPUTF8`` only ``if has_non_ascii(rp)``, addresses
``format(!smtputf8)``: A-label domains; no SIZE parameter). The ``rfc5321`` profile does what
RFC 1870 §6.1 and RFC 6531 §3.2 say a client does: it does not send a message the host has
said it will refuse, and bounces them as Postfix does.

A message *needs* SMTPUTF8 (RFC 6531 §3.2) when its envelope (the sender, or a recipient of
this delivery) or its header is not ASCII.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.core.idn import address_to_ascii
from sandbox.core.policy import Profile

__all__ = [
    "HELO_ONLY",
    "Extensions",
    "LocalFailure",
    "MessageFacts",
    "mail_command",
    "rcpt_command",
    "refuse_locally",
]


@dataclass(frozen=True, slots=True)
class Extensions:
    """What a host offered in its EHLO reply. ``size``: None when SIZE was not offered, 0
    when offered without a limit (RFC 1870 §4)."""

    size: int | None = None
    smtputf8: bool = False
    eightbitmime: bool = False

    @classmethod
    def parse(cls, ehlo_reply: str) -> Extensions:
        """From the text of a 250 reply to EHLO: its first line greets, each other line
        names an extension and its parameters."""
        size: int | None = None
        smtputf8 = eightbitmime = False
        for line in ehlo_reply.splitlines()[1:]:
            words = line.split()
            if not words:
                continue
            keyword = words[0].upper()
            if keyword == "SIZE":
                size = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
            elif keyword == "SMTPUTF8":
                smtputf8 = True
            elif keyword == "8BITMIME":
                eightbitmime = True
        return cls(size, smtputf8, eightbitmime)


HELO_ONLY = Extensions()  # a host greeted with HELO offers nothing


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the sender knows of the message it is about to send."""

    size: int  # bytes of content
    lines: int
    header_ascii: bool = True
    content_ascii: bool = True

    @classmethod
    def of(cls, content: bytes) -> MessageFacts:
        header = content.split(b"\n\n", 1)[0]
        return cls(len(content), content.count(b"\n"), header.isascii(), content.isascii())

    def needs_smtputf8(self, sender: str, recipients: tuple[str, ...]) -> bool:
        return not (self.header_ascii and sender.isascii() and all(r.isascii() for r in recipients))


@dataclass(frozen=True, slots=True)
class LocalFailure:
    """The sender will not send the message to this host: every recipient bounces with
    ``dsn``; ``text`` is the reason in the MTA's words, ``why`` in the story's."""

    dsn: str
    text: str
    why: str


def refuse_locally(
    facts: MessageFacts,
    ext: Extensions,
    profile: Profile,
    *,
    sender: str,
    recipients: tuple[str, ...],
    where: str,
) -> LocalFailure | None:
    """Whether the sender keeps the message from this host (``where``: ``H[A]``) before MAIL:
    a size over the host's SIZE, or SMTPUTF8 needed and not offered (the table above)."""
    if profile.size_check == "local" and ext.size and facts.size > ext.size:
        return LocalFailure(
            "5.3.4",
            f"message size {facts.size} exceeds size limit {ext.size} of server {where}",
            f"the message ({facts.size} bytes) is larger than {where} takes (SIZE {ext.size}): "
            f"{_named(profile)} does not send it (RFC 1870 §6.1)",
        )
    if (
        not ext.smtputf8
        and profile.without_smtputf8 == "bounce"
        and facts.needs_smtputf8(sender, recipients)
    ):
        return LocalFailure(
            "5.6.7",
            f"SMTPUTF8 is required, but was not offered by host {where}",
            f"the message needs SMTPUTF8 (an address or header that is not ASCII) and {where} "
            f"does not offer it: {_named(profile)} does not send it (RFC 6531 §3.2)",
        )
    return None


def _named(profile: Profile) -> str:
    return "the sender" if profile.name == "rfc5321" else profile.name.capitalize()


def _uses_smtputf8(
    facts: MessageFacts, ext: Extensions, profile: Profile, sender: str, recipients: tuple[str, ...]
) -> bool:
    if not ext.smtputf8:
        return False
    if profile.smtputf8_for_sender_only:
        return not sender.isascii()
    return facts.needs_smtputf8(sender, recipients)


def _written(address: str, ext: Extensions, profile: Profile) -> str:
    """An address as the sender writes it to this host in MAIL or RCPT: as it is, unless
    the host does not offer SMTPUTF8 and the profile converts it (Exim: the whole address;
    Haraka: the domain)."""
    if address.isascii() or ext.smtputf8 or profile.without_smtputf8 == "bounce":
        return address
    return address_to_ascii(address, local_part=profile.without_smtputf8 == "downconvert")


def _size(facts: MessageFacts, profile: Profile) -> int:
    """The SIZE= a profile declares: the content's size (Postfix), or Exim's estimate with
    room for what is added on the way (size + lines + size_addition)."""
    if profile.size_addition:
        return facts.size + facts.lines + profile.size_addition
    return facts.size


def mail_command(
    sender: str,
    facts: MessageFacts,
    ext: Extensions,
    profile: Profile,
    recipients: tuple[str, ...],
) -> str:
    """``MAIL FROM:<sender>`` with the parameters this profile sends to this host."""
    line = f"MAIL FROM:<{_written(sender, ext, profile)}>"
    if ext.size is not None and profile.size_parameter:
        line += f" SIZE={_size(facts, profile)}"
    if ext.eightbitmime and profile.body_8bitmime and not facts.content_ascii:
        line += " BODY=8BITMIME"
    if _uses_smtputf8(facts, ext, profile, sender, recipients):
        line += " SMTPUTF8"
    return line


def rcpt_command(recipient: str, ext: Extensions, profile: Profile) -> str:
    """``RCPT TO:<recipient>`` as this profile writes it to this host."""
    return f"RCPT TO:<{_written(recipient, ext, profile)}>"
