"""Frame format helpers: any 2-D, 1-, 3- or 4-channel uint8 frame to BGR or grayscale."""

from __future__ import annotations

import cv2
import numpy as np


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """The frame as 3-channel BGR uint8 (the input itself when it already is)."""
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    channels = frame.shape[2]
    if channels == 3:
        return frame
    if channels == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if channels == 1:
        return cv2.cvtColor(frame[..., 0], cv2.COLOR_GRAY2BGR)
    raise ValueError(f"frames must have 1, 3 or 4 channels, got {channels}")


def to_gray(frame: np.ndarray) -> np.ndarray:
    """The frame as 2-D grayscale uint8."""
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        return frame
    channels = frame.shape[2]
    if channels == 1:
        return frame[..., 0]
    if channels == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if channels == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"frames must have 1, 3 or 4 channels, got {channels}")
