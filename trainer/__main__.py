"""``python -m trainer`` is ``trainer-fit``."""

import sys

from trainer.fit import cli

sys.exit(cli())
