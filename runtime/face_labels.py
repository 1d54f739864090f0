"""The labels file of ``runtime-eval``: labelled faces in full images, one CSV row per face.

Format (UTF-8 CSV, header required)::

    file,x1,y1,x2,y2,emotion
    multi_face.jpg,205,72,315,178,happy
    multi_face.jpg,435,215,524,305,
    WolfgangLanger_Pexels.mp4#45,345,60,548,325,sad
    no_face.mp4#23,,,,,

- ``file``: the image, relative to the images folder (``--media``; default: the labels file's
  folder). ``video.mp4#N`` names frame ``N`` (0-based, in decoding order) of a video, decoded in
  memory, so frames of a video are labelled without copying them anywhere.
- ``x1, y1, x2, y2``: the face's box in image pixels (``x2``, ``y2`` exclusive), inside the image,
  drawn from the hairline to the chin and from cheek to cheek, as a face detector frames it.
- ``emotion``: one of the model's labels (FER2013's seven: angry, disgust, fear, happy, sad,
  surprise, neutral), or empty when the expression is not clear: the face then counts for
  detection only.
- An image with no face has exactly one row, with the box and emotion empty.
- An optional last column ``source`` is a free note (the synthetic set names each face's
  FER2013 file there); it is not scored.

Only the images the labels name are scored; other files of the folder are ignored.
Standard library and numpy only.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.errors import DataError

COLUMNS = ("file", "x1", "y1", "x2", "y2", "emotion")
NOTE_COLUMN = "source"  # optional, free text, not scored
FRAME_MARK = "#"  # "video.mp4#120": frame 120 of video.mp4
FIX = "fix the labels file (format: file,x1,y1,x2,y2,emotion; see runtime-eval --help)"


@dataclass
class LabelledImage:
    """The labelled faces of one image (or one video frame).

    Attributes:
        name: The ``file`` field as written (``photo.jpg`` or ``video.mp4#120``).
        boxes: Face boxes ``(n, 4)`` float64, ``x1, y1, x2, y2``; ``(0, 4)`` for a face-free image.
        emotions: Each face's emotion, or None where it is not clear.
        line: The labels file line of the image's first row (for messages).
        notes: Each face's ``source`` note ("" without one).
    """

    name: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    emotions: list[str | None] = field(default_factory=list)
    line: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def face_free(self) -> bool:
        """True when the image is labelled as having no face."""
        return len(self.boxes) == 0

    @property
    def file(self) -> str:
        """The file the image comes from (the video, for a frame)."""
        return split_name(self.name)[0]

    @property
    def frame(self) -> int | None:
        """The frame number for a video frame, else None."""
        return split_name(self.name)[1]


def split_name(name: str) -> tuple[str, int | None]:
    """``"clip.mp4#12"`` -> ``("clip.mp4", 12)``; ``"photo.jpg"`` -> ``("photo.jpg", None)``."""
    head, mark, tail = name.rpartition(FRAME_MARK)
    if mark and head and tail.isdigit():
        return head, int(tail)
    return name, None


def _number(text: str, what: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"labels line {line}: {what} {text!r} is not a number: {FIX}")
    return value


def _box(row: list[str], line: int) -> list[float] | None:
    """The row's box, or None when all four fields are empty."""
    fields = [v.strip() for v in row[1:5]]
    if not any(fields):
        return None
    if not all(fields):
        raise DataError(f"labels line {line}: give all four of x1,y1,x2,y2, or none for an image with no face: {FIX}")
    x1, y1, x2, y2 = (_number(v, name, line) for v, name in zip(fields, COLUMNS[1:5], strict=True))
    if x2 <= x1 or y2 <= y1 or min(x1, y1) < 0:
        raise DataError(f"labels line {line}: box {x1:g},{y1:g},{x2:g},{y2:g} needs 0 <= x1 < x2 and 0 <= y1 < y2: "
                        f"{FIX}")
    return [x1, y1, x2, y2]


def _header(header: list[str] | None, path: Path) -> bool:
    """Check the header; True when it has the optional note column."""
    names = [h.strip().lower() for h in header or []]
    if names == list(COLUMNS):
        return False
    if names == [*COLUMNS, NOTE_COLUMN]:
        return True
    raise DataError(f"{path}: the first line must be the header {','.join(COLUMNS)} (optionally ,{NOTE_COLUMN}), "
                    f"got {','.join(names) or 'nothing'}: {FIX}")


def read_labels(path: Path, emotions: Sequence[str]) -> list[LabelledImage]:
    """Read and check a labels file.

    Args:
        path: The CSV file.
        emotions: The emotions a row may name (the model's labels).

    Returns:
        One :class:`LabelledImage` per image, in the order of their first row.

    Raises:
        DataError: The file is missing, not UTF-8 CSV, has no rows, or a row is malformed
            (the message gives the line and the fix).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"labels file {path} does not exist: give the CSV of labelled faces") from None
    except IsADirectoryError:
        raise DataError(f"labels file {path} is a folder: give the CSV file of labelled faces") from None
    except UnicodeDecodeError:
        raise DataError(f"labels file {path} is not UTF-8 text: save it as UTF-8 CSV") from None
    reader = csv.reader(text.splitlines())
    has_note = _header(next(reader, None), path)
    width = len(COLUMNS) + has_note
    images: dict[str, LabelledImage] = {}
    known = {e.lower(): e for e in emotions}
    for line, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != width:
            raise DataError(f"labels line {line}: {len(row)} fields, expected {width}: {FIX}")
        _add_row(images, row, line, known, has_note)
    if not images:
        raise DataError(f"labels file {path} has no rows: label at least one image")
    return list(images.values())


def _add_row(images: dict[str, LabelledImage], row: list[str], line: int, known: dict[str, str],
             has_note: bool) -> None:
    """Add one checked row to ``images`` (keyed by file name)."""
    name = row[0].strip()
    if not name:
        raise DataError(f"labels line {line}: the file field is empty: {FIX}")
    box = _box(row, line)
    emotion = row[5].strip()
    if emotion and emotion.lower() not in known:
        raise DataError(f"labels line {line}: emotion {emotion!r} is not one of {', '.join(known.values())} "
                        f"(leave it empty when unclear): {FIX}")
    if box is None and emotion:
        raise DataError(f"labels line {line}: an emotion without a box: give the face's box: {FIX}")
    image = images.get(name)
    if image is None:
        image = images[name] = LabelledImage(name, line=line)
    elif image.face_free or box is None:
        raise DataError(f"labels line {line}: {name} is labelled both with and without faces (line {image.line}): "
                        f"an image with no face has one row with an empty box: {FIX}")
    if box is not None:
        image.boxes = np.vstack([image.boxes, box])
        image.emotions.append(known[emotion.lower()] if emotion else None)
        image.notes.append(row[6].strip() if has_note else "")


def write_labels(path: Path, rows: Sequence[Sequence[object]], note: bool = False) -> None:
    """Write rows (``file, x1, y1, x2, y2, emotion[, source]``) as a labels file, atomically.

    Args:
        path: Destination.
        rows: The rows; a face-free image's box and emotion are empty strings.
        note: Whether the rows carry the ``source`` column.
    """
    from runtime.cli_support import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*COLUMNS, NOTE_COLUMN] if note else COLUMNS)
        writer.writerows(rows)
