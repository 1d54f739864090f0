"""benchmarks.multi_bench: its rows on a few frames (the figures themselves are never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import multi_bench


def test_streams_rows_count_model_calls_per_tick(video_path: Path, tmp_path: Path) -> None:
    rows = multi_bench.bench_streams(video_path, counts=(2,), frames=12)
    one, separate = rows
    assert (one["mode"], separate["mode"]) == ("one process", "2 processes")
    assert one["frames"] == separate["frames"] == 24
    assert one["ticks"] == 12 and one["model_calls_per_tick"] == 1.0 and separate["model_calls_per_tick"] == 2.0
    assert one["fps"] > 0 and separate["fps"] > 0
    multi_bench._write("multi-streams", rows, {"clip": video_path.name}, tmp_path)
    saved = json.loads((tmp_path / "multi-streams.json").read_text())
    assert saved["rows"] == rows
    assert (tmp_path / "multi-streams.csv").read_text().splitlines()[0].startswith("streams,mode,frames,fps")
