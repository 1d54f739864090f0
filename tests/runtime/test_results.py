"""Results people can use: the CSV table, the timeline chart, one photo in words, the progress bar."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.contract import FER2013_LABELS
from tests.conftest import ROOT, assert_user_error, run_cli
from tests.runtime.support import digest, listing

HEADLESS = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}
PROBS = [f"prob_{n}" for n in FER2013_LABELS]


def summary_of(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def clip_run(video_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real clip, every frame, with --csv, --jsonl and (with matplotlib) --timeline."""
    out = tmp_path_factory.mktemp("results")
    extra = ["--timeline", str(out / "t.png")] if _has("matplotlib") else []
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--csv", str(out / "faces.csv"),
                   "--jsonl", str(out / "faces.jsonl"), *extra, env=HEADLESS, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out / "stdout").write_text(proc.stdout)
    return out


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ---- --csv ----------------------------------------------------------------------------------------------------


def test_csv_loads_in_pandas_with_no_options_and_matches_the_json_lines(clip_run: Path):
    pd = pytest.importorskip("pandas")
    table = pd.read_csv(clip_run / "faces.csv")
    records = read_jsonl(clip_run / "faces.jsonl")
    faces = [(rec, face) for rec in records for face in rec["faces"]]
    assert len(table) == len(faces) >= 0.9 * 472  # one row per face per frame
    assert list(table.columns) == ["frame", "timestamp_s", "file", "track_id", "x1", "y1", "x2", "y2", "label",
                                   "confidence", *PROBS]
    for column in ("frame", "track_id", "x1", "y1", "x2", "y2"):
        assert table[column].dtype.kind == "i", column  # whole numbers, not text
    assert table["timestamp_s"].dtype.kind == "f" and table["timestamp_s"].max() == pytest.approx(471 / 23.98, abs=0.05)
    for i in range(0, len(faces), 37):
        rec, face = faces[i]
        row = table.iloc[i]
        assert (row["frame"], row["timestamp_s"]) == (rec["frame"], pytest.approx(rec["timestamp_s"], abs=1e-4))
        assert [row[c] for c in ("x1", "y1", "x2", "y2")] == face["box_xyxy"]
        assert (row["label"], row["track_id"]) == (face["label"], face["track_id"])
        assert row[PROBS].to_numpy(float) == pytest.approx([face["probs"][n] for n in FER2013_LABELS], abs=1e-4)
    probs = table[PROBS].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=0.01)
    # the label is the most probable class; written to 4 decimals, a near tie can round to a tie
    # (frame 247 of the clip: happy and neutral both 0.4145), so the label's value is the row's top value
    label_prob = probs[np.arange(len(table)), [FER2013_LABELS.index(x) for x in table["label"]]]
    assert (label_prob == probs.max(axis=1)).all()
    # the clip: neutral, then worried, then happy; the woman's track (the longest) ends happy
    woman = table[table["track_id"] == table["track_id"].mode()[0]]
    assert len(woman) >= 0.9 * 472 and set(woman[woman["timestamp_s"] > 17]["label"]) == {"happy"}


