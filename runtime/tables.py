"""``--csv``: one row per face per frame, for pandas, R or a spreadsheet, with no options needed.

The columns: ``frame``, ``timestamp_s``, ``file`` (the photo or video a frame came from, for a
folder; empty otherwise), ``track_id``, the box ``x1, y1, x2, y2`` (pixels, ``x2``/``y2``
exclusive), ``label``, ``confidence``, then one ``prob_<label>`` column per class of the model.
A value that is not known (no tracker, a probability that is not finite) is an empty field, which
pandas reads as NaN. Frames without a face have no row.

Written like the JSON Lines: a temporary file renamed into place at the end, or straight into a
stream (``/dev/stdout``, a pipe); a frame's rows are written whole or not at all.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from runtime.lines import LineWriter

BOX = ("x1", "y1", "x2", "y2")


def columns(labels: Sequence[str]) -> list[str]:
    """The CSV's header for a model with class names ``labels``."""
    return ["frame", "timestamp_s", "file", "track_id", *BOX, "label", "confidence", *(f"prob_{n}" for n in labels)]


def _number(value: float | None, digits: int = 4) -> str:
    """A number as CSV text: rounded, and empty when it is missing or not finite."""
    if value is None or not math.isfinite(value):
        return ""
    return str(round(value, digits))


def rows(record: dict, labels: Sequence[str]) -> list[list[str]]:
    """The CSV rows of one frame's record (as runtime-live writes to ``--jsonl``): one per face."""
    out = []
    for face in record.get("faces", []):
        probs = face.get("probs") or {}
        track = face.get("track_id")
        out.append([
            str(record["frame"]), _number(float(record["timestamp_s"])), record.get("file", ""),
            "" if track is None else str(track), *(str(int(v)) for v in face["box_xyxy"]),
            face.get("label") or "", _number(face.get("confidence")), *(_number(probs.get(n)) for n in labels),
        ])
    return out


class CsvWriter(LineWriter):
    """One row per face per frame (see :mod:`runtime.tables`); the header comes with the first frame.

    Every frame is given, faces or not, so that a run whose frames had no face still writes the
    header (an empty table, not a missing file).

    Args:
        path: Destination file, or a stream.
        labels: The model's class names, in its output order (one probability column each).
    """

    def __init__(self, path: Path, labels: Sequence[str]) -> None:
        super().__init__(path)
        self.labels = tuple(labels)
        self.header = self._lines([columns(self.labels)])

    @staticmethod
    def _lines(table: list[list[str]]) -> bytes:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(table)
        return text.getvalue().encode("utf-8")

    def encode(self, record: dict) -> bytes:
        return self._lines(rows(record, self.labels))
