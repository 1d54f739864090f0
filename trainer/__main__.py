"""``python -m trainer`` is ``trainer-fit``."""

import sys

from runtime.console import trainer_fit

sys.exit(trainer_fit())
