"""runtime-live against a hostile user and a hostile machine: no data lost, no traceback.

Each row is a case from the reliability issue, run for real: real files, real signals, a real full
disk (a small tmpfs in a private mount namespace), a real file-size limit, real pipes. Each asserts
the exit code, the one error line, and the state of every file afterwards.
"""

from __future__ import annotations

import hashlib
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

from runtime.contract import FER2013_LABELS, ModelSpec
from runtime.faces import Faces
from tests.conftest import ROOT, assert_user_error, run_cli

RUNTIME = [sys.executable, "-m", "runtime"]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    """Every name in ``folder`` (hidden temporary files included), as printable text."""
    return sorted(os.fsdecode(name) for name in os.listdir(os.fsencode(folder)))


def frames_in(path: Path | bytes) -> int:
    """Frames that decode from a video file (any name: read through /proc/self/fd)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        cap = cv2.VideoCapture(f"/proc/self/fd/{fd}")
        n = 0
        while cap.grab():
            n += 1
        cap.release()
    finally:
        os.close(fd)
    return n


def shell(script: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a bash script with ``runtime-live`` meaning this interpreter's ``python -m runtime``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    prelude = f'runtime-live() {{ "{sys.executable}" -m runtime "$@"; }}\n'
    return subprocess.run(["bash", "-c", prelude + script], capture_output=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(autouse=True)
def _headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


# ---- an output that is the input ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["output-is-source", "jsonl-is-source", "symlink-to-source", "hardlink-to-source",
                                 "output-is-an-image-of-the-source-folder", "jsonl-hardlinked-to-output"])
def test_an_output_that_is_the_source_is_refused(how: str, video_path: Path, media_dir: Path, tmp_path: Path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(video_path, clip)
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(media_dir / "single_face.jpg", folder / "a.jpg")
    args = ["--source", str(clip), "--output", str(tmp_path / "out.mp4")]
    if how == "output-is-source":
        args = ["--source", str(clip), "--output", str(clip)]
    elif how == "jsonl-is-source":
        args = ["--source", str(clip), "--jsonl", str(clip)]
    elif how == "symlink-to-source":
        (tmp_path / "link.mp4").symlink_to(clip)
        args = ["--source", str(tmp_path / "link.mp4"), "--output", str(clip)]
    elif how == "hardlink-to-source":
        os.link(clip, tmp_path / "hard.mp4")
        args = ["--source", str(clip), "--output", str(tmp_path / "hard.mp4")]
    elif how == "output-is-an-image-of-the-source-folder":
        args = ["--source", str(folder), "--output", str(folder / "a.jpg")]
    elif how == "jsonl-hardlinked-to-output":
        (tmp_path / "out.mp4").write_bytes(b"earlier result")
        os.link(tmp_path / "out.mp4", tmp_path / "out.jsonl")
        args += ["--jsonl", str(tmp_path / "out.jsonl")]
    before = {name: digest(tmp_path / name) for name in ("clip.mp4", "photos/a.jpg")}
    names = listing(tmp_path)
    proc = run_cli("runtime", *args, "--no-window", "--max-frames", "5", cwd=tmp_path)
    assert_user_error(proc, 2, "same file" if how == "jsonl-hardlinked-to-output" else "is the source file")
    assert {name: digest(tmp_path / name) for name in before} == before
    assert listing(tmp_path) == names


# ---- a run that fails or is killed never destroys an earlier result -------------------------------


def test_a_failed_run_keeps_the_earlier_results(tmp_path: Path):
    """A 1x1 image cannot go into MPEG-4: the run fails, and out.mp4 / out.jsonl are as they were."""
    cv2.imwrite(str(tmp_path / "dot.png"), np.full((1, 1, 3), 200, np.uint8))
    (tmp_path / "out.mp4").write_bytes(b"an earlier, good video")
    (tmp_path / "out.jsonl").write_text('{"frame": 0}\n')
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    proc = run_cli("runtime", "--source", str(tmp_path / "dot.png"), "--no-window", "--output",
                   str(tmp_path / "out.mp4"), "--jsonl", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert_user_error(proc, 1, "1x1", "too small", ".avi")
    assert "wrote" not in proc.stderr
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before
    assert listing(tmp_path) == sorted(before)


def test_an_oversized_frame_names_the_real_cause(tmp_path: Path):
    cv2.imwrite(str(tmp_path / "wide.png"), np.full((60, 9000, 3), 120, np.uint8))
    proc = run_cli("runtime", "--source", str(tmp_path / "wide.png"), "--no-window", "--output",
                   str(tmp_path / "out.mp4"), cwd=tmp_path)
    assert_user_error(proc, 1, "9000x60", "too large", ".avi")
    assert listing(tmp_path) == ["wide.png"]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_sigkill_keeps_the_earlier_result(suffix: str, video_path: Path, tmp_path: Path):
    """SIGKILL cannot be caught: the destination keeps its earlier content, and the partial file
    beside it plays for .mkv (MP4 writes its index last, so a partial .mp4 does not)."""
    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"an earlier, good result")
    before = digest(out)
    proc = subprocess.Popen([*RUNTIME, "--source", str(video_path), "--no-window", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        while not [p for p in tmp_path.glob(f".{out.name}.partial-*") if p.stat().st_size > 200_000]:
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert digest(out) == before
    (partial,) = tmp_path.glob(f".{out.name}.partial-*")
    if suffix == ".mkv":
        assert frames_in(partial) >= 10
    else:
        assert frames_in(partial) == 0


# ---- a full disk, a file-size limit, a folder removed mid-run ----------------------------------------


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = shell('mkdir -p m && unshare -m sh -c "mount -t tmpfs -o size=64k tmpfs m"', tmp_path)
    return probe.returncode == 0


FULL_DISK = [  # id, tmpfs size, output names, source
    ("video-and-jsonl", "300k", ["o.mp4", "o.jsonl"], "{video}"),
    ("jsonl", "40k", ["o.jsonl"], "{video}"),
    ("image", "40k", ["o.png"], "demo"),
]


@pytest.mark.parametrize(("size", "names", "source"), [r[1:] for r in FULL_DISK], ids=[r[0] for r in FULL_DISK])
def test_full_disk(size: str, names: list[str], source: str, video_path: Path, tmp_path: Path):
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("needs root and unshare to mount a small tmpfs in a private mount namespace")
    flags = " ".join(f"--{'jsonl' if n.endswith('.jsonl') else 'output'} disk/{n}" for n in names)
    script = (f'mkdir -p disk && unshare -m bash -c \'mount -t tmpfs -o size={size} tmpfs disk && '
              f'runtime-live --source {source.format(video=video_path)} --no-window {flags}; code=$?; '
              f'ls -A disk > listing; exit $code\'')
    proc = shell(script, tmp_path)
    err = proc.stderr.decode()
    assert_user_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", err), 1, "no space left on device")
    assert "wrote" not in err
    assert (tmp_path / "listing").read_text() == "", "a file was left on the full disk"


def test_file_size_limit(video_path: Path, tmp_path: Path):
    proc = shell(f"ulimit -f 200; runtime-live --source {video_path} --no-window --output o.mp4 --jsonl o.jsonl",
                 tmp_path)
    err = proc.stderr.decode()
    assert_user_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", err), 1, "ulimit -f")
    assert "wrote" not in err
    assert listing(tmp_path) == []


def test_output_folder_removed_mid_run(video_path: Path, tmp_path: Path):
    folder = tmp_path / "out"
    folder.mkdir()
    proc = subprocess.Popen([*RUNTIME, "--source", str(video_path), "--no-window", "--output", str(folder / "o.mp4"),
                             "--jsonl", str(folder / "o.jsonl")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    deadline = time.monotonic() + 90
    while not list(folder.glob(".o.mp4.partial-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.02)
    shutil.rmtree(folder)
    stdout, stderr = proc.communicate(timeout=120)
    assert_user_error(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), 1, "removed")
    assert "wrote" not in stderr and stdout == ""
    assert not folder.exists()


# ---- JSON Lines: whole lines, strict JSON ----------------------------------------------------------------


def test_records_are_strict_json_when_probabilities_are_not_finite():
    probs = np.full((2, 7), 1 / 7, np.float32)
    probs[1, 3] = np.nan
    records = Faces(np.array([[0, 0, 10, 10], [5, 5, 20, 20]]), probs, FER2013_LABELS).to_records()
    text = json.dumps(records, allow_nan=False)  # raises on a bare NaN
    back = json.loads(text)
    assert back[0]["label"] in FER2013_LABELS and back[1]["label"] is None and back[1]["probs"]["happy"] is None


def test_a_failed_line_is_cut_off_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A write that fails half-way leaves the file ending after the last whole line."""
    from runtime import outputs

    writer = outputs.JsonlWriter(tmp_path / "o.jsonl")
    writer.write({"frame": 0})
    real = os.write
    calls = {"n": 0}

    def torn(fd: int, data: bytes) -> int:  # the first chunk goes out, then the disk is full
        calls["n"] += 1
        if calls["n"] == 1:
            return real(fd, bytes(data)[:7])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, "write", torn)
    with pytest.raises(outputs.OutputError, match="no space left"):
        writer.write({"frame": 1, "faces": ["x" * 100]})
    monkeypatch.setattr(outputs.os, "write", real)
    (partial,) = tmp_path.glob(".o.jsonl.partial-*")
    assert partial.read_text() == '{"frame":0}\n'
    writer.discard()
    assert listing(tmp_path) == []


