"""``python -m sandbox`` and the ``mxsandbox`` command.

The entry point is here, not in ``cli``, so that a Ctrl-C that lands while the command's
modules are still being imported is an interruption like any other (``interrupted``, exit
130), not a KeyboardInterrupt traceback: only this small module and the lazy package are
loaded before the guard is in place.
"""

import sys


def entry() -> int:
    try:
        from sandbox.cli import main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130  # cli.EXIT_INTERRUPTED, which could not be imported
    return main()


if __name__ == "__main__":
    sys.exit(entry())
