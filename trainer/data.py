"""FER2013 readers: the Kaggle folder layout and the original ``fer2013.csv``.

Both map to ONE label order, :data:`runtime.contract.FER2013_LABELS`. Images come back as
``uint8`` arrays of shape ``(N, 48, 48, 1)`` holding raw pixels; labels as ``int64`` indices.
:func:`sample_faces` is the one stratified sample of real faces that export-onnx (verification,
calibration) and benchmark (model runs) use. Errors are :class:`runtime.errors.DataError`.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from runtime.cli_support import os_error_text
from runtime.contract import FER2013_CSV_LABELS, FER2013_LABELS, csv_to_canonical
from runtime.errors import DataError, ImageError
from runtime.image import read_image, to_gray
from runtime.sources import IMAGE_SUFFIXES  # what a class folder may hold: every image OpenCV decodes

CSV_COLUMNS = ("emotion", "pixels", "Usage")  # header of the original fer2013.csv
#: Split names of the folder layout and the CSV's ``Usage`` values they correspond to.
CSV_SPLITS = {"train": "Training", "test": "PublicTest", "private": "PrivateTest"}


@dataclass(frozen=True)
class Split:
    """One split of a data set.

    Attributes:
        x: Raw pixels, ``uint8`` ``(N, H, W, 1)``.
        y: Class indices into ``labels``, ``int64`` ``(N,)``.
        labels: Class names in index order.
        source: Where it was read from.
        skipped: Files that could not be decoded and were skipped.
    """

    x: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...]
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.y)

    def counts(self) -> dict[str, int]:
        """Number of faces per class."""
        return {name: int((self.y == i).sum()) for i, name in enumerate(self.labels)}

    def take(self, index: np.ndarray) -> Split:
        """A subset by index."""
        return Split(self.x[index], self.y[index], self.labels, self.source, 0)


def _read_gray(path: Path, size_hw: tuple[int, int]) -> np.ndarray | None:
    """One face as grayscale pixels of ``size_hw``, or None when the file cannot be used.

    Reads through :func:`runtime.image.read_image` (bytes + ``imdecode``): any file name works,
    including one that is not valid UTF-8, and a truncated JPEG or PNG counts as unreadable.
    """
    try:
        img = read_image(path, cv2.IMREAD_GRAYSCALE)
    except ImageError:
        return None
    if img.ndim != 2:
        img = to_gray(img)
    if img.shape != size_hw:
        img = cv2.resize(img, size_hw[::-1], interpolation=cv2.INTER_AREA)
    return img


def load_folder_split(
    folder: Path,
    labels: tuple[str, ...] = FER2013_LABELS,
    size_hw: tuple[int, int] = (48, 48),
    limit_per_class: int | None = None,
    seed: int = 0,
) -> Split:
    """Read ``folder/<class>/*.jpg``.

    Args:
        folder: A split folder such as ``fer2013/train``.
        labels: The expected class folders, in output order.
        size_hw: Images of another size are resized to this.
        limit_per_class: Read at most this many images per class (a seeded random sample).
        seed: Seed of that sample.

    Raises:
        DataError: The folder is missing, a class folder is missing or extra, or it has no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist: give the FER2013 folder with train/ and test/")
    try:
        return _read_folder(folder, labels, size_hw, limit_per_class, seed)
    except OSError as exc:  # a class folder that cannot be listed
        raise DataError(f"cannot read {folder}: {os_error_text(exc)}: check its permissions") from None


def _read_folder(
    folder: Path, labels: tuple[str, ...], size_hw: tuple[int, int], limit_per_class: int | None, seed: int
) -> Split:
    """The body of :func:`load_folder_split`, once ``folder`` is known to exist."""
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    missing = [c for c in labels if c not in found]
    extra = [c for c in found if c not in labels]
    if missing:
        raise DataError(f"{folder} lacks class folder(s) {missing}: expected exactly {list(labels)}")
    if extra:
        raise DataError(f"{folder} has unexpected class folder(s) {extra}: expected exactly {list(labels)}")
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    ys: list[int] = []
    for idx, name in enumerate(labels):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if limit_per_class is not None and len(files) > limit_per_class:
            files = [files[i] for i in sorted(rng.choice(len(files), limit_per_class, replace=False))]
        paths += files
        ys += [idx] * len(files)
    if not paths:
        raise DataError(f"{folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
    with ThreadPoolExecutor(max_workers=8) as pool:
        images = list(pool.map(lambda p: _read_gray(p, size_hw), paths, chunksize=256))
    ok = [i for i, img in enumerate(images) if img is not None]
    skipped = len(paths) - len(ok)
    if skipped:
        bad = [str(paths[i]) for i, img in enumerate(images) if img is None][:3]
        print(f"warning: skipped {skipped} unreadable image(s) in {folder}, e.g. {bad}", file=sys.stderr)
    if not ok:
        raise DataError(f"{folder} has no readable images: all {len(paths)} failed to decode")
    x = np.stack([images[i] for i in ok])[..., None]
    y = np.asarray([ys[i] for i in ok], dtype=np.int64)
    return Split(x, y, tuple(labels), str(folder), skipped)


def load_csv_split(path: Path, split: str, size_hw: tuple[int, int] = (48, 48), limit: int | None = None) -> Split:
    """Read one split of the original ``fer2013.csv`` and map its labels to the canonical order.

    Args:
        path: The CSV file (columns ``emotion,pixels,Usage``).
        split: ``train``, ``test`` or ``private`` (``Training``, ``PublicTest``, ``PrivateTest``).
        size_hw: The image size the pixel strings encode.
        limit: Read at most this many rows of the split.

    Raises:
        DataError: The file is missing, has a wrong header, malformed rows, or no rows of the split.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"CSV {path} is a folder: give the path of fer2013.csv, or the FER2013 folder itself")
    if not path.is_file():
        raise DataError(f"CSV {path} does not exist: give the path of fer2013.csv")
    usage = CSV_SPLITS[split]
    n_pixels = size_hw[0] * size_hw[1]
    remap = [csv_to_canonical(i) for i in range(len(FER2013_CSV_LABELS))]
    xs: list[np.ndarray] = []
    ys: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for label, pixels in _csv_rows(fh, path, usage, n_pixels):
                xs.append(pixels.astype(np.uint8).reshape(size_hw))
                ys.append(remap[label])
                if limit is not None and len(ys) >= limit:
                    break
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not a UTF-8 text CSV (byte 0x{exc.object[exc.start]:02x} near offset {exc.start} "
            "of a read block): give the original fer2013.csv"
        ) from None
    except csv.Error as exc:
        raise DataError(f"{path} is not a readable CSV ({exc}): give the original fer2013.csv") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {os_error_text(exc)}") from None
    if not ys:
        raise DataError(f"{path} has no rows with Usage={usage}")
    return Split(np.stack(xs)[..., None], np.asarray(ys, dtype=np.int64), FER2013_LABELS, f"{path}:{usage}")


def _csv_rows(fh: TextIO, path: Path, usage: str, n_pixels: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(emotion, pixels)`` of the rows of one split, checking each.

    Raises:
        DataError: A wrong header or a malformed row.
    """
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != CSV_COLUMNS:
        shown = str(header)[:120]
        raise DataError(f"{path} has header {shown}, expected {','.join(CSV_COLUMNS)} (the original fer2013.csv)")
    for line_no, row in enumerate(reader, start=2):
        if len(row) != 3 or row[2].strip() != usage:
            continue
        try:
            label = int(row[0])
            pixels = np.array(row[1].split(), dtype=np.int64)
        except ValueError:
            raise DataError(
                f"{path}:{line_no} is malformed: emotion must be an int, pixels space-separated 0-255"
            ) from None
        bad_pixels = pixels.size != n_pixels or pixels.min() < 0 or pixels.max() > 255
        if not 0 <= label < len(FER2013_CSV_LABELS) or bad_pixels:
            raise DataError(
                f"{path}:{line_no} has emotion {label} or {pixels.size} pixels: expected 0-6 and {n_pixels}"
            )
        yield label, pixels


def sample_faces(
    folder: Path,
    count: int,
    labels: tuple[str, ...] = FER2013_LABELS,
    size_hw: tuple[int, int] = (48, 48),
    seed: int = 0,
) -> Split:
    """About ``count`` real faces from a FER2013-layout folder, stratified and seeded.

    ``ceil(count / classes)`` faces of each class (all of a class that has fewer), so the sample
    holds at least ``count`` faces when the folder has them. What to do when ``folder`` is missing
    (random pixels, an error) is the caller's choice.

    Args:
        folder: A split folder such as ``fer2013/test`` (one sub-folder per class).
        count: Faces wanted.
        labels: The expected class folders, in output order.
        size_hw: Images of another size are resized to this.
        seed: Seed of the per-class sample.

    Raises:
        DataError: As :func:`load_folder_split`.
    """
    per_class = max(1, math.ceil(count / len(labels)))
    return load_folder_split(Path(folder), labels, size_hw, limit_per_class=per_class, seed=seed)


def load_split(data: Path, split: str, limit_per_class: int | None = None, seed: int = 0) -> Split:
    """Read a split from either layout: a folder holding ``<split>/`` or a ``.csv`` file."""
    data = Path(data)
    if data.suffix.lower() == ".csv":
        limit = None if limit_per_class is None else limit_per_class * len(FER2013_LABELS)
        return load_csv_split(data, split, limit=limit)
    if data.is_file():
        raise DataError(
            f"data {data} is a file but not a .csv: give the FER2013 folder (with train/ and test/) or fer2013.csv"
        )
    if not data.is_dir():
        raise DataError(f"data {data} does not exist: give the FER2013 folder (with train/ and test/) or fer2013.csv")
    return load_folder_split(data / split, limit_per_class=limit_per_class, seed=seed)


def train_val_split(data: Path, fraction: float, seed: int, limit_per_class: int | None = None) -> tuple[Split, Split]:
    """The training split of ``data`` and the stratified, seeded validation split carved from it.

    ``trainer-fit`` trains and validates on these; ``trainer-eval --split val`` rebuilds the same
    validation faces from the same ``fraction`` and ``seed``. The first split carries the count of
    unreadable files.
    """
    full = load_split(data, "train", limit_per_class, seed)
    train_idx, val_idx = stratified_split(full.y, fraction, seed)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise DataError(f"{data}: {len(full)} training faces are too few to carve a validation split from "
                        f"(each class needs at least 2): give more faces per class")
    return replace(full.take(train_idx), skipped=full.skipped), full.take(val_idx)


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` with ``fraction`` of each class in ``val``, seeded."""
    rng = np.random.default_rng(seed)
    train_idx: list[np.ndarray] = []
    val_idx: list[np.ndarray] = []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_val = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
