"""``Faces``: the one data type that flows from detector to classifier to tracker to annotator."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Faces:
    """The faces of one frame.

    Attributes:
        xyxy: Boxes ``(n, 4)`` int32 in frame pixels, ``x1, y1, x2, y2`` with ``x2, y2``
            exclusive. Boxes lie inside the frame they were found in.
        probs: Class probabilities ``(n, k)`` float32, or None before classification.
        class_names: Names of the ``k`` classes, in ``probs`` column order.
        track_id: Identity of each face across frames ``(n,)`` int64, or None before tracking.
    """

    xyxy: np.ndarray
    probs: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.int32)
        if xyxy.shape == (4,) or xyxy.size == 0:  # one box, or none
            xyxy = xyxy.reshape(-1, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must be (n, 4) boxes, got shape {xyxy.shape}")
        n = len(xyxy)
        if n and ((xyxy[:, 2] < xyxy[:, 0]).any() or (xyxy[:, 3] < xyxy[:, 1]).any()):
            raise ValueError(f"boxes must have x2 >= x1 and y2 >= y1, got {xyxy.tolist()}")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.probs is not None:
            probs = np.asarray(self.probs, dtype=np.float32)
            if probs.ndim != 2 or len(probs) != n:
                raise ValueError(f"probs must be ({n}, k), got {probs.shape}")
            if probs.shape[1] != len(self.class_names):
                raise ValueError(f"probs has {probs.shape[1]} columns but {len(self.class_names)} class names")
            object.__setattr__(self, "probs", probs)
        if self.track_id is not None:
            track_id = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
            if len(track_id) != n:
                raise ValueError(f"track_id must have {n} entries, got {len(track_id)}")
            object.__setattr__(self, "track_id", track_id)

    @classmethod
    def empty(cls) -> Faces:
        """No faces."""
        return cls(np.zeros((0, 4), np.int32))

    def __len__(self) -> int:
        return len(self.xyxy)

    @property
    def size_wh(self) -> np.ndarray:
        """Box widths and heights ``(n, 2)``."""
        return self.xyxy[:, 2:] - self.xyxy[:, :2]

    @property
    def class_id(self) -> np.ndarray:
        """Index of the most probable class ``(n,)``; needs ``probs``."""
        if self.probs is None:
            raise ValueError("faces are not classified yet")
        return self.probs.argmax(axis=1) if len(self) else np.zeros(0, np.int64)

    @property
    def labels(self) -> list[str]:
        """Name of the most probable class of each face; needs ``probs``."""
        return [self.class_names[i] for i in self.class_id]

    @property
    def confidence(self) -> np.ndarray:
        """Probability of the most probable class ``(n,)``; needs ``probs``."""
        if self.probs is None:
            raise ValueError("faces are not classified yet")
        return self.probs.max(axis=1) if len(self) else np.zeros(0, np.float32)

    def with_probs(self, probs: np.ndarray, class_names: tuple[str, ...]) -> Faces:
        """A copy with class probabilities."""
        return replace(self, probs=probs, class_names=class_names)

    def with_tracks(self, track_id: np.ndarray, probs: np.ndarray | None = None) -> Faces:
        """A copy with track ids (and, optionally, smoothed probabilities)."""
        return replace(self, track_id=track_id, probs=self.probs if probs is None else probs)

    def to_records(self) -> list[dict]:
        """JSON-ready dicts, one per face: ``box_xyxy``, ``label``, ``confidence``, ``probs``, ``track_id``.

        Strict JSON: a probability that is not finite is None (null), and so are that face's
        label and confidence.
        """
        out = []
        for i in range(len(self)):
            rec: dict = {"box_xyxy": self.xyxy[i].tolist()}
            if self.probs is not None:  # strict JSON: a value that is not finite is null, never a bare NaN
                row = self.probs[i].tolist()
                finite = all(map(math.isfinite, row))
                rec["label"] = self.class_names[int(np.argmax(row))] if finite else None
                rec["confidence"] = round(max(row), 4) if finite else None
                rec["probs"] = {n: round(p, 4) if math.isfinite(p) else None
                                for n, p in zip(self.class_names, row, strict=True)}
            rec["track_id"] = None if self.track_id is None else int(self.track_id[i])
            out.append(rec)
        return out


def clip_xyxy(xyxy: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Clip boxes to a frame of ``size_wh``; boxes wholly outside collapse to zero area."""
    w, h = size_wh
    out = np.asarray(xyxy, dtype=np.int64).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out.astype(np.int32)


def square_at_edges(xyxy: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Boxes clipped by the frame's edge made square again, past that edge: a box narrower than it
    is tall that touches the left (right) edge grows to the left (right), and likewise in height;
    one that touches both edges grows evenly. Other boxes are returned as they are.

    Returns:
        float64 ``(n, 4)`` boxes, which may reach outside the frame.
    """
    out = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4).copy()
    for lo, hi, limit, other in ((0, 2, size_wh[0], 1), (1, 3, size_wh[1], 0)):  # x, then y
        side = out[:, other + 2] - out[:, other]
        short = (out[:, hi] - out[:, lo]) < side
        at_lo, at_hi = out[:, lo] <= 0, out[:, hi] >= limit
        grow = side - (out[:, hi] - out[:, lo])
        both = short & at_lo & at_hi
        out[short & at_lo & ~at_hi, lo] -= grow[short & at_lo & ~at_hi]
        out[short & at_hi & ~at_lo, hi] += grow[short & at_hi & ~at_lo]
        out[both, lo] -= grow[both] / 2
        out[both, hi] += grow[both] / 2
    return out
