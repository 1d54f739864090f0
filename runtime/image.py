"""Frame format helpers: any image to BGR or grayscale uint8, and image files read and written
through bytes this process controls.

OpenCV's own ``imread``/``imwrite`` take a ``str`` path and crash (a segfault, not an exception)
on a name that is not valid UTF-8; they also report nothing about why a file failed. Here files
are read with ``np.fromfile`` + ``cv2.imdecode`` and written with ``cv2.imencode`` + an OS write,
so every name works and every failure has its real cause.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import ImageError


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Any decoded image as uint8 pixels in 0-255, the input itself when it already is.

    16-bit images keep their top 8 bits; float images are taken as 0-1 when their largest finite
    value is at most 1 (as float TIFF and EXR are), else as 0-255; NaN becomes 0.
    """
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        finite = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        return np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    if img.dtype == np.bool_:
        return img.astype(np.uint8) * 255
    return np.clip(img, 0, 255).astype(np.uint8)  # other integer types


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """The frame as 3-channel BGR uint8 (the input itself when it already is)."""
    frame = to_uint8(frame)
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
    frame = to_uint8(frame)
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


def _truncation(data: bytes) -> str | None:
    """Why ``data`` is a cut-short JPEG or PNG (which OpenCV decodes silently, grey-filled), else None."""
    if data[:3] == b"\xff\xd8\xff":  # JPEG: the end-of-image marker must follow the last scan
        last_scan = data.rfind(b"\xff\xda")
        if data.rfind(b"\xff\xd9") < max(last_scan, 2):
            return "is truncated (the JPEG has no end marker): copy it again"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and data.rfind(b"IEND") < 0:
        return "is truncated (the PNG has no IEND chunk): copy it again"
    return None


#: Photos: any colour layout and bit depth, turned upright by their EXIF orientation (a phone's
#: portrait photo is stored sideways; ``IMREAD_UNCHANGED`` would leave it so, and faces unfound).
PHOTO_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH


def read_image(path: str | Path, flags: int = PHOTO_FLAGS) -> np.ndarray:
    """Read and decode an image file, whatever bytes its name is made of.

    Args:
        path: The file.
        flags: ``cv2.IMREAD_*`` flags (default: upright photo pixels, alpha dropped;
            ``cv2.IMREAD_UNCHANGED`` keeps alpha and ignores EXIF orientation).

    Returns:
        The decoded pixels as uint8 (see :func:`to_uint8`), gray or BGR(A) as stored.

    Raises:
        ImageError: The file cannot be read, is empty, truncated, or does not decode.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe or a device would block or never end
            raise ImageError("is not a regular file (a pipe, a device or a folder)")
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise ImageError("is empty")
    reason = _truncation(data)
    if reason:
        raise ImageError(reason)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:  # OpenCV refuses images past its pixel limit (a decompression bomb) by raising
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise ImageError("has more pixels than OpenCV decodes (2^30): shrink it") from None
        raise ImageError(f"does not decode as an image ({str(exc).strip().splitlines()[-1][:120]})") from None
    if img is None or img.size == 0:
        raise ImageError("does not decode as an image")
    return to_uint8(img)


def encode_image(img: np.ndarray, suffix: str) -> bytes:
    """Encode ``img`` in the format its file suffix names (``.jpg``, ``.png``, ...).

    Raises:
        ImageError: OpenCV has no encoder for ``suffix``, or it refused this image.
    """
    try:
        ok, buf = cv2.imencode(suffix, img)
    except cv2.error:
        ok, buf = False, None
    if not ok:
        h, w = img.shape[:2]
        raise ImageError(f"OpenCV cannot encode a {w}x{h} image as {suffix}")
    return buf.tobytes()
