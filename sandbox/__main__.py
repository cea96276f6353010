"""``python -m sandbox`` is ``mxsandbox``."""

import sys

from sandbox.cli import main

sys.exit(main())
