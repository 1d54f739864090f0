"""runtime-live --virtual-camera: the frame conversion, the camera's life, and the error paths (no device here)."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.cli_support import UserError
from runtime.virtualcam import DEFAULT_FPS, VirtualCamera, check_available, install_hint, open_camera, to_rgb
from tests.conftest import ROOT
from tests.runtime.support import RUNTIME


def _loopback_device() -> bool:
    """True where a v4l2loopback device exists (then the no-device tests do not apply)."""
    return bool(glob.glob("/sys/devices/virtual/video4linux/video*"))


def test_bgr_becomes_rgb_of_the_same_size():
    bgr = np.zeros((36, 64, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # blue, green, red
    rgb = to_rgb(bgr)
    assert rgb.shape == (36, 64, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert rgb[0, 0].tolist() == [30, 20, 10]
    assert to_rgb(bgr, (64, 36)).tolist() == rgb.tolist()  # the camera's own size: no resizing


def test_gray_and_bgra_become_rgb():
    gray = np.full((10, 20), 77, np.uint8)
    assert to_rgb(gray).shape == (10, 20, 3) and (to_rgb(gray) == 77).all()
    bgra = np.zeros((10, 20, 4), np.uint8)
    bgra[..., :3] = (1, 2, 3)
    bgra[..., 3] = 9
    assert to_rgb(bgra).shape == (10, 20, 3) and to_rgb(bgra)[5, 5].tolist() == [3, 2, 1]


def test_another_size_is_fitted_inside_with_black_borders():
    tall = np.full((200, 100, 3), 255, np.uint8)  # a portrait photo into a 320x180 camera
    out = to_rgb(tall, (320, 180))
    assert out.shape == (180, 320, 3)
    assert (out[:, 115:205] == 255).all()  # 90 px wide in the middle
    assert (out[:, :110] == 0).all() and (out[:, 210:] == 0).all()
    wide = to_rgb(np.full((100, 400, 3), 200, np.uint8), (320, 180))
    assert wide.shape == (180, 320, 3) and (wide[50:130] == 200).all() and (wide[:45] == 0).all()


class _FakeCamera:
    def __init__(self, width: int, height: int, fps: float) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.frames: list[np.ndarray] = []
        self.closed = False
        self.device = "/dev/video9"

    def send(self, frame: np.ndarray) -> None:
        assert frame.shape == (self.height, self.width, 3) and frame.dtype == np.uint8
        self.frames.append(frame)

    def close(self) -> None:
        self.closed = True


def test_camera_opens_at_the_first_frame_and_sends_rgb(capsys):
    made: list[_FakeCamera] = []

    def opener(w: int, h: int, fps: float) -> _FakeCamera:
        made.append(_FakeCamera(w, h, fps))
        return made[-1]

    cam = VirtualCamera(0.0, opener)
    assert cam.fps == DEFAULT_FPS and not made  # nothing opened before a frame
    frame = np.zeros((90, 160, 3), np.uint8)
    frame[..., 2] = 255  # red in BGR
    cam.send(frame)
    cam.send(np.zeros((300, 300, 3), np.uint8))  # another size: fitted into the first
    assert len(made) == 1 and (made[0].width, made[0].height, made[0].fps) == (160, 90, DEFAULT_FPS)
    assert made[0].frames[0][0, 0].tolist() == [255, 0, 0] and cam.frames == 2
    assert "virtual camera /dev/video9 160x90 at 30 fps" in capsys.readouterr().err
    cam.close()
    assert made[0].closed
    assert VirtualCamera(23.976, opener).fps == 23.976


def test_install_hint_per_system():
    assert "v4l2loopback" in install_hint("linux")
    assert "OBS" in install_hint("win32") and "OBS" in install_hint("darwin")


def test_missing_pyvirtualcam_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r'pip install "emocam\[virtualcam\]"') as info:
        check_available()
    assert info.value.exit_code == 2


def test_no_device_says_what_to_install():
    pytest.importorskip("pyvirtualcam", reason="pyvirtualcam is not installed (the [virtualcam] extra)")
    if _loopback_device():
        pytest.skip("a v4l2loopback device exists here: there is no missing-device error to test")
    with pytest.raises(UserError, match="v4l2loopback") as info:
        open_camera(64, 48, 30)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_command_without_a_device_is_one_line_exit_2(video_path: Path, tmp_path: Path):
    pytest.importorskip("pyvirtualcam", reason="pyvirtualcam is not installed (the [virtualcam] extra)")
    if _loopback_device():
        pytest.skip("a v4l2loopback device exists here: there is no missing-device error to test")
    out = tmp_path / "o.jsonl"
    proc = subprocess.run([*RUNTIME, "--source", str(video_path), "--no-window", "--virtual-camera",
                           "--max-frames", "5", "--jsonl", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "v4l2loopback" in errors[0] and "modprobe" in errors[0]
    assert not out.exists() and proc.stdout == ""


def test_command_without_pyvirtualcam_is_one_line_exit_2(tmp_path: Path):
    code = ("import sys; sys.modules['pyvirtualcam'] = None; from runtime.console import runtime_live; "
            "sys.argv = ['runtime-live', '--source', 'demo', '--no-window', '--virtual-camera']; "
            "sys.exit(runtime_live())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and 'pip install "emocam[virtualcam]"' in lines[0], proc.stderr