# ---- broken pipes and closed streams --------------------------------------------------------------------


PIPES = [  # id, the shell line, the exit codes allowed
    ("stdout-into-true", "runtime-live --source {video} --no-window --output v.avi --max-frames 30 | true", (0, 141)),
    ("jsonl-stdout-into-head", "runtime-live --source {video} --no-window --output v.avi --max-frames 200 "
                               "--jsonl /dev/stdout | head -1 > first.jsonl", (141,)),
    ("stderr-closed", "runtime-live --source {video} --no-window --output v.avi --max-frames 30 2>&-", (0,)),
    ("stdout-closed", "runtime-live --source {video} --no-window --output v.avi --max-frames 30 >&-", (0,)),
]


@pytest.mark.parametrize(("line", "codes"), [r[1:] for r in PIPES], ids=[r[0] for r in PIPES])
def test_broken_and_closed_streams(line: str, codes: tuple, video_path: Path, tmp_path: Path):
    proc = shell(f"set -o pipefail; {line.format(video=video_path)}", tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode in codes, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
    assert frames_in(tmp_path / "v.avi") >= 1, "the video was not finalised"
    assert not list(tmp_path.glob(".*partial*")), "a temporary file was left"
    if (tmp_path / "first.jsonl").exists():
        assert json.loads((tmp_path / "first.jsonl").read_text())["frame"] == 0
    assert Path("/dev/stdout").is_symlink() or not Path("/dev/stdout").exists() or os.name != "posix"


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
    ("--reconnect", "-1"), ("--detect-every", "0"), ("--open-timeout", "inf")]


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
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
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


