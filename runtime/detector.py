"""Face detection with OpenCV's Haar frontal-face cascade, on a downscaled grayscale frame, and
whole-frame searches on a thread of their own (:class:`BackgroundSearch`)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import ModelError
from runtime.faces import Faces, clip_xyxy
from runtime.image import to_gray

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"  # ships with opencv-python 4.x


class HaarDetector:
    """Haar cascade face detector; the cascade is loaded once.

    Detection runs on a grayscale copy of the frame scaled so that its width is at most
    ``detect_width``; boxes are scaled back to frame pixels.

    Args:
        cascade_path: Cascade XML (default: OpenCV's frontal-face cascade).
        detect_width: Width in pixels of the frame the cascade sees (0: full size).
        scale_factor: Image-pyramid step of ``detectMultiScale`` (smaller: slower, finds more).
        min_neighbors: Overlapping hits a face needs (larger: fewer false faces).
        min_size: Smallest face side to find, in frame pixels.
        near_scale_factor: Pyramid step of the searches around known faces
            (:meth:`detect_near`): they look for one face of about a known size, so a coarser step
            costs little: on the clip, 1.2 kept the face as often as 1.1 (98.3 % against 98.5 %
            of frames, before the wider retry) in 70 % of the time.
    """

    def __init__(
        self,
        cascade_path: str | Path | None = None,
        detect_width: int = 320,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 40,
        near_scale_factor: float = 1.2,
    ) -> None:
        if cascade_path is None:
            if not hasattr(cv2, "data"):
                raise ModelError('this OpenCV has no Haar cascades: pip install "opencv-python>=4.8,<5"')
            cascade_path = Path(cv2.data.haarcascades) / DEFAULT_CASCADE
        cascade_path = Path(cascade_path)
        if not cascade_path.is_file():
            raise ModelError(f"Haar cascade {cascade_path} does not exist: reinstall opencv-python>=4.8,<5")
        if scale_factor <= 1.0 or near_scale_factor <= 1.0:
            raise ValueError(f"scale factors must be > 1, got {scale_factor} and {near_scale_factor}")
        if min_neighbors < 0 or min_size < 1 or detect_width < 0:
            raise ValueError("min neighbours must be >= 0, min size >= 1 and detect width >= 0")
        try:
            self.cascade = cv2.CascadeClassifier(str(cascade_path))
        except (cv2.error, SystemError):  # OpenCV 4.x raises (wrapped in SystemError) on a non-XML file
            self.cascade = None
        if self.cascade is None or self.cascade.empty():
            raise ModelError(f"{cascade_path} is not a valid Haar cascade XML")
        self.cascade_path = str(cascade_path)
        self.detect_width = detect_width
        self.scale_factor = scale_factor
        self.near_scale_factor = near_scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def clone(self) -> HaarDetector:
        """A detector with the same settings and its own cascade (one cascade must not serve two threads)."""
        twin = HaarDetector.__new__(HaarDetector)
        twin.__dict__.update(self.__dict__)
        twin.cascade = cv2.CascadeClassifier(self.cascade_path)
        return twin

    def detect(self, frame: np.ndarray) -> Faces:
        """Find faces in a frame (grayscale, BGR or BGRA)."""
        return self.detect_gray(to_gray(frame))

    def detect_gray(self, gray: np.ndarray) -> Faces:
        """Find faces in a 2-D grayscale frame."""
        h, w = gray.shape[:2]
        scale = 1.0
        if self.detect_width and w > self.detect_width:
            scale = self.detect_width / w
            small = cv2.resize(gray, (self.detect_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        else:
            small = gray
        side = max(1, round(self.min_size * scale))
        if min(small.shape[:2]) < side:
            return Faces.empty()
        found = self.cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side)
        )
        if len(found) == 0:
            return Faces.empty()
        xywh = np.asarray(found, dtype=np.float64) / scale
        xyxy = np.round(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1))
        return Faces(clip_xyxy(xyxy, (w, h)))

    def detect_near(self, gray: np.ndarray, xyxy: np.ndarray, grow: float = 0.5, face_px: int = 48,
                    scale_factor: float | None = None) -> Faces:
        """Re-find known faces by searching only around each of their boxes.

        Each region is the box grown by ``grow`` of its side on every side, scaled so that the
        face is about ``face_px`` pixels, and searched for faces of 0.7x to 1.4x the box's size:
        a fraction of a full-frame search. A box whose face is not found is dropped, so the
        caller can tell a lost face and fall back to :meth:`detect_gray`.

        Args:
            gray: 2-D grayscale frame.
            xyxy: Boxes ``(n, 4)`` of the faces seen last.
            grow: Margin searched around each box, as a fraction of its side.
            face_px: Side, in pixels, to which each region's face is scaled.
            scale_factor: Pyramid step (default: ``near_scale_factor``).
        """
        h, w = gray.shape[:2]
        found_boxes = []
        for x1, y1, x2, y2 in np.asarray(xyxy, dtype=np.int64).reshape(-1, 4):
            side = int(max(x2 - x1, y2 - y1, 1))
            pad = int(grow * side)
            rx1, ry1, rx2, ry2 = max(0, x1 - pad), max(0, y1 - pad), min(w, x2 + pad), min(h, y2 + pad)
            if rx2 - rx1 < 24 or ry2 - ry1 < 24:
                continue
            scale = min(1.0, face_px / side)
            region = gray[ry1:ry2, rx1:rx2]
            if scale < 1.0:
                size = (max(1, round((rx2 - rx1) * scale)), max(1, round((ry2 - ry1) * scale)))
                region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
            lo = max(1, round(0.7 * side * scale), round(self.min_size * scale))
            hi = max(lo + 1, round(1.4 * side * scale))
            if min(region.shape[:2]) < lo:
                continue
            hits = self.cascade.detectMultiScale(
                region, scaleFactor=scale_factor or self.near_scale_factor, minNeighbors=self.min_neighbors,
                minSize=(lo, lo), maxSize=(hi, hi),
            )
            if len(hits) == 0:
                continue
            hits = np.asarray(hits, dtype=np.float64) / scale
            centre = np.array([(x1 + x2) / 2 - rx1, (y1 + y2) / 2 - ry1])
            best = hits[np.argmin(np.abs(hits[:, :2] + hits[:, 2:] / 2 - centre).sum(axis=1))]
            bx, by = best[0] + rx1, best[1] + ry1
            found_boxes.append([bx, by, bx + best[2], by + best[3]])
        if not found_boxes:
            return Faces.empty()
        return Faces(clip_xyxy(np.round(np.asarray(found_boxes)), (w, h)))


class BackgroundSearch:
    """Whole-frame searches on a thread of their own, each collected on a fixed frame.

    The search of frame ``n`` runs beside the frames that follow and is handed back on frame
    ``due`` (waiting for it only if it is not finished by then), so the faces a run finds do
    not depend on how fast the machine is. The thread has its own cascade (:meth:`HaarDetector.clone`):
    OpenCV's cascade must not serve two threads at once.

    Args:
        detector: The detector whose settings the searches use.
    """

    def __init__(self, detector: HaarDetector) -> None:
        self._detector = detector.clone()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._job: _Job | None = None
        self._due = 0

    @property
    def pending(self) -> bool:
        """Whether a search was submitted and not yet collected."""
        return self._job is not None

    def submit(self, gray: np.ndarray, due: int) -> None:
        """Start searching ``gray`` (copied) for faces; :meth:`collect` hands it back on frame ``due``."""
        if self._thread is None:
            from runtime.cli_support import NATIVE_THREAD_PREFIX

            self._thread = threading.Thread(target=self._work, name=f"{NATIVE_THREAD_PREFIX}search", daemon=True)
            self._thread.start()
        self._job = _Job(gray.copy())
        self._due = due
        self._jobs.put(self._job)

    def collect(self, frame: int) -> Faces | None:
        """The search's faces when ``frame`` is its due frame or later (waiting for it if needed), else None."""
        job = self._job
        if job is None or frame < self._due:
            return None
        job.done.wait()
        self._job = None
        if isinstance(job.result, BaseException):
            raise job.result
        return job.result

    def cancel(self) -> None:
        """Drop the search in progress: its faces are never handed back."""
        self._job = None

    def close(self) -> None:
        """Stop the thread (after the search in progress, if any)."""
        self._job = None
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.result = self._detector.detect_gray(job.gray)
            except BaseException as exc:  # handed to the main thread by collect()
                job.result = exc
            job.done.set()


@dataclass
class _Job:
    gray: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: Faces | BaseException | None = None


def merge_new_faces(current: Faces, found: Faces) -> Faces:
    """``current`` plus the faces of ``found`` that none of it covers.

    ``found`` comes from a search of an earlier frame, so a face already followed may have
    moved since: a found box is new only when it overlaps no current box (IoU < 0.2) and its
    centre lies inside none.
    """
    if not len(found):
        return current
    if not len(current):
        return found
    from runtime.tracker import iou_matrix

    cur = current.xyxy.astype(np.float64)
    centres = (found.xyxy[:, :2] + found.xyxy[:, 2:]) / 2
    inside = ((centres[:, None, 0] >= cur[None, :, 0]) & (centres[:, None, 0] < cur[None, :, 2])
              & (centres[:, None, 1] >= cur[None, :, 1]) & (centres[:, None, 1] < cur[None, :, 3]))
    new = (iou_matrix(found.xyxy, current.xyxy).max(axis=1) < 0.2) & ~inside.any(axis=1)
    if not new.any():
        return current
    return Faces(np.concatenate([current.xyxy, found.xyxy[new]]))


def dedupe(faces: Faces, iou: float = 0.5) -> Faces:
    """``faces`` without the boxes that overlap an earlier one by more than ``iou`` (two tracks
    that converged on one face)."""
    if len(faces) < 2:
        return faces
    from runtime.tracker import iou_matrix

    overlap = np.triu(iou_matrix(faces.xyxy, faces.xyxy), k=1)
    keep = ~(overlap > iou).any(axis=0)
    return faces if keep.all() else Faces(faces.xyxy[keep])
