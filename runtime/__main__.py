"""``python -m runtime`` is ``runtime-live``."""

import sys

from runtime.live import cli

sys.exit(cli())
