"""DNS for the sandbox: the zone reader (``zone``) and the embedded authoritative server
(``server``), which answers from the scenario's zones on real loopback sockets."""
