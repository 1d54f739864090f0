"""``python -m benchmarks`` is ``benchmark``."""

import sys

from runtime.console import benchmark

sys.exit(benchmark())
