"""Per-face identity by box overlap, and exponential smoothing of probabilities per identity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.faces import Faces


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` ``(n, 4)`` with every box in ``b`` ``(m, 4)``."""
    a = a.astype(np.float64)[:, None, :]
    b = b.astype(np.float64)[None, :, :]
    iw = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    ih = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class _Track:
    xyxy: np.ndarray
    probs: np.ndarray | None
    missed: int = 0


class FaceTracker:
    """Greedy IoU tracker with exponential smoothing of class probabilities.

    Args:
        iou_threshold: Minimum overlap for a face to continue a track.
        smoothing: Weight of the past in the running average (0: no smoothing).
        max_missed: Frames a track survives without a matching face.
    """

    def __init__(self, iou_threshold: float = 0.3, smoothing: float = 0.6, max_missed: int = 5) -> None:
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.iou_threshold = iou_threshold
        self.smoothing = smoothing
        self.max_missed = max_missed
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0

    def reset(self) -> None:
        """Forget every track (e.g. between unrelated images)."""
        self._tracks.clear()

    def update(self, faces: Faces) -> Faces:
        """Assign track ids to ``faces`` and smooth their probabilities.

        Returns:
            ``faces`` with ``track_id`` set and ``probs`` replaced by the smoothed ones.
        """
        ids = list(self._tracks)
        n = len(faces)
        assigned = np.full(n, -1, np.int64)
        if ids and n:
            iou = iou_matrix(faces.xyxy, np.stack([self._tracks[i].xyxy for i in ids]))
            for flat in np.argsort(-iou, axis=None):
                f, t = divmod(int(flat), len(ids))
                if iou[f, t] < self.iou_threshold:
                    break
                if assigned[f] < 0 and ids[t] not in assigned:
                    assigned[f] = ids[t]
        probs = None if faces.probs is None else faces.probs.copy()
        for f in range(n):
            if assigned[f] < 0:
                assigned[f] = self._next_id
                self._next_id += 1
                self._tracks[int(assigned[f])] = _Track(faces.xyxy[f], None)
            track = self._tracks[int(assigned[f])]
            track.xyxy, track.missed = faces.xyxy[f], 0
            if probs is not None:
                if track.probs is not None and track.probs.shape == probs[f].shape:
                    probs[f] = self.smoothing * track.probs + (1 - self.smoothing) * probs[f]
                track.probs = probs[f].copy()
        seen = set(assigned.tolist())
        for tid in ids:
            if tid not in seen:
                self._tracks[tid].missed += 1
                if self._tracks[tid].missed > self.max_missed:
                    del self._tracks[tid]
        return faces.with_tracks(assigned, probs)
