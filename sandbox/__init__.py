"""MX Sandbox: watch and test how mail finds its way by MX records.

An embedded authoritative DNS server, scripted mail hosts and a sender agent that walks the
MX records the way real MTAs do, all on one event loop with virtual time.
"""

__all__: list[str] = []
