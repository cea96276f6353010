"""TLS for the sandbox's servers and its sender: certificates, verdicts, DANE, MTA-STS over HTTPS.

The rules (what a level asks of a host, what each STARTTLS step means per MTA, MTA-STS
policies, TLS-RPT reports) are the core's: ``core.tls``, ``core.mta_sts``, ``core.tlsrpt``.
This package does the TLS work around them:

- ``certificates``: the world's CA (trustme) and each host's certificate per ``tls:`` value,
  in a temporary directory; server and client contexts;
- ``verify``: the sender's PKIX verdict on the chain a server sent;
- ``dane``: TLSA records and the DANE verdict (RFC 7672);
- ``policy_server``: HTTPS for ``/.well-known/mta-sts.txt`` (RFC 8461 §3.3).

Two more modules sit with the side they serve: ``hosts.starttls`` (the STARTTLS stage of an
aiosmtpd session) and ``sender.starttls`` / ``sender.mta_sts`` (the client's upgrade and the
policy fetch).

Wiring (the next round, once the hosts, serve, control and profile work has landed)
===================================================================================

Scenario (``scenario/model.py``, ``scenario/load.py``, ``docs/scenario-format.md``)
  ``Behaviour.tls: HostTls = "valid"``, a key that combines with the others
  (``{tls: expired, rcpt: "451 …"}``; ``describe()`` adds ``tls expired``). ``Stage`` gains
  ``starttls`` between ``ehlo`` and ``mail``: replies, delays and ``disconnect`` there go
  through ``hosts.script.plan_stage`` unchanged. ``Profile`` gains ``tls: Level`` (each
  profile's default from ``core.tls.TLS_RULES``), ``mta_sts: "honor" | "ignore"`` (ignore for
  postfix, exim, haraka: none of them fetches policies) and ``starttls_timeout`` (Postfix's
  ``smtp_starttls_timeout``, 300 s); ``FIELD_KINDS`` reads ``tls`` as ``LEVELS`` and the loader
  refuses a level the profile's MTA lacks (``TlsRules.levels``: Haraka has no encrypt or
  dane). Top level: ``mta_sts: {domain: policy text}``, each text checked with
  ``core.mta_sts.parse_policy`` (a problem points at the file line plus the policy line), and
  ``dnssec: [apex, …]``, each a zone of the scenario. ``check`` warns when a policy domain has
  no valid ``_mta-sts`` TXT (``choose_record``) or no address for ``mta-sts.<domain>``, when
  TLSA records sit in a zone outside ``dnssec:`` (insecure: ignored by DANE senders), and
  when a TLSA record is unusable or matches no certificate the host can present
  (``dane.record_for`` of ``certificates.host_key`` prints the ``3 1 1`` that would).

World (``world.py``)
  One ``CertificateAuthority`` per world, closed in ``stop()``. ``start_host`` hands each
  ``MailHost`` ``lambda tls: ca.server_context(name, tls)``. With ``mta_sts:`` a
  ``PolicyServer``: run mode on 127.0.0.1 port 0, the zone address of ``mta-sts.<domain>``
  mapped to it in the ``AddressMap`` under a service key (``socket_for(address, "https")``;
  today the map knows SMTP only); serve mode on the loopback address the plan gives
  ``mta-sts.<domain>``, at ``--https-port`` (443 where it may bind, 8443 otherwise). ``serve``
  prints the CA file and the policy URLs; its ``ready`` record gains ``ca_file`` and
  ``mta_sts``. The request hook becomes a ``policy_served`` event.

Mail hosts (``hosts/session.py``, ``hosts/host.py``)
  ``SmtpSession`` subclasses ``hosts.starttls.StartTlsSMTP`` instead of ``PatchedSMTP``, with
  ``tls_now = lambda: host.behaviour_now().tls``. Its ``smtp_STARTTLS`` plays the stage first,
  as the other stages do: ``if not await self._play("starttls"): await
  super().smtp_STARTTLS(arg)``. Its ``connection_made`` returns early while
  ``tls_upgrading`` (aiosmtpd calls it again with the TLS transport: not a new session), and
  its ``data_received`` skips the transcript's line reader for handshake bytes. The hooks
  ``tls_started`` / ``tls_failed`` write transcript lines and set the session record's
  ``tls`` (version, or the failure); ``host_session`` events carry it. After a failed
  handshake aiosmtpd calls ``connection_lost`` itself: ``host.closed`` must run once.

Sender (``sender/smtp.py``, ``sender/agent.py``, ``sender/resolver.py``, ``sender/pool.py``)
  ``SmtpConnection.starttls(server_name, timeout)`` calls ``sender.starttls.start_tls`` with
  ``ca.client_context()`` and the MX host name for SNI, then judges ``TlsUp.chain`` with
  ``verify.judge`` (the world's CA; the moment is the run's epoch plus the clock) and, with
  TLSA records, ``dane.check`` (reference names: the MX host, the TLSA base domain, the
  next-hop domain), and hands the core an ``Established``; ``TlsDown`` becomes
  ``HandshakeFailed``, a ``ServerReply`` ``StartTlsRefused``. The stub resolver sends the DO
  bit, keeps the AD bit (``Answer.secure``) and reads TLSA and TXT answers. At level ``dane``
  the agent looks up ``_25._tcp.<mx host>`` TLSA for each candidate and folds it with
  ``dane.lookup_state``; with ``mta_sts: honor`` it reads ``_mta-sts.<domain>``, fetches with
  ``sender.mta_sts.fetch_policy`` through ``socket_for(address, "https")``, parses, and caches
  the policy by ``id`` for ``max_age`` on the run's clock. ``core.tls.plan_host`` then gives
  each candidate a ``Requirement``, or a skip (a ``skip`` note, before any connection). The
  connection cache keys sessions by TLS state too (Postfix's ``SMTP_KEY_FLAG_TLS_LEVEL``).

Attempt (``core/delivery.py``, ``core/classify.py``)
  After a 250 to EHLO the walk asks ``core.tls.decide`` with ``Offered`` or ``NotOffered``
  (STARTTLS among the EHLO keywords). A new action ``StartTls(server_name, timeout)``; its
  outcomes are the four above (``NoReply`` is classified at the new stage ``starttls``: next
  host, 4.4.2, "while receiving the STARTTLS response"). ``tls``: EHLO again, over TLS (RFC
  3207 §4.2), then the transaction; ``plain``: the transaction in clear; ``retry_plain``:
  ``Disconnect(quit=False)``, then ``Connect(candidate, tls=False)`` to the same address,
  counted neither in ``max_sessions`` nor in ``hosts_max_try`` (Postfix decrements both);
  ``next_host`` / ``defer`` / ``bounce``: applied as ``_judge`` applies a verdict, with the
  decision's status and words, and a site failure for the host. Postfix's plain-text rule
  needs ``waited`` (how long the message had queued when the attempt began): the queue passes
  it to ``Attempt``. The TLS-RPT result of each session under a policy is kept in the report.

Events, story, log, result
  New event kind ``tls`` (additive: step, version, certificate verdict, DANE verdict,
  detail, decision) beside the existing ``decision``; the narrative tells the TLS step, the
  verdict and why ("mx1 offers STARTTLS; TLSv1.3; the certificate has expired: encryption is
  enough at level may"); the Postfix log writes ``Untrusted`` / ``Trusted`` / ``Verified TLS
  connection established to …``, ``Cannot start TLS: handshake failure``; the report's lanes
  mark each session's TLS outcome. Each ``--json`` delivery row gains ``tls``: null for plain
  text, else ``{"version": "TLSv1.3", "verified": true}`` (``verified``: PKIX valid or DANE
  match) of the session that delivered. The result gains ``tls_reports``: one
  ``core.tlsrpt.build_report`` object per policy domain, dated from a fixed virtual epoch
  plus the run's clock (golden files stay stable), ``report-id`` ``<scenario>-<seed>-<domain>``.

DNS (``dns/server.py``)
  ``Authority(zones, signed=scenario.dnssec)`` sets the AD bit on an answer (positive, or a
  NXDOMAIN/NODATA denial) when every zone it came from is signed and the query asked with DO
  (EDNS flags) or AD (RFC 6840 §5.7, §5.8: AD only for clients that show they understand it).
  No RRSIGs: the sandbox plays a validating resolver that clients trust (glibc's ``options
  trust-ad``), not a signer.

Differential (``tests/differential``, real Postfix)
  In the namespace: ``options trust-ad`` in resolv.conf; ``smtp_tls_CAfile`` = the CA file
  ``serve`` prints; ``smtp_tls_security_level`` = may, encrypt, dane (with
  ``smtp_dns_support_level = dnssec``); ``smtp_tls_loglevel = 1``; short
  ``smtp_starttls_timeout`` and ``minimal_backoff_time``. Cases: each ``tls:`` value at may
  and encrypt, ``{starttls: 454 …}``, ``handshake-failure`` on the only MX (the first attempt
  defers, the retry after ``minimal_backoff_time`` delivers in plain text to the same
  address), DANE match, mismatch on every MX (deferred), all records unusable (as encrypt).
  The hosts listen on port 25 there, which ``_25._tcp`` TLSA names assume.
"""
