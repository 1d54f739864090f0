"""A progress bar for files of known length, on an interactive terminal only.

``[#########...........]  212/472 frames  45%  61.3 fps  4 s left`` on one line of stderr,
redrawn a few times a second and cleared when the run ends. Nothing is written when stderr is
not a terminal (piped, redirected, CI) or when the length is not known (a camera, a stream, a
pipe), so logs and pipelines never see it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 24  # characters of the bar itself
EVERY_S = 0.2  # shortest time between two redraws


def _left(seconds: float) -> str:
    """``seconds`` as ``42 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Frames done out of ``total``, frames per second and the time left.

    Args:
        total: Frames the run will process (None or 0: unknown, and no bar is shown).
        stream: Where the bar goes (stderr).
        enabled: Force the bar on or off (None: on when ``stream`` is a terminal).
    """

    def __init__(self, total: int | None, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError, OSError):
                enabled = False
        self.total = total or 0
        self.enabled = bool(enabled) and self.total > 0
        self.done = 0
        self._t0 = time.monotonic()
        self._last = 0.0
        self._shown = False

    def line(self, now: float | None = None) -> str:
        """The bar's text for the frames done so far."""
        elapsed = (time.monotonic() if now is None else now) - self._t0
        fraction = min(1.0, self.done / self.total) if self.total else 0.0
        fill = int(round(fraction * WIDTH))
        fps = self.done / elapsed if elapsed > 0 else 0.0
        left = f"  {_left((self.total - self.done) / fps)} left" if fps > 0 and self.done < self.total else ""
        return (f"[{'#' * fill}{'.' * (WIDTH - fill)}] {self.done:>{len(str(self.total))}}/{self.total} frames "
                f"{fraction:4.0%}  {fps:.1f} fps{left}")

    def update(self, done: int) -> None:
        """``done`` frames are processed: redraw the bar (at most every :data:`EVERY_S`)."""
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < EVERY_S and done < self.total:
            return
        self._last = now
        self.stream.write("\r\x1b[2K" + self.line(now))
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        """Clear the bar, so that the lines after it start on a clean line."""
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False
