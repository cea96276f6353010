"""The mail hosts: real aiosmtpd servers on loopback whose behaviour follows the scenario.

``host`` is one address of one mail host (its life cycle, phases, mailbox and sessions);
``sockets`` its port's states (listening, refusing, timing out); ``session`` one connection,
the I/O shell around aiosmtpd (``aiosmtpd_patches`` isolates what it takes from aiosmtpd's
internals); ``script`` the pure rules of what a host says at each SMTP stage; ``transcript``
what a session looks like to a reader; ``limits`` what a host keeps and allows (everything in
run mode; bounded in serve mode).
"""
