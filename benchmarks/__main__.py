"""``python -m benchmarks`` is ``benchmark``."""

import sys

from benchmarks.run import cli

sys.exit(cli())
