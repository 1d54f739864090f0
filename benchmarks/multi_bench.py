"""Many streams and video archives: throughput of ``runtime-live --source A --source B ...`` and ``runtime-batch``.

``python -m benchmarks.multi_bench [streams|batch|all]`` (run it under
``flock -x /tmp/emocam-measure.lock`` on a shared machine, so that no other timing run overlaps):

* **streams**: N streams (1, 2, 4, 8) of the shared clip in ONE process (one model call per tick)
  against N separate ``runtime-live`` processes started together. For each: frames/s of all
  streams together (frames over the slowest run's own wall time, model load excluded), the
  wall time of the whole command (start-up included), and model calls per tick (one process:
  from its summary; N processes: N calls for each tick of N frames).
* **batch**: ``runtime-batch`` on a folder of links to the clip, ``--engine local`` and
  ``--engine ray``, 1 and 2 workers: videos/hour by the batch's own clock, and by the whole
  command's (Ray's start-up included).

Every configuration runs in the same invocation, one after another, so the ratios compare runs
made under the same conditions. Results: ``benchmarks/results/multi-streams.{json,csv}`` and
``multi-batch.{json,csv}`` (written atomically), a table on stderr, one JSON line on stdout.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.machine import load_avg
from runtime.cli_support import atomic_path

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT.parent / "shared" / "media" / "WolfgangLanger_Pexels.mp4"
RESULTS = ROOT / "benchmarks" / "results"
STREAM_COUNTS = (1, 2, 4, 8)
ENV = {**os.environ, "DISPLAY": "", "WAYLAND_DISPLAY": ""}


def _summary(code: int, stdout: str, stderr: str) -> dict:
    """The command's JSON summary (its last stdout line); a failed run raises with its stderr's end."""
    if code != 0:
        raise RuntimeError(f"a timed run failed ({code}): {stderr[-500:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def _live(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "runtime", "--no-window", *args]


def bench_streams(clip: Path = CLIP, counts: Sequence[int] = STREAM_COUNTS, frames: int = 236) -> list[dict]:
    """N streams of ``clip`` in one process against N processes (``frames`` frames per stream)."""
    rows = []
    for n in counts:
        t0 = time.perf_counter()
        argv = _live([a for _ in range(n) for a in ("--source", str(clip))] + ["--max-frames", str(frames)])
        proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT)
        command_s = time.perf_counter() - t0
        one = _summary(proc.returncode, proc.stdout, proc.stderr)
        rows.append({"streams": n, "mode": "one process", "frames": one["frames"], "fps": one["fps"],
                     "wall_s": one["wall_s"], "command_s": round(command_s, 3),
                     "ticks": one.get("ticks", one["frames"]),
                     "model_calls": one.get("model_calls", one["frames"]),
                     "model_calls_per_tick": one.get("model_calls_per_tick", 1.0), "load_avg": load_avg()})
        t0 = time.perf_counter()
        procs = [subprocess.Popen(_live(["--source", str(clip), "--max-frames", str(frames)]), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT) for _ in range(n)]
        outs = [p.communicate() for p in procs]
        command_s = time.perf_counter() - t0
        each = [_summary(p.returncode, *out) for p, out in zip(procs, outs, strict=True)]
        total = sum(s["frames"] for s in each)
        wall = max(s["wall_s"] for s in each)
        rows.append({"streams": n, "mode": f"{n} processes", "frames": total, "fps": round(total / wall, 2),
                     "wall_s": wall, "command_s": round(command_s, 3), "ticks": frames, "model_calls": total,
                     "model_calls_per_tick": float(n), "load_avg": load_avg()})
        print(f"streams {n}: one process {rows[-2]['fps']:.1f} fps ({rows[-2]['model_calls_per_tick']} calls/tick), "
              f"{n} processes {rows[-1]['fps']:.1f} fps", file=sys.stderr)
    return rows


def bench_batch(clip: Path = CLIP, videos: int = 4, workers: Sequence[int] = (1, 2),
                engines: Sequence[str] = ("local", "ray")) -> list[dict]:
    """``runtime-batch`` on ``videos`` links to ``clip``: each engine with each worker count."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="emocam-batch-bench-") as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        for i in range(videos):
            (folder / f"clip{i}.mp4").symlink_to(clip)
        for engine in engines:
            for w in workers:
                argv = [sys.executable, "-m", "runtime.batch", str(folder), "--out", str(Path(tmp) / "out"),
                        "--engine", engine, "--workers", str(w), "--redo"]
                t0 = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT)
                command_s = time.perf_counter() - t0
                s = _summary(proc.returncode, proc.stdout, proc.stderr)
                rows.append({"engine": engine, "workers": w, "videos": s["processed"], "frames": s["frames"],
                             "wall_s": s["wall_s"], "command_s": round(command_s, 3),
                             "videos_per_hour": s["videos_per_hour"],
                             "videos_per_hour_command": round(s["processed"] * 3600 / command_s, 1),
                             "frames_per_s": s["frames_per_s"], "model_calls": s["model_calls"],
                             "threads_per_worker": s["threads_per_worker"], "load_avg": load_avg()})
                print(f"batch {engine} x{w}: {rows[-1]['videos_per_hour']:.0f} videos/h "
                      f"({rows[-1]['videos_per_hour_command']:.0f} with start-up)", file=sys.stderr)
    return rows


def _write(name: str, rows: list[dict], meta: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / f"{name}.json") as tmp:
        tmp.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        tmp.write_text(text.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the streams and/or batch benchmarks and write their results."""
    import platform

    what = (list(argv) if argv is not None else sys.argv[1:]) or ["all"]
    meta = {"clip": CLIP.name, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    line = {}
    if what[0] in ("streams", "all"):
        rows = bench_streams()
        _write("multi-streams", rows, meta, RESULTS)
        line["streams"] = [{k: r[k] for k in ("streams", "mode", "fps", "model_calls_per_tick")} for r in rows]
    if what[0] in ("batch", "all"):
        rows = bench_batch()
        _write("multi-batch", rows, meta, RESULTS)
        line["batch"] = [{k: r[k] for k in ("engine", "workers", "videos_per_hour", "videos_per_hour_command")}
                         for r in rows]
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
