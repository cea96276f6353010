"""Scenarios: the typed model (``model``), the YAML reader that remembers lines
(``yaml_lines``), the loader that builds the model and reports every mistake at its line
(``load``), and the zone lint (``lint``)."""
