"""``python -m export`` is ``export-onnx``."""

import sys

from export.onnx_export import cli

sys.exit(cli())
