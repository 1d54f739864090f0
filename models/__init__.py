"""The shipped models: the documented CNN (the default), the stronger VGG-BN and the ensemble of two VGGs
(the most accurate; see MODEL_CARD.md)."""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = MODELS_DIR / "emotion_cnn.onnx"  # fp32, verified against Keras by export-onnx
INT8_MODEL = MODELS_DIR / "emotion_cnn.int8.onnx"  # static INT8 (QDQ), if it met its accuracy bound
VGG_MODEL = MODELS_DIR / "emotion_vgg.onnx"  # trainer-fit --arch vgg: the stronger model, fp32
VGG_INT8_MODEL = MODELS_DIR / "emotion_vgg.int8.onnx"  # its static INT8 (QDQ) variant
ENSEMBLE_MODEL = MODELS_DIR / "emotion_ensemble.onnx"  # two VGGs in one graph (export-onnx A B), float16-stored weights
ENSEMBLE_INT8_MODEL = MODELS_DIR / "emotion_ensemble.int8.onnx"  # its static INT8 (QDQ) variant

# Shipped models by name: ``runtime-live --model vgg`` works from any folder after ``pip install``.
SHIPPED_MODELS = {
    "fp32": DEFAULT_MODEL,
    "int8": INT8_MODEL,
    "vgg": VGG_MODEL,
    "vgg-int8": VGG_INT8_MODEL,
    "ensemble": ENSEMBLE_MODEL,
    "ensemble-int8": ENSEMBLE_INT8_MODEL,
}

_NAMES = [f"{name} (the default)" if path == DEFAULT_MODEL else name for name, path in SHIPPED_MODELS.items()]
SHIPPED_NAMES = ", ".join(_NAMES[:-1]) + " or " + _NAMES[-1]  # as a --model help lists them
