"""Many streams in one process: one model call per tick, each stream's records those of a run on it alone."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runtime.multi import several_sources, split_sources
from runtime.sources import Frame, FrameSource
from runtime.streams import MultiStream, Reader, Stream, per_stream_path, stream_names, tile
from tests.conftest import assert_user_error, run_cli
from tests.runtime.test_live import xvfb_display  # noqa: F401  (the virtual X server fixture)

HEADLESS = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _pipeline(classifier, detector):
    from runtime.pipeline import Pipeline

    return Pipeline(detector=detector, classifier=classifier)


def _run_to_end(multi) -> None:
    """Tick ``multi`` until every stream has ended, then close it."""
    try:
        multi.start()
        while multi.tick():
            pass
    finally:
        multi.close()


class CountingClassifier:
    """The shared classifier, its model calls counted (every attribute passes through)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.calls: list[int] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        return self._inner.predict(batch)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def test_two_streams_one_model_call_per_tick_same_results_as_separate_runs(classifier, detector,
                                                                            video_path: Path, media_dir: Path) -> None:
    from runtime.records import frame_record
    from runtime.sources import open_source

    limit = 120
    paths = [video_path, media_dir / "no_face.mp4", video_path]
    separate = []
    for path in paths:  # each source alone, frame by frame (Pipeline.process: a model call per frame)
        pipe = _pipeline(classifier, detector)
        with open_source(str(path)) as source:
            records = [frame_record(f, pipe.process(f.image)) for _, f in zip(range(limit), source, strict=False)]
        pipe.close()
        separate.append(records)
    counting = CountingClassifier(classifier)
    streams = [Stream(name, open_source(str(path)), _pipeline(counting, detector))
               for name, path in zip(["a", "b", "c"], paths, strict=True)]
    multi = MultiStream(streams, max_frames=limit)
    together: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
    ticks = 0
    try:
        multi.start()
        while batch := multi.tick():
            ticks += 1
            calls_before = len(counting.calls)
            for stream, frame, faces in batch:
                together[stream.name].append(frame_record(frame, faces))
            assert len(counting.calls) == calls_before  # finishing a tick calls the model no more
    finally:
        multi.close()
    assert ticks == limit == multi.ticks
    assert len(counting.calls) == ticks == multi.model_calls  # exactly one model call per tick
    assert counting.calls[0] == 2  # the clip's face twice, in one call
    for name, records in zip("abc", separate, strict=True):
        assert together[name] == records, name
    assert [s.frames for s in streams] == [limit, 95, limit]


def test_a_stream_that_ends_leaves_the_others_going(classifier, detector, video_path: Path, media_dir: Path) -> None:
    from runtime.sources import open_source

    streams = [Stream("clip", open_source(str(video_path)), _pipeline(classifier, detector)),
               Stream("none", open_source(str(media_dir / "no_face.mp4")), _pipeline(classifier, detector))]
    multi = MultiStream(streams, max_frames=100)
    _run_to_end(multi)
    assert (streams[0].frames, streams[1].frames) == (100, 95)
    assert (streams[0].stopped_by, streams[1].stopped_by) == ("max frames", "end of source")
    assert multi.ticks == 100 and multi.faces_per_call[-1] == 1


class FastLive(FrameSource):
    """A live source that makes frames faster than they are taken."""

    live = True
    description = "fast live"

    def __init__(self, count: int) -> None:
        self.count = count

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.count):
            time.sleep(0.001)
            yield Frame(i, i / 1000, np.full((8, 8, 3), i % 256, np.uint8))


def test_a_live_reader_keeps_only_the_newest_frame() -> None:
    wake = threading.Event()
    reader = Reader(FastLive(200), wake)
    time.sleep(0.3)  # the source has ended meanwhile; nothing was taken
    frame = reader.take(wait=False)
    assert frame.index == 199 and reader.dropped == 199
    assert reader.take(wait=False) is not None  # the end mark
    reader.close()


def test_names_patterns_and_command_lines(tmp_path: Path) -> None:
    assert stream_names(["/v/clip.mp4", "0", "rtsp://cam.local:554/x", "/w/clip.mp4", "a b.mkv"]) == [
        "clip", "cam0", "cam.local", "clip-2", "a_b"]
    assert per_stream_path(Path("o/out-{stream}.mp4"), "cam0", ".mp4") == Path("o/out-cam0.mp4")
    assert per_stream_path(tmp_path, "cam0", ".jsonl") == tmp_path / "cam0.jsonl"
    assert per_stream_path(tmp_path / "all.jsonl", "cam0", ".jsonl") == tmp_path / "all.jsonl"
    assert several_sources(["--source", "a", "--source=b"]) and not several_sources(["--source", "a"])
    assert split_sources(["--source", "a", "--no-window", "--source", "b"]) == (
        ["a", "b"], ["--source", "a", "--no-window"])
    view = tile([np.zeros((360, 640, 3), np.uint8), None, np.zeros((100, 100), np.uint8)], ["a", "b", "c"], width=320)
    assert view.shape == (2 * 180, 2 * 320, 3)


