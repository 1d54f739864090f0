"""runtime-batch: the records of runtime-live per video, the local and Ray engines agreeing, resuming, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.batch import Job, Settings, plan, run_batch
from runtime.cli_support import UserError
from tests.conftest import ROOT, assert_user_error, run_cli


def summary_of(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def archive(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two videos (links to the shared media, never copies): a face-free one first, then the clip."""
    folder = tmp_path_factory.mktemp("archive")
    (folder / "a_noface.mp4").symlink_to(media_dir / "no_face.mp4")
    (folder / "b_clip.mp4").symlink_to(media_dir / "WolfgangLanger_Pexels.mp4")
    return folder


@pytest.fixture(scope="module")
def live_run(video_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runtime-live's own --jsonl and --csv of the clip."""
    out = tmp_path_factory.mktemp("live")
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--jsonl", str(out / "clip.jsonl"),
                   "--csv", str(out / "clip.csv"), env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def local_run(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """runtime-batch on the folder, the local engine, two workers, through the command line."""
    out = tmp_path_factory.mktemp("local") / "out"
    proc = run_cli("runtime.batch", str(archive), "--out", str(out), "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


# ---- what to process ------------------------------------------------------------------------------


def test_plan_names_results_after_the_videos(tmp_path: Path) -> None:
    (tmp_path / "in" / "day2").mkdir(parents=True)
    for name in ("in/one.mp4", "in/day2/two.MKV", "in/notes.txt", "in/photo.jpg", "three.avi"):
        (tmp_path / name).write_bytes(b"")
    jobs = plan([tmp_path / "in", tmp_path / "three.avi"], tmp_path / "out")
    assert [(Path(j.video).name, Path(j.jsonl).relative_to(tmp_path / "out").as_posix()) for j in jobs] == [
        ("two.MKV", "day2/two.jsonl"), ("one.mp4", "one.jsonl"), ("three.avi", "three.jsonl")]
    assert all(j.csv == j.jsonl[:-len(".jsonl")] + ".csv" for j in jobs)
    assert all(j.csv == "" for j in plan([tmp_path / "three.avi"], tmp_path / "out", csv=False))


@pytest.mark.parametrize("case, needle", [("missing", "does not exist"), ("photo", "is a photo"),
                                          ("empty", "holds no video"), ("twice", "would both write")])
def test_plan_refuses(tmp_path: Path, case: str, needle: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "clip.mp4").write_bytes(b"")
    (tmp_path / "b" / "clip.mp4").write_bytes(b"")
    (tmp_path / "p.jpg").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    inputs = {"missing": [tmp_path / "nope.mp4"], "photo": [tmp_path / "p.jpg"], "empty": [tmp_path / "empty"],
              "twice": [tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"]}[case]
    with pytest.raises(UserError, match=needle):
        plan(inputs, tmp_path / "out")


def test_batched_faces_give_the_answers_of_single_faces(classifier, video_frames: tuple, detector) -> None:
    """The design's premise: a face's probabilities do not depend on the other faces of its model call."""
    crops = np.concatenate([classifier.crop(f[..., 1], detector.detect(f).xyxy).copy() for f in video_frames[::15]])
    assert len(crops) >= 20
    one_by_one = np.concatenate([classifier.predict(crops[i:i + 1]) for i in range(len(crops))])
    assert np.array_equal(classifier.predict(crops), one_by_one)
    assert np.array_equal(np.concatenate([classifier.predict(crops[:7]), classifier.predict(crops[7:])]), one_by_one)


# ---- the records of runtime-live ------------------------------------------------------------------


def test_local_engine_writes_runtime_lives_records(local_run, live_run: Path) -> None:
    proc, out = local_run
    assert (out / "b_clip.jsonl").read_bytes() == (live_run / "clip.jsonl").read_bytes()
    assert (out / "b_clip.csv").read_bytes() == (live_run / "clip.csv").read_bytes()
    lines = (out / "a_noface.jsonl").read_text().splitlines()
    assert len(lines) > 50 and all(json.loads(line)["faces"] == [] for line in lines)
    assert (out / "a_noface.csv").read_text().startswith("frame,timestamp_s,file,track_id,")
    summary = summary_of(proc.stdout)
    assert summary["processed"] == 2 and summary["failed"] == [] and summary["frames"] == 472 + len(lines)
    assert summary["model_calls"] <= 472 // 32 + 2  # faces batched across frames: a call per chunk
    assert summary["engine"] == "local" and summary["workers"] == 2
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(out)) == ["a_noface.csv", "a_noface.jsonl", "b_clip.csv", "b_clip.jsonl"]


def test_chunk_size_changes_no_record(video_path: Path, live_run: Path, tmp_path: Path) -> None:
    """In-process (one worker): a chunk of 5 frames, and of 1, give the same lines as runtime-live."""
    for chunk in (1, 5):
        jobs = plan([video_path], tmp_path / str(chunk), csv=False)
        (tmp_path / str(chunk)).mkdir()
        from runtime.batch import VideoWorker

        result = VideoWorker(Settings(chunk=chunk, threads=1)).run(jobs[0])
        assert result["error"] == "" and result["frames"] == 472
        assert result["model_calls"] == (472 if chunk == 1 else -(-472 // 5))
        assert Path(jobs[0].jsonl).read_bytes() == (live_run / "clip.jsonl").read_bytes()


# ---- resuming ---------------------------------------------------------------------------------------


def test_a_second_run_redoes_only_what_is_unfinished(archive: Path, local_run, tmp_path: Path) -> None:
    _, done = local_run
    out = tmp_path / "out"
    out.mkdir()
    for name in ("b_clip.jsonl", "b_clip.csv"):
        (out / name).write_bytes((done / name).read_bytes())
    (out / "a_noface.jsonl").write_bytes((done / "a_noface.jsonl").read_bytes())  # killed before its .csv
    (out / ".a_noface.jsonl.partial-x1y2.jsonl").write_text('{"frame": 0')  # a killed run's partial file
    before = os.stat(out / "b_clip.jsonl")
    proc = run_cli("runtime.batch", str(archive), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = summary_of(proc.stdout)
    assert (summary["videos"], summary["processed"], summary["skipped_finished"]) == (2, 1, 1)
    assert "runtime-batch: 2 videos, 1 already finished, 1 to do on the local engine" in proc.stderr
    after = os.stat(out / "b_clip.jsonl")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not redone
    assert sorted(os.listdir(out)) == sorted(os.listdir(done))  # the partial file is gone
    for name in os.listdir(done):
        assert (out / name).read_bytes() == (done / name).read_bytes(), name


def test_a_killed_batch_resumes_without_redoing_finished_videos(archive: Path, local_run, tmp_path: Path) -> None:
    _, done = local_run
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.batch", str(archive), "--out", str(out), "--workers", "1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "a_noface.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / "a_noface.csv").exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ""
        time.sleep(0.5)  # well into the clip
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its pool, as a crash or the OOM killer would
        proc.wait()
        proc.stderr.close()
    assert not (out / "b_clip.jsonl").exists()  # unfinished: no result under its name, whole or not
    finished = os.stat(out / "a_noface.jsonl")
    again = run_cli("runtime.batch", str(archive), "--out", str(out))
    assert again.returncode == 0, again.stderr[-2000:]
    summary = summary_of(again.stdout)
    assert (summary["processed"], summary["skipped_finished"]) == (1, 1)
    assert os.stat(out / "a_noface.jsonl").st_mtime_ns == finished.st_mtime_ns
    assert sorted(os.listdir(out)) == sorted(os.listdir(done))
    for name in os.listdir(done):
        assert (out / name).read_bytes() == (done / name).read_bytes(), name


# ---- Ray ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with two CPUs (skipped without the [ray] extra)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_agrees_with_the_local_engine(ray_local, archive: Path, local_run, tmp_path: Path) -> None:
    _, local_out = local_run
    jobs = plan([archive], tmp_path / "out")
    (tmp_path / "out").mkdir()
    seen: list[dict] = []
    summary = run_batch(jobs, Settings(), engine="ray", workers=2, report=lambda r, i, n: seen.append(r))
    assert summary["processed"] == 2 and summary["failed"] == [] and summary["workers"] == 2, summary
    assert sorted(Path(r["video"]).name for r in seen) == ["a_noface.mp4", "b_clip.mp4"]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(local_out))
    for name in os.listdir(local_out):
        assert (tmp_path / "out" / name).read_bytes() == (local_out / name).read_bytes(), name
    again = run_batch(jobs, Settings(), engine="ray", workers=2)  # all finished: nothing to do, Ray not asked
    assert (again["processed"], again["skipped_finished"]) == (0, 2)


def test_a_video_that_fails_is_reported_and_the_others_go_on(tmp_path: Path, media_dir: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.mp4").write_bytes(b"not a video at all")
    (tmp_path / "in" / "ok.mp4").symlink_to(media_dir / "no_face.mp4")
    proc = run_cli("runtime.batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--workers", "1")
    assert proc.returncode == 1, proc.stderr[-2000:]
    summary = summary_of(proc.stdout)
    assert summary["processed"] == 1 and [Path(f["video"]).name for f in summary["failed"]] == ["broken.mp4"]
    assert "does not decode" in summary["failed"][0]["error"]
    assert sorted(os.listdir(tmp_path / "out")) == ["ok.csv", "ok.jsonl"]
    assert "Traceback" not in proc.stderr


# ---- the command line ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["nope.mp4", "--out", "{tmp}/o"], "does not exist"),
    (["{media}/single_face.jpg", "--out", "{tmp}/o"], "is a photo"),
    (["{media}/no_face.mp4", "--out", "{tmp}/o", "--address", "auto"], "--engine ray"),
    (["{media}/no_face.mp4", "--out", "{media}/no_face.mp4"], "not a folder"),
    (["{media}/no_face.mp4", "--out", "{tmp}/o", "--workers", "-1"], "out of range"),
    (["{media}/no_face.mp4", "--out", "{tmp}/o", "--model", "{tmp}/none.onnx"], "does not exist"),
    (["{media}/no_face.mp4"], "--out"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path, media_dir: Path) -> None:
    argv = [a.format(tmp=tmp_path, media=media_dir) for a in args]
    proc = run_cli("runtime.batch", *argv)
    assert_user_error(proc, 2, needle)


def test_version_and_console_script() -> None:
    proc = run_cli("runtime.batch", "--version")
    assert proc.returncode == 0 and proc.stdout.startswith("runtime-batch (emocam) ")
    from runtime import console

    assert callable(console.runtime_batch)


def test_job_is_finished_only_when_every_result_is_there(tmp_path: Path) -> None:
    job = Job("v.mp4", str(tmp_path / "v.jsonl"), str(tmp_path / "v.csv"))
    assert not job.finished()
    (tmp_path / "v.jsonl").write_text("{}\n")
    assert not job.finished()  # the .csv is renamed after the .jsonl: a kill between leaves it unfinished
    (tmp_path / "v.csv").write_text("frame\n")
    assert job.finished()
    assert Job("v.mp4", str(tmp_path / "v.jsonl")).finished()  # --no-csv


def test_engine_ray_without_ray_is_one_line(tmp_path: Path, media_dir: Path) -> None:
    """As on an install without the [ray] extra: the command names the pip install, exit 2."""
    code = ("import sys\nsys.modules['ray'] = None\nfrom runtime import console\n"
            "sys.argv = ['runtime-batch', *sys.argv[1:]]\nsys.exit(console.runtime_batch())")
    proc = subprocess.run([sys.executable, "-c", code, str(media_dir / "no_face.mp4"), "--out", str(tmp_path / "o"),
                           "--engine", "ray"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert_user_error(proc, 2, "needs Ray", 'pip install "emocam[ray]"')
    assert not (tmp_path / "o").exists()
