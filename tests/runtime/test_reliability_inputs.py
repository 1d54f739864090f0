"""runtime-live against hostile input: odd names, broken models, out-of-range numbers, pipes that
never open, images that decode wrongly, displays nobody answers. One line, the right exit code, no
traceback, and no file touched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.contract import FER2013_LABELS, ModelSpec
from tests.conftest import ROOT, assert_user_error, foreground_signals, run_cli
from tests.runtime.support import RUNTIME, frames_in, listing


@pytest.fixture(autouse=True)
def _headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


# ---- names that are not UTF-8 (OpenCV itself crashes on them) ------------------------------------------


@pytest.fixture
def bad_names(media_dir: Path, video_path: Path, tmp_path: Path) -> Path:
    """A folder b"photos\\xff" with a non-UTF-8 image, a good one and a junk one; a clip b"clip\\xfe.mp4"."""
    base = os.fsencode(tmp_path)
    folder = base + b"/photos\xff"
    os.mkdir(folder)
    shutil.copy(media_dir / "single_face.jpg", folder + b"/caf\xe9.jpg")
    shutil.copy(media_dir / "multi_face.jpg", folder + b"/group.jpg")
    Path(os.fsdecode(folder + b"/junk\xe9.png")).write_bytes(b"not an image")
    shutil.copy(video_path, base + b"/clip\xfe.mp4")
    return tmp_path


def test_a_folder_with_non_utf8_names(bad_names: Path):
    base = os.fsencode(bad_names)
    proc = subprocess.run([*RUNTIME, "--source", base + b"/photos\xff", "--no-window", "--output", base + b"/o\xfd.jpg",
                           "--jsonl", base + b"/o\xfc.jsonl"], capture_output=True, cwd=ROOT, timeout=120)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "junk" in err  # the junk image is skipped with a warning, the others run
    records = [json.loads(line) for line in Path(os.fsdecode(base + b"/o\xfc.jsonl")).read_text().splitlines()]
    assert [r["file"] for r in records] == ["caf\\xe9.jpg", "group.jpg"]
    assert len(records[0]["faces"]) == 1 and len(records[1]["faces"]) >= 3
    assert cv2.imdecode(np.fromfile(os.fsdecode(base + b"/o\xfd.jpg"), np.uint8), cv2.IMREAD_COLOR) is not None


def test_a_video_with_a_non_utf8_name_into_a_non_utf8_folder(bad_names: Path):
    base = os.fsencode(bad_names)
    out = base + b"/photos\xff/v\xfb.mp4"
    proc = subprocess.run([*RUNTIME, "--source", base + b"/clip\xfe.mp4", "--no-window", "--max-frames", "12",
                           "--output", out], capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert frames_in(out) == 12


# ---- models that load but cannot run -----------------------------------------------------------------------


def tiny_model(path: Path, *, batch: int | str = "N", elem: str = "float", channels: int = 1,
               poison: str | None = None) -> Path:
    """A softmax regression with the contract's metadata; ``poison``: ``nan`` outputs, a ``reshape`` that fails,
    or ``logits`` (no softmax)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    types = {"float": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
    size = 48 * 48 * channels
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.standard_normal((size, 7)) * 1e-3).astype(np.float32), "W")]
    nodes = [helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["x"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["logits"])]
    last = "logits"
    if poison == "nan":
        inits.append(numpy_helper.from_array(np.array([np.nan], np.float32), "NAN"))
        nodes.append(helper.make_node("Mul", ["logits", "NAN"], ["poisoned"]))
        last = "poisoned"
    elif poison == "reshape":
        inits.append(numpy_helper.from_array(np.array([5, -1], np.int64), "SHAPE"))
        nodes.append(helper.make_node("Reshape", ["logits", "SHAPE"], ["odd"]))
        nodes.append(helper.make_node("Reshape", ["odd", "BACK"], ["back"]))
        inits.append(numpy_helper.from_array(np.array([-1, 7], np.int64), "BACK"))
        last = "back"
    if poison == "logits":  # no softmax: scores, not probabilities
        nodes.append(helper.make_node("Identity", [last], ["probs"]))
    else:
        nodes.append(helper.make_node("Softmax", [last], ["probs"], axis=1))
    pixels = helper.make_tensor_value_info("pixels", types[elem], [batch, 48, 48, channels])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 7])
    graph = helper.make_graph(nodes, "tiny", [pixels], [probs], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, ModelSpec(channels=channels).to_metadata())
    onnx.save(model, str(path))
    return path


