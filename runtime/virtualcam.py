"""``runtime-live --virtual-camera``: the annotated frames as a webcam that video-call apps can pick.

Through ``pyvirtualcam`` (the ``[virtualcam]`` extra), which needs a virtual-camera device:
v4l2loopback on Linux, OBS Studio's virtual camera on Windows and macOS. Without one, the run
stops before its first frame with one line saying what to install.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from runtime.cli_support import UserError

DEFAULT_FPS = 30.0  # the device's nominal rate when the source does not say (a camera often does not)
INSTALL = {
    "linux": "install v4l2loopback (sudo apt install v4l2loopback-dkms; sudo modprobe v4l2loopback "
             "exclusive_caps=1 card_label=emocam)",
    "win32": "install OBS Studio (28 or later) and start its virtual camera once",
    "darwin": "install OBS Studio (28 or later) and start its virtual camera once",
}
EXTRA_LINE = ('pyvirtualcam is not installed: the virtual camera needs the [virtualcam] extra: '
              'pip install "emocam[virtualcam]"')


def install_hint(platform: str | None = None) -> str:
    """What to install for a virtual-camera device on ``platform`` (``sys.platform`` by default)."""
    platform = platform or sys.platform
    return INSTALL.get(platform, INSTALL["linux"] if platform.startswith("linux") else INSTALL["win32"])


def check_available() -> None:
    """Fail early if ``pyvirtualcam`` is missing.

    Raises:
        UserError: It is not installed (the line names the extra).
    """
    try:
        import pyvirtualcam  # noqa: F401
    except ImportError:
        raise UserError(f"--virtual-camera: {EXTRA_LINE}") from None


def to_rgb(image: np.ndarray, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """A frame as the camera takes it: RGB, uint8, C-contiguous, ``size_wh`` (fitted inside, black borders).

    Args:
        image: BGR, BGRA or grayscale uint8.
        size_wh: The camera's size; None keeps the frame's.
    """
    if image.ndim == 2 or image.shape[2] == 1:
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    if size_wh is None or size_wh == (w, h):
        return np.ascontiguousarray(rgb)
    cw, ch = size_wh
    scale = min(cw / w, ch / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((ch, cw, 3), np.uint8)
    x, y = (cw - nw) // 2, (ch - nh) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return out


class VirtualCamera:
    """Sends frames to the virtual camera, opened at the first frame's size.

    A later frame of another size (a folder of photos) is fitted into the first's.

    Args:
        fps: The source's frame rate (0: :data:`DEFAULT_FPS`).
        opener: Makes the camera, ``opener(width, height, fps)`` (default: :func:`open_camera`).
    """

    def __init__(self, fps: float = 0.0, opener=None) -> None:
        self.fps = fps if 0 < fps <= 240 else DEFAULT_FPS
        self._opener = opener or open_camera
        self._camera = None
        self.size_wh: tuple[int, int] | None = None
        self.device: str | None = None
        self.frames = 0

    def send(self, image: np.ndarray) -> None:
        """Send one annotated frame (the first opens the camera).

        Raises:
            UserError: No virtual-camera device (what to install).
        """
        if self._camera is None:
            h, w = image.shape[:2]
            self._camera = self._opener(w, h, self.fps)
            self.size_wh = (w, h)
            self.device = getattr(self._camera, "device", None)
            print(f"runtime-live: virtual camera {self.device or ''} {w}x{h} at {self.fps:g} fps".replace("  ", " "),
                  file=sys.stderr)
        self._camera.send(to_rgb(image, self.size_wh))
        self.frames += 1

    def close(self) -> None:
        """Release the device."""
        if self._camera is not None:
            self._camera.close()
            self._camera = None


def open_camera(width: int, height: int, fps: float):  # -> pyvirtualcam.Camera
    """Open the virtual camera for RGB frames of ``width`` x ``height``.

    Raises:
        UserError: pyvirtualcam is missing, or there is no virtual-camera device (what to install).
    """
    check_available()
    import pyvirtualcam

    try:
        return pyvirtualcam.Camera(width=width, height=height, fps=fps, fmt=pyvirtualcam.PixelFormat.RGB)
    except RuntimeError as exc:
        text = str(exc).strip()
        reason = text.splitlines()[0].split(". ")[0].rstrip(".")[:160] if text else "none found"
        raise UserError(f"--virtual-camera: no virtual camera device ({reason}): {install_hint()}") from None
