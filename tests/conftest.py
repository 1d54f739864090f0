"""Shared fixtures: real data from ../shared, found relative to the project root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FER = SHARED / "fer2013"
MEDIA = SHARED / "media"
VIDEO = MEDIA / "WolfgangLanger_Pexels.mp4"


def _need(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must have ../shared beside the project")
        pytest.skip(f"{path} is missing (real test data lives in ../shared beside the project)")
    return path


@pytest.fixture(scope="session")
def fer_dir() -> Path:
    """The real FER2013 folder (train/, test/)."""
    return _need(FER)


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """Real photos and video with faces."""
    return _need(MEDIA)


@pytest.fixture(scope="session")
def video_path() -> Path:
    """472 real frames, 640x360, one face in 471."""
    return _need(VIDEO)


@pytest.fixture(scope="session")
def video_frames(video_path: Path) -> tuple:
    """Every frame of the real clip (472 BGR frames, 640x360), decoded once for the whole session.

    The frames are read-only: a test that annotates one (in place) must copy it first.
    """
    import cv2

    cap = cv2.VideoCapture(str(video_path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frame.setflags(write=False)
            frames.append(frame)
    finally:
        cap.release()
    assert len(frames) == 472, f"{video_path} decoded to {len(frames)} frames"
    return tuple(frames)


def foreground_signals() -> None:
    """``preexec_fn`` for a child that a test stops with a signal: SIGINT, SIGQUIT and SIGHUP at their
    defaults, as a job started in the foreground of a terminal has them.

    A script's ``python -m pytest &`` starts pytest with SIGINT and SIGQUIT ignored, and ``nohup``
    ignores SIGHUP; a child inherits that, and the runtime, as Python and shell tools do, keeps an
    ignored signal ignored.
    """
    import signal

    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def run_cli(*args: str, timeout: float = 300, env: dict | None = None, cwd: Path | None = None,
            ) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` and capture text output."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd or ROOT)


def assert_user_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """Exit ``code``, one line on stderr naming the problem, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err[-2000:]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


@pytest.fixture(scope="session")
def tiny_run(fer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder from trainer-fit: 2 epochs on 25 real faces per class (175 train+val, 175 test)."""
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    proc = run_cli("trainer", "--data", str(fer_dir), "--out", str(out), "--epochs", "2",
                   "--limit-per-class", "25", "--batch-size", "32", "--seed", "7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def public_test_sample(fer_dir: Path, count: int, seed: int) -> tuple:
    """``count`` real PublicTest faces picked with ``seed``: float32 raw pixels (N, 48, 48, 1) and label indices."""
    import cv2
    import numpy as np

    from runtime.contract import FER2013_LABELS

    files = sorted((fer_dir / "test").glob("*/*.jpg"))
    pick = np.random.default_rng(seed).choice(len(files), count, replace=False)
    x = np.stack([cv2.imread(str(files[i]), cv2.IMREAD_GRAYSCALE) for i in pick])[..., None].astype(np.float32)
    y = np.array([FER2013_LABELS.index(files[i].parent.name) for i in pick])
    return x, y
