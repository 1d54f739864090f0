"""Whether this machine can show a window and has a camera (runtime-live's ``auto`` source)."""

from __future__ import annotations

import os
import sys


def display_problem() -> str | None:
    """Why OpenCV could not open a window here, or None when it can (as far as can be told).

    On Linux OpenCV's window talks to an X server (Qt's xcb); one it cannot reach makes Qt abort
    the whole process, so the server is tried first: its Unix socket, or TCP for ``host:N``.
    """
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return "DISPLAY is not set"
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdecimal():
        return f"DISPLAY={display} is not a display name like :0"
    import socket
    import struct

    if host in ("", "unix"):
        targets = [(socket.AF_UNIX, f"/tmp/.X11-unix/X{number}"), (socket.AF_UNIX, f"\0/tmp/.X11-unix/X{number}")]
    else:
        targets = [(socket.AF_INET, (host, 6000 + int(number)))]
    for family, address in targets:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            try:  # the X11 connection set-up: an X server answers 0 (failed), 1 (success) or 2 (authenticate)
                sock.connect(address)
                sock.sendall(struct.pack("<cxHHHHxx", b"l", 11, 0, 0, 0))
                if sock.recv(1)[:1] in (b"\x00", b"\x01", b"\x02"):
                    return None
            except OSError:
                continue
    return f"no X server answers on DISPLAY={display}"


def camera_present(index: int = 0) -> bool:
    """True when OpenCV opens camera ``index``."""
    import cv2

    cap = cv2.VideoCapture(index)
    try:
        return cap.isOpened()
    finally:
        cap.release()
