"""runtime-eval: labels parsing, box matching, the command on the real media labels, the synthetic set."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import __version__
from runtime.contract import FER2013_LABELS
from runtime.errors import DataError
from runtime.evaluate import match_faces, score_image, summarise
from runtime.face_labels import LabelledImage, read_labels, split_name
from runtime.synthetic import compose, fer_test_faces, make_synthetic
from tests.conftest import ROOT, assert_user_error, run_cli

MEDIA_LABELS = ROOT / "benchmarks" / "labels" / "media.csv"
SUNGLASSES = [205, 72, 315, 178]  # multi_face.jpg: the face Haar misses at runtime-live's defaults
HEADER = "file,x1,y1,x2,y2,emotion\n"


def _labels(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _eval(*args: str) -> subprocess.CompletedProcess:
    return run_cli("runtime.evaluate", *args, timeout=120)


def _summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- labels -------------------------------------------------------------------------------------------------------


def test_labels_are_read_per_image(tmp_path: Path):
    path = _labels(tmp_path, HEADER + "a.jpg,1,2,11,12,happy\na.jpg,20,20,30,30,\nclip.mp4#7,0,0,5,5,Sad\n"
                   "empty.png,,,,,\n\n")
    images = read_labels(path, FER2013_LABELS)
    assert [im.name for im in images] == ["a.jpg", "clip.mp4#7", "empty.png"]
    assert images[0].boxes.tolist() == [[1, 2, 11, 12], [20, 20, 30, 30]]
    assert images[0].emotions == ["happy", None]
    assert (images[1].file, images[1].frame, images[1].emotions) == ("clip.mp4", 7, ["sad"])
    assert images[2].face_free and images[2].line == 5
    assert split_name("a#b.jpg") == ("a#b.jpg", None)  # a '#' not followed by a number is part of the name


@pytest.mark.parametrize(("rows", "needle"), [
    ("file,box,emotion\n", "header"),
    (HEADER + "a.jpg,1,2,3\n", "line 2: 4 fields"),
    (HEADER + "a.jpg,1,2,,4,\n", "all four"),
    (HEADER + "a.jpg,1,x,3,4,\n", "'x' is not a number"),
    (HEADER + "a.jpg,1,2,3,nan,\n", "not a number"),
    (HEADER + "a.jpg,5,2,5,4,\n", "x1 < x2"),
    (HEADER + "a.jpg,-1,2,5,4,\n", "0 <= x1"),
    (HEADER + "a.jpg,1,2,5,4,joyful\n", "'joyful' is not one of"),
    (HEADER + "a.jpg,,,,,happy\n", "emotion without a box"),
    (HEADER + "a.jpg,1,2,5,4,\na.jpg,,,,,\n", "both with and without"),
    (HEADER + ",1,2,5,4,\n", "file field is empty"),
    (HEADER, "no rows"),
])
def test_malformed_labels_name_the_line_and_the_fix(tmp_path: Path, rows: str, needle: str):
    with pytest.raises(DataError) as info:
        read_labels(_labels(tmp_path, rows), FER2013_LABELS)
    assert needle.lower() in str(info.value).lower()
    assert "\n" not in str(info.value)


def test_the_shipped_media_labels_parse():
    images = read_labels(MEDIA_LABELS, FER2013_LABELS)
    assert len(images) == 20 and sum(im.face_free for im in images) == 5
    assert sum(len(im.boxes) for im in images) == 19


# --- matching -----------------------------------------------------------------------------------------------------


def test_iou_threshold_is_inclusive():
    truth = np.array([[0, 0, 10, 10]])
    assert match_faces(truth, np.array([[0, 0, 10, 4]])) == [(0, 0, pytest.approx(0.4))]  # IoU exactly 0.4
    assert match_faces(truth, np.array([[0, 0, 10, 3.9]])) == []
    assert match_faces(truth, np.zeros((0, 4))) == [] and match_faces(np.zeros((0, 4)), truth) == []


def test_matching_is_one_to_one_and_greedy_by_iou():
    truth = np.array([[0, 0, 100, 100], [60, 0, 160, 100]])
    found = np.array([[50, 0, 150, 100],   # IoU 0.33 with truth 0, 0.82 with truth 1
                      [0, 0, 100, 100],    # exactly truth 0
                      [2, 2, 98, 98]])     # a second box on truth 0: one of the two is a false face
    pairs = match_faces(truth, found)
    assert [(t, f) for t, f, _ in pairs] == [(0, 1), (1, 0)]
    assert pairs[0][2] == pytest.approx(1.0) and pairs[1][2] == pytest.approx(90 / 110)
    # Greedy by IoU, not by order: the first label does not take the detection the second fits better.
    truth = np.array([[0, 0, 100, 100], [30, 0, 130, 100]])
    found = np.array([[28, 0, 128, 100], [-40, 0, 60, 100]])
    assert sorted((t, f) for t, f, _ in match_faces(truth, found)) == [(0, 1), (1, 0)]


def test_scores_count_missed_false_and_confused_faces():
    image = LabelledImage("a.jpg", np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], float),
                          ["happy", "sad", None])
    result = score_image(image, np.array([[0, 0, 10, 10], [21, 0, 31, 10], [100, 100, 110, 110]]),
                         ["happy", "neutral", "angry"])
    assert (result["faces"], result["found"], result["false_faces"]) == (3, 2, 1)
    assert result["missed"] == [{"box": [40, 0, 50, 10], "emotion": None}]
    assert result["false_boxes"] == [[100, 100, 110, 110]]
    free = score_image(LabelledImage("b.jpg"), np.array([[5, 5, 9, 9]]), ["fear"])
    report = summarise([result, free], FER2013_LABELS)
    assert (report["faces"], report["found"], report["false_faces"]) == (3, 2, 2)
    assert report["false_faces_on_face_free"] == 1 and report["face_free_images_with_false_faces"] == 1
    assert report["false_faces_per_image"] == 1.0 and report["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert (report["emotion_matched"], report["emotion_correct"], report["accuracy"]) == (2, 1, 0.5)
    i = FER2013_LABELS.index
    assert report["confusion"][i("sad")][i("neutral")] == 1 and report["confusion"][i("happy")][i("happy")] == 1
    assert report["per_class"]["sad"] == {"faces": 1, "found": 1, "detection_recall": 1.0, "correct": 0,
                                          "recall": 0.0}


# --- the command on the real media ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_report(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, str]:
    out = tmp_path_factory.mktemp("eval") / "media.json"
    proc = _eval(str(MEDIA_LABELS), "--media", str(media_dir), "--json", str(out), "--per-image")
    return _summary(proc), json.loads(out.read_text()), proc.stdout


def test_media_labels_score_what_the_detector_finds(media_report):
    summary, report, stdout = media_report
    assert (summary["images"], summary["face_free_images"], summary["faces"]) == (20, 5, 19)
    # runtime-live's defaults miss the sunglasses face of multi_face.jpg and find every other labelled face.
    # (A detector that finds it too gives 19: the upper bound leaves room for that work.)
    assert 18 <= summary["found"] <= 19
    missed = [m["box"] for r in report["per_image"] for m in r["missed"]]
    assert missed in ([SUNGLASSES], [])
    assert summary["false_faces"] <= 1 and summary["false_faces_on_face_free"] == 0
    ious = [m["iou"] for r in report["per_image"] for m in r["matches"]]
    assert len(ious) == summary["found"] and min(ious) >= 0.6  # the labels frame faces as the detector does
    assert summary["emotion_matched"] == 14 + (summary["found"] - 18)
    assert summary["accuracy"] >= 0.85  # today 14 of 14: happy and sad faces, clearly so
    assert report["per_class"]["happy"]["faces"] == 11 and report["per_class"]["sad"]["faces"] == 3
    assert sum(map(sum, report["confusion"])) == summary["emotion_matched"]
    assert "multi_face.jpg: " in stdout and "confusion of matched faces" in stdout


def test_eval_runs_the_pipeline_as_runtime_live_runs_a_photo(media_dir: Path, media_report, tmp_path: Path):
    _, report, _ = media_report
    jsonl = tmp_path / "live.jsonl"
    proc = run_cli("runtime", "--source", str(media_dir / "multi_face.jpg"), "--no-window", "--jsonl",
                   str(jsonl), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    live = sorted((f["box_xyxy"], f["label"]) for f in json.loads(jsonl.read_text())["faces"])
    image = next(r for r in report["per_image"] if r["file"] == "multi_face.jpg")
    ours = sorted([(m["detected"], m["predicted"]) for m in image["matches"]]
                  + [(b, None) for b in image["false_boxes"]])
    assert [b for b, _ in ours] == [b for b, _ in live]
    assert [p for _, p in ours if p is not None] == [lab for (b, lab) in live if b not in image["false_boxes"]]


def test_bad_input_is_one_line_and_exit_2(media_dir: Path, tmp_path: Path):
    missing = _labels(tmp_path, HEADER + "single_face.jpg,1,1,50,50,happy\nnot_here.jpg,1,1,50,50,\n")
    assert_user_error(_eval(str(missing), "--media", str(media_dir)), 2, "line 3", "not_here.jpg", "--media")
    late = _labels(tmp_path, HEADER + "no_face.mp4#5000,,,,,\n")
    assert_user_error(_eval(str(late), "--media", str(media_dir)), 2, "no_face.mp4", "frames")
    assert_user_error(_eval(str(MEDIA_LABELS), "--media", str(tmp_path / "nowhere")), 2, "--media", "not a folder")
    bad = _labels(tmp_path, HEADER + "single_face.jpg,1,1,50,50,joyful\n")
    assert_user_error(_eval(str(bad), "--media", str(media_dir)), 2, "line 2", "joyful")


def test_version_through_the_console_entry():
    code = "import sys\nfrom runtime import console\nsys.argv = ['runtime-eval', '--version']\n" \
           "sys.exit(console.runtime_eval())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"runtime-eval (emocam) {__version__}"


# --- the synthetic set --------------------------------------------------------------------------------------------


def _rows(folder: Path) -> list[dict]:
    with (folder / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_synthetic_set_is_deterministic_from_test_faces_only(fer_dir: Path, media_dir: Path, tmp_path: Path):
    kwargs = {"seed": 3, "images": 10, "face_free": 0.3, "use_skimage": False}
    bg = [media_dir / "no_face.mp4"]
    first = make_synthetic(tmp_path / "a", fer_dir / "test", bg, **kwargs)
    make_synthetic(tmp_path / "b", fer_dir / "test", bg, **kwargs)
    rows = _rows(tmp_path / "a")
    assert rows == _rows(tmp_path / "b")
    for i in range(10):
        name = f"syn_{i:05d}.jpg"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    faces = [r for r in rows if r["x1"]]
    free = {r["file"] for r in rows if not r["x1"]}
    assert len(faces) == first["faces"] and len(free) == first["face_free_images"] >= 1
    assert all(r["source"].startswith("no_face.mp4#") for r in rows if not r["x1"])
    for r in faces:
        assert r["source"].startswith("test/") and "PublicTest_" in r["source"]
        assert (fer_dir / r["source"]).is_file() and r["source"].split("/")[1] == r["emotion"]
        side = int(r["x2"]) - int(r["x1"])
        assert 47 <= side <= 221 and abs(side - (int(r["y2"]) - int(r["y1"]))) <= 1
    assert read_labels(tmp_path / "a" / "labels.csv", FER2013_LABELS)  # runtime-eval reads what it writes
    other = make_synthetic(tmp_path / "c", fer_dir / "test", bg, **{**kwargs, "seed": 4})
    assert _rows(tmp_path / "c") != rows and other["images"] == 10


def test_synthetic_faces_lie_where_their_labels_say(fer_dir: Path):
    from runtime.image import read_image
    from runtime.synthetic import _FacePool

    rng = np.random.default_rng(0)
    scene = np.full((600, 800, 3), 127, np.uint8)
    pasted = compose(scene, _FacePool(fer_test_faces(fer_dir / "test"), rng), fer_dir / "test", 4, rng)
    assert 1 <= len(pasted) <= 4
    touched = np.abs(scene.astype(int) - 127).max(axis=2) > 0
    allowed = np.zeros_like(touched)
    for box, _, source in pasted:
        x1, y1, x2, y2 = box
        side = x2 - x1
        grow = int(side * 0.21) + 2  # a square turned by up to 25 degrees reaches 0.21 of its side further out
        allowed[max(0, y1 - grow):y2 + grow, max(0, x1 - grow):x2 + grow] = True
        inner = cv2.cvtColor(scene[y1 + side // 4:y2 - side // 4, x1 + side // 4:x2 - side // 4], cv2.COLOR_BGR2GRAY)
        face = cv2.resize(read_image(fer_dir / source, cv2.IMREAD_GRAYSCALE), (side, side))
        best = -1.0
        for angle in range(-25, 26, 5):  # the face, turned by some angle in range, is what lies in the box
            turned = cv2.warpAffine(face, cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0), (side, side))
            ref = turned[side // 4:side - side // 4, side // 4:side - side // 4][:inner.shape[0], :inner.shape[1]]
            best = max(best, float(np.corrcoef(ref.ravel(), inner[:ref.shape[0], :ref.shape[1]].ravel())[0, 1]))
        assert best > 0.75, (source, best)  # the right face: 0.8-0.99; another face: at most about 0.5
    assert not (touched & ~allowed).any()  # nothing outside the labelled faces changed


def test_synthetic_refuses_the_train_split(fer_dir: Path, media_dir: Path, tmp_path: Path):
    with pytest.raises(DataError, match="train"):
        fer_test_faces(fer_dir / "train")
    fake = tmp_path / "fake" / "happy"
    fake.mkdir(parents=True)
    cv2.imwrite(str(fake / "Training_1.jpg"), np.zeros((48, 48), np.uint8))
    with pytest.raises(DataError, match="Training"):
        make_synthetic(tmp_path / "out", tmp_path / "fake", [media_dir / "no_face.mp4"], images=1)


def test_a_small_synthetic_set_through_runtime_eval(fer_dir: Path, media_dir: Path, tmp_path: Path):
    out = tmp_path / "syn"
    made = _summary(_eval("--make-synthetic", str(out), "--fer-test", str(fer_dir / "test"), "--backgrounds",
                          str(media_dir / "no_face.mp4"), "--seed", "0", "--images", "20"))
    assert made["images"] == 20 and made["face_free_images"] >= 1
    assert_user_error(_eval("--make-synthetic", str(out), "--fer-test", str(fer_dir / "test"), "--backgrounds",
                            str(media_dir / "no_face.mp4")), 2, "not a new or empty folder")
    report_path = tmp_path / "syn.json"
    summary = _summary(_eval(str(out / "labels.csv"), "--json", str(report_path)))
    report = json.loads(report_path.read_text())
    assert (summary["images"], summary["faces"]) == (20, made["faces"])
    assert summary["face_free_images"] == made["face_free_images"]
    # Faces under 40 px are below runtime-live's smallest face, and turned faces defeat Haar: some are
    # missed, but the pipeline finds a real share of them.
    assert 0.15 <= summary["recall"] < 1.0
    assert summary["found"] == sum(r["found"] for r in report["per_image"])
    assert summary["false_faces"] == sum(len(r["false_boxes"]) for r in report["per_image"])
    for r in report["per_image"]:
        for m in r["matches"]:
            assert m["iou"] >= 0.4 and m["predicted"] in FER2013_LABELS
    assert report["labels_file"] == str(out / "labels.csv") and report["iou_threshold"] == 0.4