# ---- runtime-live --source A --source B ---------------------------------------------------------------


def test_cli_two_streams_match_runtime_live_alone(video_path: Path, media_dir: Path, tmp_path: Path) -> None:
    alone = tmp_path / "alone.jsonl"
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--jsonl", str(alone), env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (tmp_path / "per").mkdir()
    proc = run_cli("runtime", "--source", str(video_path), "--source", str(media_dir / "no_face.mp4"), "--no-window",
                   "--jsonl", str(tmp_path / "per"), "--csv", str(tmp_path / "all.csv"),
                   "--output", str(tmp_path / "out-{stream}.avi"), env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["streams"]) == {"WolfgangLanger_Pexels", "no_face"}
    clip = summary["streams"]["WolfgangLanger_Pexels"]
    assert clip["frames"] == 472 and summary["streams"]["no_face"]["frames"] == 95
    assert summary["ticks"] == 472 and summary["model_calls"] == 472 and summary["model_calls_per_tick"] == 1.0
    lines = read_jsonl(tmp_path / "per" / "WolfgangLanger_Pexels.jsonl")
    assert all(line.pop("stream") == "WolfgangLanger_Pexels" for line in lines)
    assert lines == read_jsonl(alone)
    assert all(json.loads(x)["stream"] == "no_face" for x in (tmp_path / "per" / "no_face.jsonl").open())
    import pandas as pd

    table = pd.read_csv(tmp_path / "all.csv")
    assert list(table.columns[:3]) == ["stream", "frame", "timestamp_s"]
    assert set(table["stream"]) == {"WolfgangLanger_Pexels"}  # no_face has no face: no row
    assert len(table) == clip["faces"]
    assert sorted(p.name for p in tmp_path.glob("out-*.avi")) == ["out-WolfgangLanger_Pexels.avi", "out-no_face.avi"]


@pytest.mark.parametrize("extra, needle", [
    (["--output", "{tmp}/one.mp4"], "pattern"),
    (["--output-dir", "{tmp}"], "one source"),
    (["--jsonl", "{tmp}/nowhere/x-{{stream}}.jsonl"], "does not exist"),
])
def test_cli_refusals_are_one_line(extra: list[str], needle: str, tmp_path: Path, media_dir: Path) -> None:
    argv = ["--source", str(media_dir / "no_face.mp4"), "--source", str(media_dir / "no_face.mp4"), "--no-window",
            *(a.format(tmp=tmp_path) for a in extra)]
    assert_user_error(run_cli("runtime", *argv, env=HEADLESS), 2, needle)


def test_cli_a_photo_stream_gets_runtime_lives_photo_search(media_dir: Path, tmp_path: Path) -> None:
    """A photo beside a video: the photo's faces are those runtime-live finds on it alone (its thorough search)."""
    photo = media_dir / "multi_face.jpg"
    proc = run_cli("runtime", "--source", str(photo), "--no-window", "--jsonl", str(tmp_path / "alone.jsonl"),
                   "--output", str(tmp_path / "alone.jpg"), env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("runtime", "--source", str(photo), "--source", str(media_dir / "no_face.mp4"), "--no-window",
                   "--jsonl", str(tmp_path / "all.jsonl"), "--max-frames", "5", env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = read_jsonl(tmp_path / "all.jsonl")
    photo_lines = [line for line in lines if line.pop("stream") == "multi_face"]
    assert photo_lines == read_jsonl(tmp_path / "alone.jsonl")
    assert len(photo_lines[0]["faces"]) >= 4


def test_tiled_window_on_a_virtual_display(xvfb_display: str, video_path: Path, media_dir: Path) -> None:  # noqa: F811
    proc = run_cli("runtime", "--source", str(video_path), "--source", str(media_dir / "no_face.mp4"),
                   "--max-frames", "10", env={"DISPLAY": xvfb_display}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [s["frames"] for s in summary["streams"].values()] == [10, 10]
    assert summary["stopped_by"] == "max frames"


def test_a_live_stream_beside_a_file_takes_the_newest_frames(classifier, detector, video_path: Path) -> None:
    """The file gives every frame; the live source, faster than the ticks, gives its newest and drops the rest."""
    from runtime.sources import open_source

    live = Stream("live", FastLive(3000), _pipeline(classifier, detector))
    clip = Stream("clip", open_source(str(video_path)), _pipeline(classifier, detector))
    multi = MultiStream([clip, live], max_frames=40)
    _run_to_end(multi)
    assert clip.frames == 40 and 1 <= live.frames <= 40
    assert live.reader.dropped > 0 and clip.reader.dropped == 0
    assert multi.model_calls == clip.frames  # a call on each tick with the clip's face; live-only ticks: none
