"""``--timeline``: the emotions of each face over time, and the share of time in each emotion, as a chart.

One band per track (the longest first, up to :data:`MAX_TRACKS`; a track seen in under 2 % of
the frames, a passing false detection, is counted in the "all faces" bar only): the seven
probabilities stacked, so the dominant emotion is the widest colour at every moment; gaps where
the face was not seen. Below, one bar per track (and one for all faces): the share of its frames
whose label (the most probable emotion, as the run's other outputs name it) was each one. Needs
matplotlib, the ``[plot]`` extra.

The chart is drawn when the run ends and written like every output: a temporary file renamed
onto the destination, or straight into a stream.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.errors import OutputError
from runtime.files import display
from runtime.lines import write_bytes

MAX_TRACKS = 6  # bands drawn; shorter tracks are counted in the "all faces" bar only
MIN_SHARE = 0.02  # a track seen in fewer of the frames (a passing false detection) gets no band of its own
SUFFIXES = (".png", ".svg", ".pdf")  # what matplotlib writes from the suffix
COLOURS = {"angry": "#d62728", "disgust": "#7f9a2c", "fear": "#9467bd", "happy": "#f2b701", "neutral": "#a6a6a6",
           "sad": "#1f77b4", "surprise": "#ff7f0e"}  # FER2013's classes; other labels take matplotlib's cycle
PLOT_FIX = 'pip install "emocam[plot]"'


def plot_available() -> bool:
    """True when matplotlib (the ``[plot]`` extra) is installed."""
    try:
        import matplotlib  # noqa: F401 - imported to know it works, not only that it is there
    except ImportError:
        return False
    return True


class Timeline:
    """Collects each face's probabilities frame by frame; :meth:`close` draws and writes the chart.

    Args:
        path: The chart's file (``.png``, ``.svg`` or ``.pdf``), or a stream.
        labels: The model's class names, in its output order.
        x_label: What the frames' time stamps are (``time (s)`` for a video, ``photo`` for photos).
    """

    def __init__(self, path: Path, labels: Sequence[str], x_label: str = "time (s)") -> None:
        self.path = path
        self.labels = tuple(labels)
        self.x_label = x_label
        self.frames = 0
        self._times: list[float] = []  # one entry per face seen: the frame's time stamp,
        self._tracks: list[int] = []  # its track (-1 without a tracker),
        self._probs: list[np.ndarray] = []  # its probabilities (float32, NaN where unknown),
        self._labels: list[int] = []  # and its label's index (-1 where unknown)
        self._frame_times: list[float] = []

    def write(self, record: dict) -> None:
        """Add one frame's record (as runtime-live writes to ``--jsonl``)."""
        self.frames += 1
        t = float(record["timestamp_s"])
        self._frame_times.append(t)
        for face in record.get("faces", []):
            probs = face.get("probs") or {}
            row = [probs.get(n) for n in self.labels]
            self._times.append(t)
            track = face.get("track_id")
            self._tracks.append(-1 if track is None else int(track))
            self._probs.append(np.array([math.nan if v is None else v for v in row], np.float32))
            self._labels.append(self._label_index(face.get("label"), self._probs[-1]))

    def _label_index(self, label: str | None, probs: np.ndarray) -> int:
        """The face's label as an index: the record's own label (decided on the unrounded
        probabilities, so it stands where two classes tie once rounded), else the most probable
        class, else -1."""
        if label in self.labels:
            return self.labels.index(label)
        return int(probs.argmax()) if np.isfinite(probs).all() else -1

    def shares(self) -> dict[str, float]:
        """The share of all face-frames with each label (sums to 1 with faces)."""
        share = self._share(np.array(self._labels, np.int64))
        return {n: float(v) for n, v in zip(self.labels, share, strict=True)}

    def _share(self, labels: np.ndarray) -> np.ndarray:
        """Each class's share of the known ``labels`` (indices; -1 is unknown); zeros without any."""
        known = labels[labels >= 0]
        if not len(known):
            return np.zeros(len(self.labels))
        return np.bincount(known, minlength=len(self.labels)) / len(known)

    def render(self) -> bytes:
        """The chart, encoded in the format of the path's suffix."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        from matplotlib.figure import Figure

        times = np.array(self._times, np.float64)
        tracks = np.array(self._tracks, np.int64)
        probs = np.array(self._probs, np.float32).reshape(-1, len(self.labels))
        ids, counts = np.unique(tracks, return_counts=True)
        order = [int(i) for i in ids[np.argsort(-counts, kind="stable")]]
        long_enough = max(3, MIN_SHARE * self.frames)
        shown = [t for t, n in zip(ids, counts, strict=True) if n >= long_enough]
        shown = [t for t in order if t in shown][:MAX_TRACKS] or order[:1]
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        colours = [COLOURS.get(n, cycle[i % len(cycle)]) for i, n in enumerate(self.labels)]
        bands = max(1, len(shown))
        fig = Figure(figsize=(11, 1.6 * bands + 2.6), dpi=110, layout="constrained")
        grid = fig.add_gridspec(bands + 1, 1, height_ratios=[1.6] * bands + [max(1.2, 0.32 * (len(shown) + 1))])
        frame_step = float(np.median(np.diff(self._frame_times))) if len(self._frame_times) > 1 else 1.0
        end = max(self._frame_times, default=0.0) + frame_step
        for row, track in enumerate(shown):
            ax = fig.add_subplot(grid[row])
            sel = tracks == track
            self._band(ax, times[sel], probs[sel], frame_step, colours)
            ax.set_xlim(0, end)
            name = "faces" if track < 0 else f"track {track}"
            ax.set_ylabel(f"{name}\n({sel.sum()} frames)", fontsize=9)
            ax.set_yticks([0, 0.5, 1])
            ax.tick_params(labelsize=8, labelbottom=row == len(shown) - 1)
        if not shown:
            ax = fig.add_subplot(grid[0])
            ax.text(0.5, 0.5, f"no face found in {self.frames} frames", ha="center", va="center", fontsize=12)
            ax.set_axis_off()
        else:
            ax.set_xlabel(self.x_label)
        self._shares_panel(fig.add_subplot(grid[bands]), tracks, shown, colours)
        more = len(order) - len(shown)
        title = f"emotions over time: {self.frames} frames, {len(times)} face detections"
        note = f" ({more} short track{'s' if more > 1 else ''} counted in all faces only)" if more > 0 else ""
        fig.suptitle(title + note, fontsize=11)
        handles = [matplotlib.patches.Patch(color=c, label=n) for n, c in zip(self.labels, colours, strict=True)]
        fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
        buffer = io.BytesIO()
        fig.savefig(buffer, format=self.path.suffix.lower().lstrip(".") or "png")
        return buffer.getvalue()

    def _band(self, ax, times: np.ndarray, probs: np.ndarray, step: float, colours: list[str]) -> None:
        """One track's probabilities, stacked, with a gap wherever the track was not seen."""
        gaps = np.flatnonzero(np.diff(times) > 1.5 * step) + 1
        for start, stop in zip(np.r_[0, gaps], np.r_[gaps, len(times)], strict=True):
            t = times[start:stop]
            p = np.nan_to_num(probs[start:stop])
            if len(t) == 1:  # a single frame: as wide as one frame
                t, p = np.r_[t, t + step], np.repeat(p, 2, axis=0)
            ax.stackplot(t, p.T, colors=colours, linewidth=0)
        ax.set_ylim(0, 1)

    def _shares_panel(self, ax, tracks: np.ndarray, shown: list[int], colours: list[str]) -> None:
        """One bar per drawn track and one for all faces: the share of frames with each label."""
        rows = [("all faces", np.ones(len(tracks), bool))] + [
            ("faces" if t < 0 else f"track {t}", tracks == t) for t in shown]
        labels = np.array(self._labels, np.int64)
        for y, (_, sel) in enumerate(rows):
            share = self._share(labels[sel])
            if not share.any():
                continue
            left = 0.0
            for value, colour, label in zip(share, colours, self.labels, strict=True):
                if value > 0:
                    ax.barh(y, value, left=left, color=colour, height=0.7)
                    if value >= 0.08:
                        ax.text(left + value / 2, y, f"{label} {value:.0%}", ha="center", va="center", fontsize=8)
                left += value
        ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
        ax.set_title("share of time in each emotion", fontsize=10)

    def close(self) -> bool:
        """Draw and write the chart. True when it was written (at least one frame came).

        Raises:
            OutputError: matplotlib failed, or the write failed (the destination is as it was).
        """
        if not self.frames:
            return False
        try:
            data = self.render()
        except (ValueError, RuntimeError, MemoryError) as exc:
            raise OutputError(f"could not draw {display(self.path)}: {str(exc).strip()[:160]}") from None
        write_bytes(self.path, data)
        return True

    def discard(self) -> None:
        """Forget what was collected (nothing is on disk before :meth:`close`)."""
        self._times, self._tracks, self._probs, self._labels, self._frame_times = [], [], [], [], []
        self.frames = 0
