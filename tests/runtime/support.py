"""What the reliability tests share: runtime-live as a subprocess, file listings and digests, decoded frame counts."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import cv2

RUNTIME = [sys.executable, "-m", "runtime"]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    """Every name in ``folder`` (hidden temporary files included), as printable text."""
    return sorted(os.fsdecode(name) for name in os.listdir(os.fsencode(folder)))


def frames_in(path: Path | bytes) -> int:
    """Frames that decode from a video file (any name: read through /proc/self/fd)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        cap = cv2.VideoCapture(f"/proc/self/fd/{fd}")
        n = 0
        while cap.grab():
            n += 1
        cap.release()
    finally:
        os.close(fd)
    return n


def shell(script: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a bash script with ``runtime-live`` meaning this interpreter's ``python -m runtime``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    # exported: the scripts run it in child shells too (unshare -m bash -c ...), whatever PATH holds
    prelude = f'runtime-live() {{ "{sys.executable}" -m runtime "$@"; }}\nexport -f runtime-live\n'
    return subprocess.run(["bash", "-c", prelude + script], capture_output=True, cwd=cwd, env=env, timeout=timeout)
