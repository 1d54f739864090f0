"""runtime-live end to end: the real video headless, the demo, bad input, signals, a real window."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.contract import FER2013_LABELS
from tests.conftest import ROOT, assert_user_error, foreground_signals, run_cli

VIDEO_FRAMES = 472
SUMMARY_KEYS = {"frames", "faces", "wall_s", "fps", "p50_ms", "p99_ms", "provider"}


@pytest.fixture(autouse=True)
def _no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run here is headless unless a test sets DISPLAY itself (run_cli copies os.environ)."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def summary_of(stdout: str) -> dict:
    """The last stdout line, which must be the JSON summary."""
    lines = stdout.strip().splitlines()
    assert lines, "no summary on stdout"
    summary = json.loads(lines[-1])
    assert set(summary) >= SUMMARY_KEYS, summary
    return summary


def read_jsonl(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "last JSON line is incomplete"
    return [json.loads(line) for line in text.splitlines()]


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


# ---- the real video, headless, every frame -----------------------------------------------------


@pytest.fixture(scope="module")
def full_run(video_path: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("full")
    saved = {k: os.environ.pop(k) for k in ("DISPLAY", "WAYLAND_DISPLAY") if k in os.environ}
    try:
        proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--output", str(out / "out.mp4"),
                       "--jsonl", str(out / "out.jsonl"), timeout=240)
    finally:
        os.environ.update(saved)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc, out


def test_full_video_summary(full_run):
    proc, out = full_run
    summary = summary_of(proc.stdout)
    assert summary["frames"] == VIDEO_FRAMES
    from runtime.classifier import EmotionClassifier

    assert summary["provider"] == EmotionClassifier().provider  # auto: the engine the default model runs on
    assert summary["wall_s"] > 0 and summary["fps"] > 0
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]
    assert summary["stopped_by"] == "end of source"
    assert summary["faces"] == sum(len(rec["faces"]) for rec in read_jsonl(out / "out.jsonl"))


def test_full_video_output_decodes(full_run, video_frames: tuple):
    _, out = full_run
    frames = read_video(out / "out.mp4")
    assert len(frames) == VIDEO_FRAMES
    assert frames[0].shape == (360, 640, 3)
    # Emoji on the face, the rest as it was: compare with the source frame by frame (sampled).
    records = read_jsonl(out / "out.jsonl")
    source = video_frames
    for i in range(0, VIDEO_FRAMES, 47):
        if not records[i]["faces"]:
            continue
        diff = np.abs(frames[i].astype(int) - source[i]).mean(axis=2)
        mask = np.zeros(diff.shape, bool)
        for face in records[i]["faces"]:
            x1, y1, x2, y2 = face["box_xyxy"]
            mask[y1:y2, x1:x2] = True
        assert diff[mask].mean() > 25, f"frame {i}: no emoji on the face"
        assert diff[~mask].mean() < 8, f"frame {i}: the frame changed away from the faces (or frames are out of order)"


def test_full_video_jsonl(full_run):
    _, out = full_run
    records = read_jsonl(out / "out.jsonl")
    assert len(records) == VIDEO_FRAMES
    assert [rec["frame"] for rec in records] == list(range(VIDEO_FRAMES))
    stamps = [rec["timestamp_s"] for rec in records]
    assert stamps == sorted(stamps) and stamps[0] == 0.0 and stamps[-1] == pytest.approx(471 / 23.98, abs=0.05)
    track_ids = []
    for rec in records:
        for face in rec["faces"]:
            x1, y1, x2, y2 = face["box_xyxy"]
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360
            assert face["label"] in FER2013_LABELS
            assert list(face["probs"]) == list(FER2013_LABELS)
            assert sum(face["probs"].values()) == pytest.approx(1.0, abs=2e-3)
            assert face["probs"][face["label"]] == max(face["probs"].values())  # (ties after rounding)
            assert face["confidence"] == pytest.approx(face["probs"][face["label"]], abs=1e-4)
            track_ids.append(face["track_id"])
    assert sum(bool(rec["faces"]) for rec in records) >= 0.95 * VIDEO_FRAMES
    assert max(track_ids.count(t) for t in set(track_ids)) >= 0.95 * VIDEO_FRAMES  # one woman, one track


# ---- the demo --------------------------------------------------------------------------------------


def test_demo_writes_an_image(tmp_path: Path):
    proc = run_cli("runtime", "--source", "demo", "--no-window", "--output", str(tmp_path / "x.jpg"),
                   "--jsonl", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc.stdout)
    assert summary["frames"] == 1
    img = cv2.imread(str(tmp_path / "x.jpg"))
    assert img is not None and img.shape == (512, 512, 3)
    (record,) = read_jsonl(tmp_path / "x.jsonl")
    assert record["frame"] == 0 and len(record["faces"]) == summary["faces"] >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg", "x.jsonl"]  # no temporary file left


def test_plain_runtime_live_without_a_display_falls_back_to_the_demo(tmp_path: Path):
    proc = run_cli("runtime", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stderr
    summary = summary_of(proc.stdout)
    assert summary["frames"] == 1 and summary["output"] == "runtime-live-demo.jpg"
    img = cv2.imread(str(tmp_path / "runtime-live-demo.jpg"))
    assert img is not None and img.shape == (512, 512, 3)


def test_shipped_int8_model_by_name_from_any_folder(tmp_path: Path):
    from models import INT8_MODEL

    if not INT8_MODEL.is_file():
        pytest.skip("no INT8 variant shipped")
    proc = run_cli("runtime", "--source", "demo", "--no-window", "--model", "int8", "--jsonl", "d.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "model emotion_cnn.int8.onnx" in proc.stderr
    (record,) = read_jsonl(tmp_path / "d.jsonl")
    assert len(record["faces"]) == summary_of(proc.stdout)["faces"] >= 1


def test_image_folder_jsonl_names_the_files(media_dir: Path, tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(media_dir / "single_face.jpg", folder / "a.jpg")
    shutil.copy(media_dir / "multi_face.jpg", folder / "b.jpg")
    (folder / "c.jpg").write_text("junk")
    proc = run_cli("runtime", "--source", str(folder), "--no-window", "--jsonl", str(tmp_path / "f.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "warning: skipped" in proc.stderr and "c.jpg" in proc.stderr
    records = read_jsonl(tmp_path / "f.jsonl")
    assert [(r["frame"], r["file"]) for r in records] == [(0, "a.jpg"), (1, "b.jpg")]
    assert len(records[0]["faces"]) == 1 and len(records[1]["faces"]) >= 3
    assert summary_of(proc.stdout)["frames"] == 2


def test_max_frames(video_path: Path, tmp_path: Path):
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--max-frames", "7",
                   "--output", str(tmp_path / "o.avi"), "--jsonl", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert summary_of(proc.stdout)["stopped_by"] == "max frames"
    assert len(read_jsonl(tmp_path / "o.jsonl")) == 7
    assert len(read_video(tmp_path / "o.avi")) == 7


# ---- bad input: exit 2, one line, no traceback, nothing written -------------------------------------

DEFAULTS = {"--source": "{video}", "--no-window": True, "--max-frames": "3",
            "--output": "{tmp}/out.mp4", "--jsonl": "{tmp}/out.jsonl"}
BAD_INPUT = [
    # id, flags that replace the defaults (None: left out; True: given without a value), words of the error line
    ("missing-source", {"--source": "{tmp}/missing.mp4"}, ["missing.mp4", "does not exist"]),
    ("non-video-file", {"--source": "{tmp}/notes.txt"}, ["notes.txt", "does not decode"]),
    ("empty-folder", {"--source": "{tmp}/empty"}, ["empty", "no images"]),
    ("only-junk-images", {"--source": "{tmp}/junk", "--output": "{tmp}/out.jpg"}, ["junk", "no file decoded"]),
    ("camera-7", {"--source": "7"}, ["camera", "7"]),
    ("refused-url", {"--source": "http://127.0.0.1:9/x.mp4"}, ["http://127.0.0.1:9/x.mp4", "could not open"]),
    ("missing-model", {"--model": "{tmp}/missing.onnx"}, ["missing.onnx", "does not exist"]),
    ("non-onnx-model", {"--model": "{tmp}/model.onnx"}, ["model.onnx", "not a loadable onnx"]),
    ("output-folder-missing", {"--output": "{tmp}/nowhere/o.mp4"}, ["nowhere", "does not exist"]),
    ("output-is-jsonl", {"--output": "{tmp}/same.mp4", "--jsonl": "{tmp}/same.mp4"}, ["same file"]),
    ("no-display", {"--no-window": None}, ["no display", "--no-window"]),
    ("provider-cuda", {"--provider": "cuda"}, ["cuda", "pip install"]),
    ("max-frames-0", {"--max-frames": "0"}, ["--max-frames"]),
    ("bad-output-suffix", {"--output": "{tmp}/o.gif"}, ["o.gif", "suffix"]),
    ("scale-factor-1", {"--scale-factor": "1.0"}, ["--scale-factor", "[1.01, 3]"]),
    ("unknown-flag", {"--frobnicate": True}, ["unrecognized arguments", "--frobnicate"]),
]


@pytest.mark.parametrize(("flags", "needles"), [row[1:] for row in BAD_INPUT], ids=[row[0] for row in BAD_INPUT])
def test_bad_input(flags: dict, needles: list[str], tmp_path: Path, video_path: Path):
    if flags.get("--source") == "7" and Path("/dev/video7").exists():
        pytest.skip("this machine has a /dev/video7")
    if flags.get("--provider") == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("this onnxruntime has CUDA")
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("not an image\n")
    (tmp_path / "notes.txt").write_text("not a video\n")
    (tmp_path / "model.onnx").write_text("not an ONNX model\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = []
    for flag, value in {**DEFAULTS, **flags}.items():
        if value is None:
            continue
        args.append(flag)
        if value is not True:
            args.append(value.format(tmp=tmp_path, video=video_path))
    proc = run_cli("runtime", *args, cwd=tmp_path, timeout=120)
    assert_user_error(proc, 2, *needles)
    assert proc.stdout.strip() == "", "a summary after an error"
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, "files were written"


# ---- signals: stop cleanly, outputs complete and in step ------------------------------------------


def partial(folder: Path, name: str) -> Path | None:
    """The temporary file an output is written to until it is finalised (``.NAME.partial-XXXX.SUFFIX``)."""
    found = sorted(folder.glob(f".{name}.partial-*"))
    return found[0] if found else None


STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT]


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=[s.name for s in STOP_SIGNALS])
def test_signal_stops_cleanly(sig: signal.Signals, video_path: Path, tmp_path: Path):
    video, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--source", str(video_path), "--no-window", "--output", str(video),
         "--jsonl", str(jsonl)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        preexec_fn=foreground_signals)
    try:
        deadline = time.monotonic() + 90
        while not ((tmp := partial(tmp_path, jsonl.name)) and tmp.read_text().count("\n") >= 8):
            assert not jsonl.exists(), "the JSON Lines file is in place before the run is finalised"
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no JSON lines after 90 s"
            time.sleep(0.05)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    summary = summary_of(stdout)
    assert summary["stopped_by"] == sig.name
    records = read_jsonl(jsonl)  # every line parses, the last one included
    assert 8 <= len(records) < VIDEO_FRAMES
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert summary["frames"] == len(records)
    frames = read_video(video)  # finalised: it decodes
    assert len(frames) == len(records)
    assert frames[0].shape == (360, 640, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.mp4"], "a temporary file was left"


# ---- a real window, on a virtual X server ------------------------------------------------------------


@pytest.fixture
def xvfb_display():
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb): the window path is not tested")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen([exe, "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0", "1024x768x24"],
                              pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()  # Xvfb picks a free display and writes its number when ready
        if not number:
            pytest.fail(f"Xvfb did not start (exit {server.poll()})")
        yield f":{number}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_window_on_a_virtual_display(xvfb_display: str, video_path: Path):
    proc = run_cli("runtime", "--source", str(video_path), "--max-frames", "20", env={"DISPLAY": xvfb_display},
                   timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    summary = summary_of(proc.stdout)
    assert summary["frames"] == 20 and summary["stopped_by"] == "max frames"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_between_json_line_and_video_frame_keeps_them_in_step(
        sig: signal.Signals, video_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, request: pytest.FixtureRequest):
    """A signal that arrives just after a frame's JSON line is written, before its video frame."""
    from runtime import live, outputs

    video, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    real_write = outputs.JsonlWriter.write

    def write(self, record: dict) -> None:
        real_write(self, record)
        if self.lines == 4:
            os.kill(os.getpid(), sig)  # its handler runs before this method returns

    monkeypatch.setattr(outputs.JsonlWriter, "write", write)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground pytest
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, before))
    code = live.main(["--source", str(video_path), "--no-window", "--max-frames", "20", "--output", str(video),
                      "--jsonl", str(jsonl)])
    assert code == 0
    summary = summary_of(capsys.readouterr().out)
    assert summary["stopped_by"] == sig.name
    assert summary["frames"] == len(read_jsonl(jsonl)) == len(read_video(video)) == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_stop_while_the_outputs_open_is_an_exit_not_a_traceback(
        video_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        request: pytest.FixtureRequest):
    """A Ctrl-C after the run started but before its outputs were opened (found by the start-up test:
    an AttributeError on the missing outputs and exit 1): the run stops as any other, with no output
    left behind and none reported."""
    from runtime import live, views

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(views, "with_views", interrupted)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground pytest
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, before))
    code = live.main(["--source", str(video_path), "--no-window", "--output", str(tmp_path / "out.mp4")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err and "AttributeError" not in err
    summary = summary_of(out)
    assert summary["stopped_by"] == "SIGINT" and summary["frames"] == 0
    assert list(tmp_path.iterdir()) == []


def test_photos_without_a_face_are_named(media_dir: Path, tmp_path: Path):
    """A folder of photos: the thorough search finds a tilted face, and one line on stderr (and
    the summary) names the photo with none."""
    folder = tmp_path / "photos"
    folder.mkdir()
    grace = cv2.imread(str(media_dir / "grace_hopper_512x512.jpg"))  # turned by 20 degrees: the video path misses her
    cv2.imwrite(str(folder / "a.jpg"), cv2.warpAffine(grace, cv2.getRotationMatrix2D((256, 256), 20, 1.0), (512, 512),
                                                      borderMode=cv2.BORDER_REFLECT))
    cap = cv2.VideoCapture(str(media_dir / "no_face.mp4"))
    ok, empty = cap.read()
    cap.release()
    assert ok
    cv2.imwrite(str(folder / "b.png"), empty)
    proc = run_cli("runtime", "--source", str(folder), "--no-window", "--jsonl", str(tmp_path / "f.jsonl"))
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(tmp_path / "f.jsonl")
    assert len(records[0]["faces"]) == 1 and records[1]["faces"] == []
    assert "runtime-live: no face found in 1 photo: b.png" in proc.stderr.splitlines()
    assert summary_of(proc.stdout)["photos_without_faces"] == ["b.png"]
    one = run_cli("runtime", "--source", str(folder / "b.png"), "--no-window")
    assert one.returncode == 0, one.stderr
    assert "runtime-live: b.png: no face found" in one.stderr.splitlines()
    assert summary_of(one.stdout)["photos_without_faces"] == ["b.png"] and summary_of(one.stdout)["labels"] == []
