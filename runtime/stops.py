"""The signals that stop runtime-live cleanly, and the handler that leaves the frame loop between frames.

Every catchable signal whose default would kill the process stops the run with its outputs
finalised: Ctrl-C, kill, a closed terminal or SSH session, Ctrl-\\, the user signals, timers, a
CPU-time limit. A signal the process was started with ignored stays ignored: ``nohup`` ignores
SIGHUP so that the run outlives the terminal, and a script's ``cmd &`` ignores SIGINT so that
Ctrl-C at the terminal reaches the foreground job only (Python itself keeps that SIGINT ignored).
"""

from __future__ import annotations

import signal
from collections.abc import Callable

STOP_SIGNALS = tuple(getattr(signal, name) for name in (
    "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGXCPU",
) if hasattr(signal, name))


class Stop(BaseException):  # not an Exception: no "except Exception" on the way may swallow it
    """Raised by the signal handler to leave the frame loop cleanly."""


class StopSignals:
    """The stop signals' handler: leave the frame loop, but never inside a critical section.

    While ``hold`` is set (writing one frame's video frame and JSON line, or finalising the
    outputs) a signal is only recorded, so the video and the JSON Lines never disagree by a
    frame; :meth:`release` raises it once the section is done. The exception: a write to a pipe
    whose reader has stopped reading would never end, so a signal then stops the run at once
    (a line up to the pipe's atomic size, 4 KiB, is never torn: the write had not begun).
    """

    def __init__(self) -> None:
        self.hold = False
        self.received: str | None = None
        self.blocked: Callable[[], bool] = lambda: False  # True while a write may wait on a stalled reader
        self._previous: dict[int, object] = {}

    def __call__(self, signum: int, frame: object) -> None:
        self.received = signal.Signals(signum).name
        if not self.hold or self.blocked():
            raise Stop()

    def release(self) -> None:
        """End a critical section: raise :class:`Stop` if a signal came during it."""
        self.hold = False
        if self.received is not None:
            raise Stop()

    def install(self) -> None:
        """Handle every stop signal that is not ignored (see the module's note on ignored signals)."""
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                self._previous[sig] = signal.signal(sig, self)

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
