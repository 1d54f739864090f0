"""``python -m export`` is ``export-onnx``."""

import sys

from runtime.console import export_onnx

sys.exit(export_onnx())
