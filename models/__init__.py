"""The shipped default model: the documented CNN trained on FER2013 (see MODEL_CARD.md)."""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = MODELS_DIR / "emotion_cnn.onnx"  # fp32, verified against Keras by export-onnx
INT8_MODEL = MODELS_DIR / "emotion_cnn.int8.onnx"  # static INT8 (QDQ), if it met its accuracy bound

# Shipped models by name: ``runtime-live --model int8`` works from any folder after ``pip install``.
SHIPPED_MODELS = {"fp32": DEFAULT_MODEL, "int8": INT8_MODEL}