def test_json_lines_to_a_stream_are_streamed(video_path: Path, tmp_path: Path):
    """``--jsonl /dev/stdout`` writes to the stream (it is never renamed over)."""
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--max-frames", "3", "--jsonl", "/dev/stdout",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert [json.loads(x)["frame"] for x in lines[:3]] == [0, 1, 2] and json.loads(lines[3])["frames"] == 3
    assert Path("/dev/stdout").is_symlink()
    assert listing(tmp_path) == []


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


@pytest.mark.parametrize("display", [":97", "localhost:97", "nonsense"])
def test_a_display_nobody_answers_is_one_line(display: str, video_path: Path, tmp_path: Path):
    """Qt aborts the process (exit 134) on an X server it cannot reach: it must be found out first."""
    proc = run_cli("runtime", "--source", str(video_path), "--max-frames", "3", env={"DISPLAY": display},
                   cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "no display", "--no-window")


def test_a_camera_index_too_large_for_opencv(tmp_path: Path):
    proc = run_cli("runtime", "--source", "99999999999999999999", "--no-window", cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "no camera at index")


def test_json_lines_into_a_pipe_with_no_reader(video_path: Path, tmp_path: Path):
    """Opening a FIFO for writing waits for a reader, where no signal ends the wait: refused at once."""
    os.mkfifo(tmp_path / "lines")
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--max-frames", "3", "--jsonl",
                   str(tmp_path / "lines"), cwd=tmp_path, timeout=60)
    assert_user_error(proc, 1, "no reader")
    assert listing(tmp_path) == ["lines"]


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGALRM, signal.SIGXCPU], ids=lambda s: s.name)
def test_other_catchable_signals_finalise(sig: signal.Signals, video_path: Path, tmp_path: Path):
    out = tmp_path / "o.mp4"
    proc = subprocess.Popen([*RUNTIME, "--source", str(video_path), "--no-window", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 90
    while not [p for p in tmp_path.glob(".o.mp4.partial-*") if p.stat().st_size > 50_000]:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the signal"
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert json.loads(stdout.splitlines()[-1])["stopped_by"] == sig.name
    assert frames_in(out) >= 5 and listing(tmp_path) == ["o.mp4"]


@pytest.mark.parametrize("flag", ["--output", "--source", "--model", "--emoji-dir", "--jsonl"])
def test_a_name_too_long_for_the_file_system(flag: str, tmp_path: Path):
    name = str(tmp_path / ("a" * 260 + (".jpg" if flag == "--output" else "")))
    args = ["--source", "demo", "--no-window", flag, name] if flag != "--source" else ["--source", name, "--no-window"]
    proc = run_cli("runtime", *args, cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "file name too long")
    assert listing(tmp_path) == []


def test_a_long_output_name_that_fits_is_written(tmp_path: Path):
    """The temporary file's name must not be what makes a 250-byte output name fail."""
    out = tmp_path / ("b" * 246 + ".jpg")
    proc = run_cli("runtime", "--source", "demo", "--no-window", "--output", str(out), cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert listing(tmp_path) == [out.name] and cv2.imread(str(out)) is not None


def test_an_emoji_dir_that_is_a_file(tmp_path: Path):
    (tmp_path / "emoji").write_text("not a folder")
    proc = run_cli("runtime", "--source", "demo", "--no-window", "--emoji-dir", str(tmp_path / "emoji"),
                   cwd=tmp_path, timeout=60)
    assert_user_error(proc, 2, "is a file")
