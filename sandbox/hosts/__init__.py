"""The mail hosts: real aiosmtpd servers on loopback whose behaviour follows the scenario.

``host`` is one address of one mail host: its socket states (listening, refusing, timing out)
and its sessions; ``transcript`` is what a session looks like to a reader.
"""
