"""TLS for the sandbox's servers and its sender: certificates, verdicts, DANE, MTA-STS over HTTPS.

The rules (which level asks for what, what a failed step means) are the core's
(``core.tls``, ``core.mta_sts``, ``core.tlsrpt``); this package does the TLS work around them.
"""
