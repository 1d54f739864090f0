"""What runtime-live shows besides its files: the web view (``--serve``) and the virtual camera
(``--virtual-camera``), hooked onto the run's outputs.

:func:`with_views` wraps the run's :class:`runtime.outputs.Outputs`: each frame written is also
published to the web view and sent to the virtual camera, and closing (or discarding) the outputs
at the end of the run, at end of file, on a stop signal or after a failure, shuts them down. While
either is on, a file source plays at its native frame rate (:class:`Pacer`).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

DEFAULT_HOST = "127.0.0.1"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MAX_WAIT_S = 1.0  # the longest a frame is held back (a misread rate must not freeze the run)
BEHIND_S = 0.25  # this far behind, playback starts again from the current frame (never a burst to catch up)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1), ``[::1]:PORT`` for IPv6.

    Raises:
        ValueError: Not an address with a port in 0-65535 (0: any free port).
    """
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets: [::1]:8080")
    if not port.isascii() or not port.isdecimal() or not 0 <= int(port) <= 65535:
        raise ValueError("the port must be a number in 0-65535, 0 for any free one")
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError("the host must be a name or an address")
    return host or DEFAULT_HOST, int(port)


def address_arg(text: str) -> tuple[str, int]:
    """An argparse ``type`` for ``--serve``: :func:`parse_address`, its error as one line."""
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT ({exc}): give e.g. 127.0.0.1:8080 or :8080, "
                                         "or 0.0.0.0:8080 to share it on the network") from None


def is_loopback(host: str) -> bool:
    """True for an address (or ``localhost``) only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_views(args: argparse.Namespace) -> None:
    """Fail early, with the fix: an address that cannot be listened on, or no pyvirtualcam.

    Raises:
        UserError: See :func:`runtime.serve.check_address` and :func:`runtime.virtualcam.check_available`.
    """
    if getattr(args, "serve", None) is not None:
        from runtime.serve import check_address

        check_address(args.serve)
    if getattr(args, "virtual_camera", False):
        from runtime.virtualcam import check_available

        check_available()


class Pacer:
    """Holds a file's frames to its native frame rate (live sources are real-time already).

    Args:
        clock: Seconds, monotonic.
        sleep: Waits a number of seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._clock, self._sleep = clock, sleep
        self._origin: float | None = None  # clock time of media time 0 of the current file
        self._key: object = None
        self._last_s = -1.0

    def wait(self, frame) -> float:
        """Wait until ``frame`` (a :class:`runtime.sources.Frame`) is due; returns the seconds waited."""
        if frame.fps <= 0:  # a photo, a camera, a stream: nothing to hold to
            return 0.0
        now, t = self._clock(), frame.timestamp_s
        key = (frame.path, frame.name)
        if self._origin is None or key != self._key or t < self._last_s:  # the first frame of a file
            self._origin, self._key = now - t, key
        self._last_s = t
        delay = self._origin + t - now
        if delay < -BEHIND_S:  # a slow stretch: play on from here
            self._origin = now - t
            return 0.0
        if delay <= 0:
            return 0.0
        delay = min(delay, MAX_WAIT_S)
        self._sleep(delay)
        return delay


class Views:
    """The web view and the virtual camera of one run.

    Args:
        web: The started web view, or None.
        camera: The virtual camera, or None.
        pacer: Holds file sources to their native rate (None: as fast as they go).
    """

    def __init__(self, web=None, camera=None, pacer: Pacer | None = None) -> None:
        self.web, self.camera, self.pacer = web, camera, pacer

    def show(self, image: np.ndarray, record: dict, frame=None) -> None:
        """One annotated frame (never modified afterwards) and its record."""
        if self.web is not None:
            self.web.hub.publish(image, record)
        if self.camera is not None:
            self.camera.send(image)

    def close(self) -> None:
        """Stop serving and release the camera (each is tried, the first failure raised)."""
        try:
            if self.web is not None:
                self.web.close()
        finally:
            if self.camera is not None:
                self.camera.close()


class ViewedOutputs:
    """The run's outputs, plus the views: what is written is also shown; closing closes both.

    Everything else (``written``, ``waiting_on_reader``) is the wrapped outputs'.
    """

    def __init__(self, outputs, views: Views) -> None:
        self._outputs = outputs
        self.views = views

    def __getattr__(self, name: str):
        return getattr(self._outputs, name)

    def write(self, image: np.ndarray, record: dict, frame=None) -> None:
        """Wait for the frame's time (file sources), write it, then show it."""
        if self.views.pacer is not None and frame is not None:
            self.views.pacer.wait(frame)
        self._outputs.write(image, record, frame)
        self.views.show(image, record, frame)

    def close(self) -> None:
        try:
            self._outputs.close()
        finally:
            self.views.close()

    def discard(self) -> None:
        try:
            self._outputs.discard()
        finally:
            self.views.close()


def with_views(args: argparse.Namespace, source, pipe, outputs):
    """``outputs``, showing each frame on the web view and the virtual camera when asked (else as is).

    Args:
        args: ``serve`` (``(host, port)`` or None), ``virtual_camera``, ``emoji_dir``.
        source: The opened :class:`runtime.sources.FrameSource`.
        pipe: The :class:`runtime.pipeline.Pipeline` (its labels).
        outputs: The run's :class:`runtime.outputs.Outputs`.

    Raises:
        UserError: The address cannot be listened on (``outputs`` are discarded first).
    """
    serve, camera = getattr(args, "serve", None), getattr(args, "virtual_camera", False)
    if serve is None and not camera:
        return outputs
    web = None
    try:
        if serve is not None:
            from runtime.annotate import default_emoji_dir
            from runtime.serve import FrameHub, WebView

            hub = FrameHub(tuple(pipe.classifier.labels), source.description)
            emoji_dir = Path(args.emoji_dir) if args.emoji_dir is not None else default_emoji_dir()
            web = WebView(hub, serve, emoji_dir)
            web.start()
            print(web.banner(), file=sys.stderr, flush=True)
        cam = None
        if camera:
            from runtime.virtualcam import VirtualCamera

            cam = VirtualCamera(source.fps)
    except BaseException:
        if web is not None:
            web.close()
        outputs.discard()
        raise
    return ViewedOutputs(outputs, Views(web, cam, Pacer()))