def test_csv_of_a_folder_names_each_photo(media_dir: Path, tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("single_face.jpg", "multi_face.jpg", "grace_hopper_512x512.jpg"):
        (folder / name).symlink_to(media_dir / name)
    proc = run_cli("runtime", "--source", str(folder), "--no-window", "--csv", str(tmp_path / "f.csv"), env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pd = pytest.importorskip("pandas")
    table = pd.read_csv(tmp_path / "f.csv")
    counts = table["file"].value_counts().to_dict()
    assert counts == {"multi_face.jpg": 4, "single_face.jpg": 1, "grace_hopper_512x512.jpg": 1}
    assert table[table["file"] == "single_face.jpg"]["label"].tolist() == ["happy"]


def test_csv_streams_to_stdout_before_the_summary(media_dir: Path):
    proc = run_cli("runtime", "--source", str(media_dir / "multi_face.jpg"), "--no-window", "--csv", "/dev/stdout",
                   env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("frame,timestamp_s,file,track_id,x1,y1,x2,y2,label,confidence,prob_angry")
    assert len(lines) == 1 + 4 + 1  # header, four faces, the JSON summary last
    assert summary_of(proc.stdout)["faces"] == 4


def test_a_csv_write_that_fails_keeps_the_earlier_file(video_path: Path, tmp_path: Path):
    """A file-size limit stops the CSV mid-run: one line naming the cause, exit 1, the earlier file as it was."""
    earlier = tmp_path / "faces.csv"
    earlier.write_text("frame\n0\n")
    before = digest(earlier)
    script = f'ulimit -f 8 && exec "{sys.executable}" -m runtime --source "{video_path}" --no-window --csv faces.csv'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=240,
                          env={**os.environ, **HEADLESS})
    assert_user_error(proc, 1, "file too large", "faces.csv")
    assert digest(earlier) == before
    assert listing(tmp_path) == ["faces.csv"], "a temporary file was left"


# ---- --timeline ------------------------------------------------------------------------------------------------


def test_timeline_shows_each_emotion_over_time(clip_run: Path):
    pytest.importorskip("matplotlib")
    from runtime.timeline import COLOURS, Timeline

    png = cv2.imread(str(clip_run / "t.png"))
    assert png is not None and png.shape[1] >= 1000 and png.shape[0] >= 400
    pixels = png.reshape(-1, 3).astype(int)

    def share_of(colour: str) -> float:
        bgr = np.array([int(colour[i:i + 2], 16) for i in (5, 3, 1)])
        return float((np.abs(pixels - bgr).sum(axis=1) < 12).mean())

    # the clip ends happy for several seconds: the happy colour fills a large part of the chart
    assert share_of(COLOURS["happy"]) > 0.08
    assert share_of(COLOURS["sad"]) > 0.02 and share_of(COLOURS["fear"]) > 0.01
    # the shares drawn are those of the run's own records: the labels of the JSON lines, counted
    timeline = Timeline(Path("x.png"), FER2013_LABELS)
    for rec in read_jsonl(clip_run / "faces.jsonl"):
        timeline.write(rec)
    labels = [f["label"] for rec in read_jsonl(clip_run / "faces.jsonl") for f in rec["faces"]]
    shares = timeline.shares()
    for name in FER2013_LABELS:
        assert shares[name] == pytest.approx(labels.count(name) / len(labels))
    assert shares["happy"] == max(shares.values())


def test_timeline_of_photos_is_written(media_dir: Path, tmp_path: Path):
    pytest.importorskip("matplotlib")
    proc = run_cli("runtime", "--source", str(media_dir / "multi_face.jpg"), "--no-window", "--timeline",
                   str(tmp_path / "t.svg"), env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "t.svg").read_text()
    assert text.lstrip().startswith("<?xml") and "share of time in each emotion" in text


def test_timeline_without_matplotlib_is_one_line(media_dir: Path, tmp_path: Path):
    """A base install (no matplotlib): one line naming the extra, exit 2, nothing written."""
    code = "import sys; sys.modules['matplotlib'] = None; from runtime.live import cli; sys.exit(cli(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "--source", str(media_dir / "single_face.jpg"), "--no-window",
                           "--timeline", str(tmp_path / "t.png"), "--csv", str(tmp_path / "f.csv")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, **HEADLESS})
    assert_user_error(proc, 2, "--timeline", 'pip install "emocam[plot]"')
    assert listing(tmp_path) == []


@pytest.mark.parametrize(("args", "needles"), [
    (["--timeline", "t.jpg"], ["--timeline", ".png"]),
    (["--csv", "same", "--jsonl", "same"], ["--csv", "--jsonl", "same file"]),
    (["--csv", "nowhere/f.csv"], ["nowhere", "does not exist"]),
])
def test_bad_result_paths_are_one_line(args: list[str], needles: list[str], media_dir: Path, tmp_path: Path):
    proc = run_cli("runtime", "--source", str(media_dir / "single_face.jpg"), "--no-window", *args, cwd=tmp_path,
                   env=HEADLESS)
    assert_user_error(proc, 2, *needles)
    assert listing(tmp_path) == []


