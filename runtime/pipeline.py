"""The whole per-frame job: detect -> classify (one batched call) -> track -> annotate."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

import numpy as np

from runtime.annotate import EmojiAnnotator, LabelAnnotator, side_panel
from runtime.classifier import EmotionClassifier
from runtime.detector import BackgroundSearch, HaarDetector, StillDetector, dedupe, merge_new_faces
from runtime.faces import Faces
from runtime.image import to_bgr, to_gray
from runtime.tracker import FaceTracker

STAGES = ("detect", "classify", "track", "composite")  # keys of Pipeline.stage_s


# Frames a whole-frame search runs beside before its faces join (and, as one search runs at a time,
# the least number of frames between searches). Measured on the clip (INT8 on OpenVINO, 2 cores,
# two runs each): a search took 12-20 ms beside frames of 3.5 ms, so with 4 the main path waited
# for it every fifth frame (p99 14 ms); 8 gave p99 7.1-7.8 ms, 10: 5.6-7.6, 12: 5.1-5.2, each with
# a mean of 3.4-3.7 ms. At a live camera's 30 frames/s, 12 frames are 0.4 s before a new face gets
# its emoji.
SEARCH_LAG = 12


def inference_threads(threads: int, detect_every: int, search_lag: int) -> int:
    """Inference threads for a pipeline's classifier.

    ``threads`` when it is given (above 0). Else, when whole-frame searches run on their own
    thread (``detect_every > 1`` and ``search_lag > 0``), every core this process may use but one,
    which the search takes; else 0 (the engine's choice: one per core). Measured on the clip with
    2 cores: OpenVINO on both cores beside a search took 4.3 ms a face (spikes of 10-24 ms)
    against 1.2 ms alone; on one core, 1.5 ms beside a search.
    """
    if threads > 0 or detect_every == 1 or search_lag == 0:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


_NO_FILE = object()  # no frame yet: the first frame's file, even None (a camera), is a new one


class Pipeline:
    """Frame in, emoji-annotated frame and :class:`Faces` out.

    Example:
        >>> import cv2
        >>> from runtime.sources import demo_image_path
        >>> frame = cv2.imread(str(demo_image_path()))  # a BGR frame (the shipped demo photo)
        >>> pipe = Pipeline(stills=True)                # shipped model, Haar, tracker, emoji
        >>> faces = pipe.process(frame)                 # boxes, probabilities, labels, track ids
        >>> out = pipe.annotate(frame.copy(), faces)    # emoji composited on every face
        >>> pipe.close()
        >>> len(faces) > 0 and out.shape == frame.shape
        True

    Args:
        model: ONNX model path, or a shipped model by name (``fp32``, ``int8``); default: ``fp32``.
        provider: ``auto``, ``cpu`` or ``cuda``.
        threads: Inference threads of the classifier made here (0: :func:`inference_threads` decides).
        detector: A configured detector (default: :class:`HaarDetector` with its defaults).
        still_detector: The thorough search of photos (:class:`StillDetector`, a few hundred ms
            a photo): ``"new"`` (the default) makes one with its defaults; None searches photos
            as video frames.
        stills: Whether the frames are photos: the first frame, and the first after each
            :meth:`reset`, is then searched by ``still_detector`` (``reset(still=...)`` changes
            it for what follows). False (the default): every frame takes the fast path of video.
        classifier: A configured classifier (overrides ``model``, ``provider`` and ``threads``).
        tracker: A tracker; ``"new"`` (the default) makes a :class:`FaceTracker` with its
            defaults; None classifies every frame independently (no identities, no smoothing).
        emoji_dir: Folder of ``<label>.png`` (default: bundled Noto emoji).
        placement: ``over`` or ``beside`` the face.
        show_labels: Also write label and confidence.
        panel: Append a side panel with the dominant emotion's emoji.
        detect_every: Search the whole frame on every Nth frame; between, re-find the known faces
            only around their last boxes (:meth:`HaarDetector.detect_near`). A lost face, or no
            face at all, starts a search at once. 1: whole frame every time, on the frame itself.
        search_lag: Frames a whole-frame search may take. It runs on its own thread (with its
            own cascade) beside the frames that follow, and its new faces join on frame
            ``n + search_lag``: the main path never waits for a whole-frame search, and the
            result is the same on every run (a fixed lag, not a race). 0: search on the frame
            itself (as ``detect_every=1`` does). The first frame, and the first after
            :meth:`reset`, is always searched on the spot, so a photo never waits.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        provider: str = "auto",
        threads: int = 0,
        detector: HaarDetector | None = None,
        still_detector: StillDetector | Literal["new"] | None = "new",
        stills: bool = False,
        classifier: EmotionClassifier | None = None,
        tracker: FaceTracker | Literal["new"] | None = "new",
        emoji_dir: str | Path | None = None,
        placement: str = "over",
        show_labels: bool = False,
        panel: bool = False,
        detect_every: int = 5,
        search_lag: int = SEARCH_LAG,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        if search_lag < 0:
            raise ValueError(f"search_lag must be >= 0, got {search_lag}")
        self.detector = detector or HaarDetector()
        self._new_still = isinstance(still_detector, str)  # made when first needed (its cascades load then)
        self._still_detector = None if self._new_still else still_detector
        self._still = stills  # the first frame after a reset is a photo (see reset)
        self.classifier = classifier or EmotionClassifier(
            model, provider=provider, threads=inference_threads(threads, detect_every, search_lag)
        )
        self.tracker = FaceTracker() if isinstance(tracker, str) else tracker
        self.emoji = EmojiAnnotator(emoji_dir, self.classifier.labels, placement=placement)
        self.labels = LabelAnnotator() if show_labels else None
        self.panel = panel
        self.detect_every = detect_every
        self.search_lag = 0 if detect_every == 1 else search_lag
        self.stage_s = dict.fromkeys(STAGES, 0.0)
        self._frames = 0
        self.full_detections = 0  # whole-frame searches (on the spot or in the background)
        self._boxes = Faces.empty()
        self._search = BackgroundSearch(self.detector) if self.search_lag else None
        self._last_search = 0  # frame number of the last whole-frame search
        self._shape: tuple[int, ...] = ()  # the last frame's size: another size resets the pipeline
        self._file: object = _NO_FILE  # the file of the last frame given to start_frame

    @property
    def still_detector(self) -> StillDetector | None:
        """The detector of photos (None: photos are searched as video frames)."""
        if self._new_still:
            self._still_detector, self._new_still = StillDetector(), False
        return self._still_detector

    def start_frame(self, path: Path | None, photo: bool) -> None:
        """Say where the next frame comes from; the pipeline resets when nothing should carry over.

        A photo, a frame of another file than the last one (a folder's next video), and the first
        frame start afresh; a photo then gets the still detector's thorough search, and video and
        cameras the fast path. runtime-live and each stream of ``--source A --source B`` call this
        before every frame (:class:`runtime.sources.Frame` gives ``path`` and ``photo``).
        """
        if photo or path != self._file:
            self.reset(still=photo)
            self._file = path

    def reset(self, still: bool | None = None) -> None:
        """Forget the faces seen so far (call between unrelated images).

        Args:
            still: Whether the next frame is a photo, searched by the still detector; None keeps
                what was said last (at first, the pipeline's ``stills``).
        """
        if still is not None:
            self._still = still
        self._boxes = Faces.empty()
        self._frames = 0
        if self._search is not None:
            self._search.cancel()
        if self.tracker is not None:
            self.tracker.reset()

    def close(self) -> None:
        """Stop the background search thread (a Pipeline that is dropped stops it too)."""
        if self._search is not None:
            self._search.close()

    def _detect(self, gray: np.ndarray) -> Faces:
        """This frame's boxes: near re-detection of the known faces, and the whole-frame searches due."""
        n = self._frames
        if n == 0 and self._still and self.still_detector is not None:  # a photo: the thorough search
            self.full_detections += 1
            return self.still_detector.detect_gray(gray)
        if n == 0 or self._search is None:  # on the spot: the first frame, or no background search
            if n % self.detect_every == 0 or not len(self._boxes):
                return self._search_now(gray)
            near = self.detector.detect_near(gray, self._boxes.xyxy)
            if len(near) < len(self._boxes):  # a face was lost: look everywhere
                return self._search_now(gray)
            return near
        boxes = self._boxes
        lost = False
        if len(boxes):
            boxes = self.detector.detect_near(gray, self._boxes.xyxy)
            if len(boxes) < len(self._boxes):  # a face was lost: look further, finer, at a higher resolution
                wider = self.detector.detect_near(gray, self._boxes.xyxy, grow=0.75, face_px=64,
                                                  scale_factor=self.detector.scale_factor)
                boxes = wider if len(wider) > len(boxes) else boxes
            lost = len(boxes) < len(self._boxes)
        found = self._search.collect(n)
        if found is not None:
            boxes = merge_new_faces(boxes, found)
        if not self._search.pending and (lost or not len(boxes) or n - self._last_search >= self.detect_every):
            self._search.submit(gray, due=n + self.search_lag, angles=self._turns())
            self.full_detections += 1
            self._last_search = n
        return dedupe(boxes)

    def _search_now(self, gray: np.ndarray) -> Faces:
        """A whole-frame search on the spot."""
        faces = self.detector.detect_gray(gray, self._turns())
        self.full_detections += 1
        self._last_search = self._frames
        return faces

    def _turns(self) -> tuple[float, ...]:
        """The angles the next whole-frame search also turns the frame by: each of the detector's
        ``angles`` in turn, one a search (each costs about as much as the upright search; both on
        a video's first frame doubled that frame's time, and the quick benchmark's p99)."""
        angles = self.detector.angles
        return (angles[self.full_detections % len(angles)],) if angles else ()

    def process(self, frame: np.ndarray) -> Faces:
        """Detect, classify (one model call) and track the faces of a frame.

        A frame of another size than the last is an unrelated image: the pipeline resets itself
        (no track, box or emotion carries over). Call :meth:`reset` between unrelated images of
        one size (the files of a folder: ``runtime-live`` does).
        """
        faces, crops = self.prepare(frame)
        t0 = time.perf_counter()
        probs = self.classifier.predict(crops)
        self.stage_s["classify"] += time.perf_counter() - t0
        return self.finish(faces, probs)

    def prepare(self, frame: np.ndarray, copy: bool = False) -> tuple[Faces, np.ndarray]:
        """The first half of :meth:`process`: this frame's boxes, and their crops for the model.

        :meth:`process` is ``prepare``, one ``classifier.predict`` of the crops, then
        :meth:`finish`. Callers that classify the faces of several frames or streams in one model
        call (:mod:`runtime.batch`, :mod:`runtime.streams`) call the halves themselves. Several
        frames may be prepared before any is finished (detection never reads the tracker), as
        long as they are finished in the order they were prepared; the results are then those of
        :meth:`process`.

        Args:
            frame: The frame (grayscale, BGR or BGRA).
            copy: Return crops of their own (else the classifier's reused buffer, overwritten by
                the next ``prepare``).

        Returns:
            The boxes (unclassified :class:`Faces`), and the ``(n, H, W, 1)`` raw-pixel crops.
        """
        t0 = time.perf_counter()
        gray = to_gray(frame)
        if gray.shape != self._shape:
            if self._frames:
                self.reset()
            self._shape = gray.shape
        self._boxes = self._detect(gray)
        self._frames += 1
        t1 = time.perf_counter()
        crops = self.classifier.crop(gray, self._boxes.xyxy)
        self.stage_s["detect"] += t1 - t0
        self.stage_s["classify"] += time.perf_counter() - t1
        return self._boxes, crops.copy() if copy else crops

    def finish(self, faces: Faces, probs: np.ndarray) -> Faces:
        """The second half of :meth:`process`: ``faces`` (from :meth:`prepare`) with the model's
        probabilities ``probs`` ``(n, k)``, tracked (ids, smoothed probabilities)."""
        t0 = time.perf_counter()
        faces = faces.with_probs(probs, self.classifier.labels)
        if self.tracker is not None:
            faces = self.tracker.update(faces)
        self.stage_s["track"] += time.perf_counter() - t0
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
