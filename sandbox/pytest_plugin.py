"""The pytest plugin (registered through the ``pytest11`` entry point).

The ``mx_sandbox`` fixture arrives with serve mode; until then the plugin only registers
nothing, so that installing the package never changes a test run.
"""

__all__: list[str] = []
