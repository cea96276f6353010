"""``mxsandbox conform``: a graded conformance suite for any mail sender.

What Autobahn is for WebSocket and h2spec for HTTP/2, for RFC 5321 §5.1 and its neighbours:
each case of the catalogue (``catalogue``) serves a small world of its own (DNS and mail hosts,
``sandbox.serve``), has the sender under test deliver a message into it, watches what reaches
the hosts and the DNS server, and grades what it saw against one clause of an RFC
(``model``). The runner (``runner``) drives a sender given as a command (``--sender-cmd``) or
an MTA that takes mail over SMTP (``--smtp``, with ``router`` sharing one DNS address among
the cases); the results become a terminal report, JSON, JUnit XML and an HTML page
(``reports``, ``junit``, ``html``), and side-by-side tables (``table``).
"""
