"""What a run produced and whether it met the scenario's expectations: the result rows and
their JSON (``model``), the expectation checks (``expect``) and the balancing statistics
(``stats``)."""