MODELS = [  # id, tiny_model options, exit code (0: it runs), words of the error line
    ("fixed-batch-1", {"batch": 1}, 0, []),
    ("float16-input", {"elem": "float16"}, 0, []),
    ("nan-output", {"poison": "nan"}, 2, ["nan", "probabilities"]),
    ("logits-not-probabilities", {"poison": "logits"}, 2, ["not probabilities", "softmax"]),
    ("fails-at-inference", {"poison": "reshape"}, 2, ["failed on", "re-export"]),
    ("three-channel", {"channels": 3}, 2, ["3-channel", "grayscale"]),
]


@pytest.mark.parametrize(("options", "code", "words"), [r[1:] for r in MODELS], ids=[r[0] for r in MODELS])
def test_models_that_load_but_cannot_run(options: dict, code: int, words: list[str], media_dir: Path,
                                         tmp_path: Path):
    model = tiny_model(tmp_path / "m.onnx", **options)
    proc = run_cli("runtime", "--source", str(media_dir / "multi_face.jpg"), "--no-window", "--model", str(model),
                   "--jsonl", str(tmp_path / "o.jsonl"), cwd=tmp_path)
    if code:
        assert_user_error(proc, code, "m.onnx", *words)
        assert listing(tmp_path) == ["m.onnx"]
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(record["faces"]) >= 3  # several faces: a batch-1 model is run once per face
    for face in record["faces"]:
        assert abs(sum(face["probs"].values()) - 1) < 1e-2


# ---- numbers, sources and opening ---------------------------------------------------------------------------


NUMBERS = [("--scale-factor", v) for v in ("nan", "inf", "1.0001", "-1")] + [
    ("--margin", "nan"), ("--min-neighbors", "1e20"), ("--threads", "1e20"), ("--threads", "5000"),
    ("--detect-width", "-5"), ("--min-size", "0"), ("--smoothing", "1"), ("--max-frames", "1e3"),
    ("--reconnect", "-1"), ("--detect-every", "0"), ("--open-timeout", "inf"), ("--tilt-deg", "50")]


@pytest.mark.parametrize(("flag", "value"), NUMBERS, ids=[f"{f}={v}" for f, v in NUMBERS])
def test_numbers_are_finite_and_bounded(flag: str, value: str, tmp_path: Path):
    proc = run_cli("runtime", "--source", "demo", "--no-window", flag, value, cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, flag, "in [")
    assert listing(tmp_path) == []


def test_help_gives_every_bound():
    proc = run_cli("runtime", "--help", timeout=60)
    assert proc.returncode == 0
    for flag, _ in NUMBERS:
        block = " ".join(proc.stdout.split(flag, 2)[-1].split("\n  --", 1)[0].split())
        assert "range [" in block or "range (" in block, (flag, block)


@pytest.mark.parametrize("source", ["", "  ", "²", "0x1", "-1"])
def test_odd_source_spellings(source: str, tmp_path: Path):
    proc = run_cli("runtime", "--source", source, "--no-window", cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "source")
    assert listing(tmp_path) == []


