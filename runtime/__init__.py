"""emocam runtime: facial emotion to emoji with numpy, OpenCV and onnxruntime (never TensorFlow).

Five lines from Python::

    import cv2
    from runtime import Pipeline
    pipe = Pipeline()                                  # shipped model, Haar, tracker, emoji
    frame = cv2.imread("photo.jpg")
    cv2.imwrite("out.jpg", pipe(frame)[0])             # emoji on every face

The names below are imported lazily, so ``runtime.contract`` stays light, and so that
``runtime.console`` (every command's entry) is reached with nothing slow imported before it: a
Ctrl-C in the first moments is caught there, never a traceback from inside an import.
"""

from __future__ import annotations

from importlib import import_module  # already loaded by the interpreter: nothing slow runs before the entry

__version__ = "0.1.0"

_EXPORTS = {
    "Faces": "runtime.faces",
    "ModelSpec": "runtime.contract",
    "FER2013_LABELS": "runtime.contract",
    "HaarDetector": "runtime.detector",
    "EmotionClassifier": "runtime.classifier",
    "FaceTracker": "runtime.tracker",
    "EmojiAnnotator": "runtime.annotate",
    "LabelAnnotator": "runtime.annotate",
    "Pipeline": "runtime.pipeline",
    "open_source": "runtime.sources",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
