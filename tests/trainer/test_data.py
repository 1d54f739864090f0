"""FER2013 readers: folder layout and fer2013.csv agree, bad input is refused with the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.contract import FER2013_CSV_LABELS, FER2013_LABELS
from runtime.errors import DataError
from trainer.data import load_csv_split, load_folder_split, load_split, sample_faces, stratified_split


def _copy_subset(fer_dir: Path, dest: Path, per_class: int) -> Path:
    for name in FER2013_LABELS:
        (dest / "train" / name).mkdir(parents=True)
        for src in sorted((fer_dir / "train" / name).iterdir())[:per_class]:
            shutil.copy(src, dest / "train" / name / src.name)
    return dest


def test_folder_reads_real_faces(fer_dir: Path) -> None:
    split = load_folder_split(fer_dir / "test", limit_per_class=20, seed=1)
    assert split.x.shape == (140, 48, 48, 1) and split.x.dtype == np.uint8
    assert split.counts() == dict.fromkeys(FER2013_LABELS, 20)
    assert split.x.std() > 20  # real faces, not blank images


def test_csv_and_folder_label_orders_agree(fer_dir: Path, tmp_path: Path) -> None:
    """A CSV written in fer2013.csv's own class order maps back to the folders' order."""
    folder = load_folder_split(fer_dir / "train", limit_per_class=4, seed=3)
    rows = ["emotion,pixels,Usage"]
    for img, y in zip(folder.x, folder.y, strict=True):
        csv_index = FER2013_CSV_LABELS.index(FER2013_LABELS[y])
        rows.append(f"{csv_index},{' '.join(map(str, img.ravel()))},Training")
    rows.append(f"0,{' '.join(['0'] * 2304)},PublicTest")  # another split: must be ignored
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(rows) + "\n")
    from_csv = load_csv_split(path, "train")
    assert from_csv.labels == folder.labels == FER2013_LABELS
    np.testing.assert_array_equal(from_csv.y, folder.y)
    np.testing.assert_array_equal(from_csv.x, folder.x)
    assert [FER2013_LABELS[i] for i in from_csv.y[:4]] == ["angry"] * 4
    assert len(load_split(path, "test")) == 1


def test_sample_faces_is_stratified_seeded_and_real(fer_dir: Path) -> None:
    """The one face sample of export-onnx and benchmark: ceil(count / 7) real faces per class."""
    sample = sample_faces(fer_dir / "test", 100, seed=4)
    assert len(sample) == 105 and sample.counts() == dict.fromkeys(FER2013_LABELS, 15)
    assert sample.x.shape[1:] == (48, 48, 1) and sample.x.std() > 20
    np.testing.assert_array_equal(sample_faces(fer_dir / "test", 100, seed=4).x, sample.x)
    assert not np.array_equal(sample_faces(fer_dir / "test", 100, seed=5).x, sample.x)
    small = sample_faces(fer_dir / "test", 14, size_hw=(24, 24), seed=4)
    assert small.x.shape == (14, 24, 24, 1)


def test_stratified_split_is_seeded_and_stratified() -> None:
    y = np.repeat(np.arange(7), [100, 10, 100, 200, 100, 100, 50])
    tr, va = stratified_split(y, 0.1, seed=5)
    tr2, va2 = stratified_split(y, 0.1, seed=5)
    np.testing.assert_array_equal(va, va2)
    assert not set(tr) & set(va) and len(tr) + len(va) == len(y)
    assert np.bincount(y[va]).tolist() == [10, 1, 10, 20, 10, 10, 5]
    np.testing.assert_array_equal(tr, tr2)


def test_corrupt_jpeg_is_skipped_and_counted(fer_dir: Path, tmp_path: Path) -> None:
    root = _copy_subset(fer_dir, tmp_path, 3)
    (root / "train" / "happy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    split = load_folder_split(root / "train")
    assert len(split) == 21 and split.skipped == 1


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda root: shutil.rmtree(root / "train" / "fear"), "lacks class folder"),
        (lambda root: (root / "train" / "contempt").mkdir(), "unexpected class folder"),
        (lambda root: [p.unlink() for p in (root / "train").rglob("*.jpg")], "no images"),
        (lambda root: shutil.rmtree(root / "train"), "does not exist"),
    ],
    ids=["missing-class", "extra-class", "no-images", "missing-folder"],
)
def test_bad_folders_are_refused(fer_dir: Path, tmp_path: Path, mutate, needle: str) -> None:
    root = _copy_subset(fer_dir, tmp_path, 2)
    mutate(root)
    with pytest.raises(DataError, match=needle):
        load_folder_split(root / "train")


def test_csv_with_wrong_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("label,image,split\n0,1 2 3,Training\n")
    with pytest.raises(DataError, match="expected emotion,pixels,Usage"):
        load_csv_split(path, "train")


def test_unreadable_images_only(tmp_path: Path) -> None:
    for name in FER2013_LABELS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "junk.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable images"):
        load_folder_split(tmp_path)


def test_pipes_and_folders_named_like_images_are_passed_over(fer_dir: Path, tmp_path: Path) -> None:
    """A FIFO named face.png would block the reader forever; a folder named x.png is no image."""
    import os

    data = _copy_subset(fer_dir, tmp_path / "fer", per_class=3)
    os.mkfifo(data / "train" / "happy" / "pipe.png")
    (data / "train" / "sad" / "folder.png").mkdir()
    split = load_folder_split(data / "train", seed=0)
    assert split.counts() == dict.fromkeys(FER2013_LABELS, 3)


def test_too_few_faces_for_a_validation_split_is_one_error(fer_dir: Path, tmp_path: Path) -> None:
    from trainer.data import train_val_split

    data = _copy_subset(fer_dir, tmp_path / "fer", per_class=1)
    with pytest.raises(DataError, match="too few"):
        train_val_split(data, 0.1, seed=0)
