"""The whole per-frame job: detect -> classify (one batched call) -> track -> annotate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np

from runtime.annotate import EmojiAnnotator, LabelAnnotator, side_panel
from runtime.classifier import EmotionClassifier
from runtime.detector import HaarDetector
from runtime.faces import Faces
from runtime.image import to_bgr, to_gray
from runtime.tracker import FaceTracker

STAGES = ("detect", "classify", "track", "composite")  # keys of Pipeline.stage_s


class Pipeline:
    """Frame in, emoji-annotated frame and :class:`Faces` out.

    Example:
        >>> pipe = Pipeline()                           # shipped model, Haar, tracker, emoji
        >>> faces = pipe.process(frame)                 # boxes, probabilities, labels, track ids
        >>> out = pipe.annotate(frame.copy(), faces)    # emoji composited on every face

    Args:
        model: ONNX model path, or a shipped model by name (``fp32``, ``int8``); default: ``fp32``.
        provider: ``auto``, ``cpu`` or ``cuda``.
        detector: A configured detector (default: :class:`HaarDetector` with its defaults).
        classifier: A configured classifier (overrides ``model`` and ``provider``).
        tracker: A tracker; ``"new"`` (the default) makes a :class:`FaceTracker` with its
            defaults; None classifies every frame independently (no identities, no smoothing).
        emoji_dir: Folder of ``<label>.png`` (default: bundled Noto emoji).
        placement: ``over`` or ``beside`` the face.
        show_labels: Also write label and confidence.
        panel: Append a side panel with the dominant emotion's emoji.
        detect_every: Search the whole frame on every Nth frame; between, re-find the known faces
            only around their last boxes (:meth:`HaarDetector.detect_near`), falling back to a
            whole-frame search as soon as one is lost. 1: whole frame every time.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        provider: str = "auto",
        detector: HaarDetector | None = None,
        classifier: EmotionClassifier | None = None,
        tracker: FaceTracker | Literal["new"] | None = "new",
        emoji_dir: str | Path | None = None,
        placement: str = "over",
        show_labels: bool = False,
        panel: bool = False,
        detect_every: int = 5,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detector = detector or HaarDetector()
        self.classifier = classifier or EmotionClassifier(model, provider=provider)
        self.tracker = FaceTracker() if isinstance(tracker, str) else tracker
        self.emoji = EmojiAnnotator(emoji_dir, self.classifier.labels, placement=placement)
        self.labels = LabelAnnotator() if show_labels else None
        self.panel = panel
        self.detect_every = detect_every
        self.stage_s = dict.fromkeys(STAGES, 0.0)
        self._frames = 0
        self.full_detections = 0  # frames on which the whole frame was searched
        self._boxes = Faces.empty()

    def reset(self) -> None:
        """Forget the faces seen so far (call between unrelated images)."""
        self._boxes = Faces.empty()
        self._frames = 0
        if self.tracker is not None:
            self.tracker.reset()

    def process(self, frame: np.ndarray) -> Faces:
        """Detect, classify (one onnxruntime call) and track the faces of a frame."""
        t0 = time.perf_counter()
        gray = to_gray(frame)
        full = self._frames % self.detect_every == 0 or not len(self._boxes)
        if not full:
            near = self.detector.detect_near(gray, self._boxes.xyxy)
            full = len(near) < len(self._boxes)  # a face was lost: look everywhere
            self._boxes = near
        if full:
            self._boxes = self.detector.detect_gray(gray)
            self.full_detections += 1
        self._frames += 1
        t1 = time.perf_counter()
        faces = self.classifier.classify_gray(gray, self._boxes)
        t2 = time.perf_counter()
        if self.tracker is not None:
            faces = self.tracker.update(faces)
        t3 = time.perf_counter()
        self.stage_s["detect"] += t1 - t0
        self.stage_s["classify"] += t2 - t1
        self.stage_s["track"] += t3 - t2
        return faces

    def annotate(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        """Composite emoji (and labels, panel) on a BGR copy of ``frame`` when it is not BGR, else in place."""
        t0 = time.perf_counter()
        out = to_bgr(frame)
        self.emoji.annotate(out, faces)
        if self.labels is not None:
            self.labels.annotate(out, faces)
        if self.panel:
            out = side_panel(out, faces, self.emoji)
        self.stage_s["composite"] += time.perf_counter() - t0
        return out

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, Faces]:
        """Process and annotate one frame (in place when it is BGR)."""
        faces = self.process(frame)
        return self.annotate(frame, faces), faces
