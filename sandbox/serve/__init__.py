"""Serve mode: a scenario's DNS server and mail hosts on loopback, in real time, for senders
outside the sandbox. ``plan`` places the hosts, ``world`` binds them, ``harness`` is the test
double a test drives (``ServedScenario``), ``plugin`` its pytest fixture, ``cli`` the
``mxsandbox serve`` command, ``retention`` what a served sandbox keeps (``--retain``),
``resources`` its file descriptors, and ``trap`` catches errors inside the servers for the
test."""
