"""Benchmarks of the sandbox against the fastest this stack goes on the same machine.

Run them all with ``make bench`` (``python -m bench``); see ``bench/__main__.py``. Every figure
is printed beside a baseline measured in the same run, and written as JSON. These are scripts,
not tests: nothing here is collected by pytest.
"""

__all__: list[str] = []