def test_a_pipe_with_no_writer_times_out(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe.mp4")
    proc = run_cli("runtime", "--source", str(tmp_path / "pipe.mp4"), "--no-window", "--open-timeout", "1",
                   cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "pipe.mp4", "did not open within 1 s", "--open-timeout")


def test_ctrl_c_while_a_pipe_opens(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe.mp4")
    proc = subprocess.Popen([*RUNTIME, "--source", str(tmp_path / "pipe.mp4"), "--no-window"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=foreground_signals)
    time.sleep(3)  # start-up (model, cascade), then blocked in the open
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]


def test_a_pipe_with_a_writer_is_read(video_path: Path, tmp_path: Path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    feeder = subprocess.Popen(["sh", "-c", f'cat "{video_path}" > "{fifo}"'])
    try:
        proc = run_cli("runtime", "--source", str(fifo), "--no-window", "--max-frames", "10", cwd=tmp_path)
    finally:
        feeder.kill()
        feeder.wait()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["frames"] == 10


# ---- inputs that decoded wrongly ------------------------------------------------------------------------------


def test_a_truncated_jpeg_is_refused_and_skipped_in_a_folder(media_dir: Path, tmp_path: Path):
    data = (media_dir / "single_face.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    proc = run_cli("runtime", "--source", str(tmp_path / "cut.jpg"), "--no-window", cwd=tmp_path)
    assert_user_error(proc, 2, "cut.jpg", "truncated")
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.move(tmp_path / "cut.jpg", folder / "cut.jpg")
    shutil.copy(media_dir / "single_face.jpg", folder / "whole.jpg")
    proc = run_cli("runtime", "--source", str(folder), "--no-window", "--jsonl", str(tmp_path / "o.jsonl"),
                   cwd=tmp_path)
    assert proc.returncode == 0 and "cut.jpg" in proc.stderr and "truncated" in proc.stderr
    assert [json.loads(x)["file"] for x in (tmp_path / "o.jsonl").read_text().splitlines()] == ["whole.jpg"]


def test_a_float_tiff_is_not_a_black_frame(media_dir: Path, tmp_path: Path):
    """A float TIFF holds 0-1 values: the face in it must still be found."""
    gray = cv2.imread(str(media_dir / "single_face.jpg"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    assert cv2.imwrite(str(tmp_path / "face.tif"), gray)
    assert cv2.imread(str(tmp_path / "face.tif"), cv2.IMREAD_UNCHANGED).dtype == np.float32
    proc = run_cli("runtime", "--source", str(tmp_path / "face.tif"), "--no-window", "--output",
                   str(tmp_path / "o.png"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["faces"] == 1
    out = cv2.imread(str(tmp_path / "o.png"))
    assert out.mean() > 40  # not black


def test_sixteen_bit_emoji_composite_like_eight_bit(media_dir: Path, tmp_path: Path):
    from runtime.annotate import default_emoji_dir

    deep = tmp_path / "emoji16"
    deep.mkdir()
    for name in FER2013_LABELS:
        img = cv2.imread(str(default_emoji_dir() / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert cv2.imwrite(str(deep / f"{name}.png"), img.astype(np.uint16) * 257)
    outs = []
    for emoji_dir in (default_emoji_dir(), deep):
        out = tmp_path / f"o{len(outs)}.png"
        proc = run_cli("runtime", "--source", str(media_dir / "single_face.jpg"), "--no-window", "--output", str(out),
                       "--emoji-dir", str(emoji_dir), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(cv2.imread(str(out)).astype(int))
    assert np.abs(outs[0] - outs[1]).max() <= 2


def test_a_sideways_phone_photo_is_turned_upright(media_dir: Path, tmp_path: Path):
    """A JPEG stored sideways with EXIF orientation 6 (as phones write portrait photos)."""
    pil = pytest.importorskip("PIL.Image")
    upright = pil.open(media_dir / "single_face.jpg")
    exif = pil.Exif()
    exif[0x0112] = 6  # orientation: the viewer turns it 90 degrees clockwise
    upright.transpose(pil.Transpose.ROTATE_90).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    proc = run_cli("runtime", "--source", str(tmp_path / "phone.jpg"), "--no-window", "--output",
                   str(tmp_path / "o.png"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["faces"] == 1
    assert cv2.imread(str(tmp_path / "o.png")).shape[:2] == (upright.size[1], upright.size[0])


@pytest.fixture
def not_an_x_server():
    """A local TCP port (display 127.0.0.1:N) that accepts connections and then says nothing: Qt would hang."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    if port < 6000:
        server.close()
        pytest.skip("the free port is below X's 6000 + N range")
    held = []
    threading.Thread(target=lambda: held.extend(iter(lambda: server.accept()[0], None)), daemon=True).start()
    yield f"127.0.0.1:{port - 6000}"
    server.close()


@pytest.mark.parametrize("display", [":97", "localhost:97", "nonsense", "silent-tcp"])
def test_a_display_nobody_answers_is_one_line(display: str, video_path: Path, tmp_path: Path,
                                               request: pytest.FixtureRequest):
    """Qt aborts the process (exit 134), or hangs, on an X server it cannot use: it must be found out first."""
    if display == "silent-tcp":
        display = request.getfixturevalue("not_an_x_server")
    proc = run_cli("runtime", "--source", str(video_path), "--max-frames", "3", env={"DISPLAY": display},
                   cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "no display", "--no-window")


def test_a_camera_index_too_large_for_opencv(tmp_path: Path):
    proc = run_cli("runtime", "--source", "99999999999999999999", "--no-window", cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "no camera at index")


def test_an_emoji_dir_that_is_a_file(tmp_path: Path):
    (tmp_path / "emoji").write_text("not a folder")
    proc = run_cli("runtime", "--source", "demo", "--no-window", "--emoji-dir", str(tmp_path / "emoji"),
                   cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "is a file")


def test_a_model_and_an_emoji_folder_with_non_utf8_names(media_dir: Path, tmp_path: Path):
    from models import DEFAULT_MODEL
    from runtime.annotate import default_emoji_dir

    base = os.fsencode(tmp_path)
    shutil.copy(DEFAULT_MODEL, base + b"/m\xff.onnx")
    shutil.copytree(default_emoji_dir(), os.fsdecode(base + b"/emoji\xfe"))
    proc = subprocess.run([*RUNTIME, "--source", str(media_dir / "single_face.jpg"), "--no-window", "--model",
                           base + b"/m\xff.onnx", "--emoji-dir", base + b"/emoji\xfe", "--output", base + b"/o.png"],
                          capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.decode().splitlines()[-1])["faces"] == 1


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header) with a tiny body."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_one_line(media_dir: Path, tmp_path: Path):
    bomb = _png_header_only(tmp_path / "bomb.png", 60000, 60000)
    proc = run_cli("runtime", "--source", str(bomb), "--no-window", cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "bomb.png", "more pixels than OpenCV decodes")
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.move(bomb, folder / "bomb.png")
    shutil.copy(media_dir / "single_face.jpg", folder / "face.jpg")
    os.mkfifo(folder / "pipe.jpg")  # never opened: a folder's pipes are passed over
    proc = run_cli("runtime", "--source", str(folder), "--no-window", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and "bomb.png" in proc.stderr, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["frames"] == 1


@pytest.mark.parametrize("flag", ["--output", "--jsonl", "--model", "--emoji-dir"])
def test_an_empty_path_is_refused(flag: str, tmp_path: Path):
    proc = run_cli("runtime", "--source", "demo", "--no-window", flag, "", cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, flag, "empty path")
    assert listing(tmp_path) == []


def test_a_folder_as_json_lines_is_refused(tmp_path: Path):
    (tmp_path / "out").mkdir()
    proc = run_cli("runtime", "--source", "demo", "--no-window", "--jsonl", str(tmp_path / "out"), cwd=tmp_path,
                   timeout=60)
    assert_user_error(proc, 2, "is a folder")
    assert listing(tmp_path) == ["out"] and listing(tmp_path / "out") == []


@pytest.mark.parametrize("what", ["folder", "device"])
def test_a_model_that_is_not_a_file(what: str, tmp_path: Path):
    model = tmp_path / "m.onnx" if what == "folder" else Path("/dev/zero")
    if what == "folder":
        model.mkdir()
    proc = run_cli("runtime", "--source", "demo", "--no-window", "--model", str(model), cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "not a regular file")


def test_a_newline_in_a_name_keeps_the_error_on_one_line(tmp_path: Path):
    proc = run_cli("runtime", "--source", str(tmp_path / "no\nsuch.jpg"), "--no-window", cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "no\\nsuch.jpg", "does not exist")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_pipe_whose_writer_stalls_mid_stream(video_frames: tuple, tmp_path: Path):
    """A writer that sends part of a video and then goes quiet: Ctrl-C still stops the run at once
    (the frames are decoded on their own thread), and the outputs are finalised."""
    clip = tmp_path / "clip.mkv"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 24, (640, 360))
    for frame in video_frames[:120]:
        writer.write(frame)
    writer.release()
    fifo = tmp_path / "pipe.mkv"
    os.mkfifo(fifo)
    feeder = subprocess.Popen(["sh", "-c", f'head -c {clip.stat().st_size // 2} "{clip}"; sleep 600'],
                              stdout=subprocess.PIPE)
    relay = subprocess.Popen(["sh", "-c", f'exec cat > "{fifo}"'], stdin=feeder.stdout)
    out = tmp_path / "o.mkv"
    proc = subprocess.Popen([*RUNTIME, "--source", str(fifo), "--no-window", "--output", str(out), "--jsonl",
                             str(tmp_path / "o.jsonl")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, preexec_fn=foreground_signals)
    try:
        deadline = time.monotonic() + 90
        while not [p for p in tmp_path.glob(".o.jsonl.partial-*") if p.read_text().count("\n") >= 10]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.05)
        time.sleep(2.0)  # every frame sent is processed: the run now waits for a writer that says nothing
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - sent < 10
    finally:
        for p in (proc, relay, feeder):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert json.loads(stdout.splitlines()[-1])["stopped_by"] == "SIGINT"
    assert frames_in(out) >= 10 and out.exists()
