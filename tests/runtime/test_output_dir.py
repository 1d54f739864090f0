"""--output-dir: one annotated file per photo of a folder, one result per video of a folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import assert_user_error, run_cli
from tests.runtime.support import digest, frames_in, listing

HEADLESS = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}
PHOTOS = ("grace_hopper_512x512.jpg", "multi_face.jpg", "single_face.jpg")


def summary_of(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _folder(tmp_path: Path, media_dir: Path, names: tuple[str, ...]) -> Path:
    """A folder of links to real photos."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        (folder / name).symlink_to(media_dir / name)
    return folder


def test_a_folder_of_photos_gives_one_annotated_file_each(media_dir: Path, tmp_path: Path):
    folder = _folder(tmp_path, media_dir, PHOTOS)
    out = tmp_path / "out" / "deeper"  # made if missing
    proc = run_cli("runtime", "--source", str(folder), "--no-window", "--output-dir", str(out), "--jsonl",
                   str(tmp_path / "f.jsonl"), env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert listing(out) == sorted(PHOTOS)
    records = {r["file"]: r for r in map(json.loads, (tmp_path / "f.jsonl").read_text().splitlines())}
    for name in PHOTOS:
        src, got = cv2.imread(str(media_dir / name)), cv2.imread(str(out / name))
        assert got.shape == src.shape, name  # each photo's own result, not the last one's
        diff = np.abs(got.astype(int) - src).mean(axis=2)
        for face in records[name]["faces"]:  # an emoji on every face found, the rest as it was
            x1, y1, x2, y2 = face["box_xyxy"]
            assert diff[y1:y2, x1:x2].mean() > 25, name
        assert np.median(diff) < 4, name
    assert f"wrote 3 files to {out.resolve()}" in proc.stderr
    summary = summary_of(proc.stdout)
    assert summary["files_written"] == 3 and summary["output_dir"] == str(out)


def test_a_folder_of_videos_gives_one_result_each(video_path: Path, media_dir: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_talk.mp4").symlink_to(video_path)
    (folder / "b_empty.mp4").symlink_to(media_dir / "no_face.mp4")
    (folder / "c_photo.jpg").symlink_to(media_dir / "single_face.jpg")
    (folder / "d_broken.mov").write_bytes(b"not a video")
    out = tmp_path / "out"
    proc = run_cli("runtime", "--source", str(folder), "--no-window", "--output-dir", str(out), "--csv",
                   str(tmp_path / "f.csv"), env=HEADLESS, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped" in proc.stderr and "d_broken.mov" in proc.stderr  # one bad file never stops the others
    assert listing(out) == ["a_talk.mp4", "b_empty.mp4", "c_photo.jpg"]
    assert frames_in(out / "a_talk.mp4") == 472
    empty_frames = frames_in(media_dir / "no_face.mp4")
    assert frames_in(out / "b_empty.mp4") == empty_frames
    assert cv2.imread(str(out / "c_photo.jpg")).shape == cv2.imread(str(media_dir / "single_face.jpg")).shape
    pd = pytest.importorskip("pandas")
    table = pd.read_csv(tmp_path / "f.csv")
    per_file = table.groupby("file")["frame"]
    assert per_file.min().to_dict() == {"a_talk.mp4": 0, "c_photo.jpg": 0}  # frames counted from 0 in each file
    assert per_file.max()["a_talk.mp4"] == 471
    assert summary_of(proc.stdout)["frames"] == 472 + empty_frames + 1


def test_an_output_dir_that_is_the_input_folder_is_refused(media_dir: Path, tmp_path: Path):
    folder = _folder(tmp_path, media_dir, PHOTOS)
    before = {name: digest(folder / name) for name in PHOTOS}
    proc = run_cli("runtime", "--source", str(folder), "--no-window", "--output-dir", str(folder), env=HEADLESS)
    assert_user_error(proc, 2, "--output-dir", "input file")
    assert {name: digest(folder / name) for name in PHOTOS} == before and listing(folder) == sorted(PHOTOS)


@pytest.mark.parametrize(("extra", "needles"), [
    (["--output", "o.jpg"], ["--output", "--output-dir", "one of them"]),
    (["--output-dir", "afile"], ["--output-dir", "not a folder"]),
])
def test_bad_output_dirs_are_one_line(extra: list[str], needles: list[str], media_dir: Path, tmp_path: Path):
    (tmp_path / "afile").write_text("x")
    args = ["--output-dir", "out"] if extra[0] == "--output" else []
    proc = run_cli("runtime", "--source", str(media_dir / "single_face.jpg"), "--no-window", *args, *extra,
                   cwd=tmp_path, env=HEADLESS)
    assert_user_error(proc, 2, *needles)
    assert listing(tmp_path) == ["afile"]


def test_one_output_file_for_a_folder_of_videos_is_refused(video_path: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").symlink_to(video_path)
    (folder / "b.mp4").symlink_to(video_path)
    proc = run_cli("runtime", "--source", str(folder), "--no-window", "--output", str(tmp_path / "o.mp4"),
                   env=HEADLESS)
    assert_user_error(proc, 2, "--output-dir", "2 videos")
    pytest.importorskip("matplotlib")
    proc = run_cli("runtime", "--source", str(folder), "--no-window", "--timeline", str(tmp_path / "t.png"),
                   env=HEADLESS)
    assert_user_error(proc, 2, "--timeline", "--csv")
    assert listing(tmp_path) == ["in"]