# ---- one photo in words ------------------------------------------------------------------------------------------


def test_one_photo_is_told_in_a_readable_line(media_dir: Path, tmp_path: Path):
    proc = run_cli("runtime", "--source", str(media_dir / "multi_face.jpg"), "--no-window", "--jsonl",
                   str(tmp_path / "f.jsonl"), env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    faces = sorted(read_jsonl(tmp_path / "f.jsonl")[0]["faces"], key=lambda f: f["box_xyxy"][0])
    line = next(ln for ln in proc.stderr.splitlines() if "multi_face.jpg:" in ln)
    words = ", ".join(f"{f['label']} {f['confidence']:.0%} [{','.join(map(str, f['box_xyxy']))}]" for f in faces)
    assert line == f"runtime-live: multi_face.jpg: 4 faces, left to right: {words}"
    assert summary_of(proc.stdout)["labels"] == [f["label"] for f in faces]


def test_one_face_and_no_face(media_dir: Path, tmp_path: Path):
    proc = run_cli("runtime", "--source", str(media_dir / "single_face.jpg"), "--no-window", env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(ln.startswith("runtime-live: single_face.jpg: 1 face: happy ") for ln in proc.stderr.splitlines())
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    proc = run_cli("runtime", "--source", str(blank), "--no-window", env=HEADLESS)
    assert "runtime-live: wall.png: no face found" in proc.stderr.splitlines()
    assert summary_of(proc.stdout)["labels"] == []


# ---- the progress bar ----------------------------------------------------------------------------------------------


def _stderr_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run runtime-live with stderr on a pseudo-terminal (stdout piped); its exit code and what the terminal got."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runtime", *args], stdout=subprocess.PIPE, stderr=slave,
                            cwd=ROOT, env={**os.environ, **HEADLESS})
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end closed: the run ended
            break
        if not chunk:
            break
        seen += chunk
    proc.stdout.read()
    os.close(master)
    return proc.wait(timeout=60), seen.decode("utf-8", "replace")


def test_progress_bar_on_a_terminal(video_path: Path):
    code, terminal = _stderr_on_a_terminal(["--source", str(video_path), "--no-window", "--max-frames", "120"])
    assert code == 0, terminal[-2000:]
    redraws = [part for part in terminal.split("\r") if "/120 frames" in part]
    assert redraws, terminal[-2000:]
    assert "120/120 frames 100%" in redraws[-1] and "fps" in redraws[-1]
    assert any("left" in part for part in redraws[:-1]), "no time left was shown"
    done = [int(part.split("/120")[0].split("]")[-1]) for part in redraws]
    assert done == sorted(done) and done[-1] == 120


def test_no_progress_bar_when_piped(video_path: Path):
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--max-frames", "30", env=HEADLESS)
    assert proc.returncode == 0
    assert "/30 frames" not in proc.stderr and "\r" not in proc.stderr and "\x1b" not in proc.stderr


def test_timeline_counts_each_faces_label_where_its_rounded_probabilities_tie():
    """Frame 247 of the clip, as written: happy and neutral both 0.4145 once rounded, and the
    runtime's label (decided before rounding) is neutral. The shares count that label, so they
    agree with --csv and --jsonl; a face without a label counts its most probable class."""
    from runtime.timeline import Timeline

    probs = {"angry": 0.0352, "disgust": 0.024, "fear": 0.032, "happy": 0.4145, "neutral": 0.4145, "sad": 0.0368,
             "surprise": 0.043}
    timeline = Timeline(Path("x.png"), FER2013_LABELS)
    timeline.write({"timestamp_s": 0.0, "faces": [{"label": "neutral", "probs": probs, "track_id": 1}]})
    timeline.write({"timestamp_s": 0.1, "faces": [{"probs": {**probs, "sad": 0.5}, "track_id": 1}]})
    timeline.write({"timestamp_s": 0.2, "faces": [{"label": None, "probs": dict.fromkeys(probs), "track_id": 1}]})
    shares = timeline.shares()
    assert shares["neutral"] == 0.5 and shares["sad"] == 0.5 and shares["happy"] == 0.0
