"""``python -m runtime`` is ``runtime-live``."""

import sys

from runtime.console import runtime_live

sys.exit(runtime_live())
