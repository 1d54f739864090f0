"""Signals ignored when runtime-live starts stay ignored (nohup, `cmd &` in a script); the others still stop it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.runtime.support import RUNTIME


def _ignore_sigint_and_sighup() -> None:
    """What `nohup runtime-live ... &` in a script does to the child: SIGHUP and SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _start(args: list[str], tmp_path: Path, early_sigint: bool = False) -> subprocess.Popen:
    """runtime-live on the clip with --jsonl o.jsonl, started as under `nohup ... &`, once 8 lines are written."""
    proc = subprocess.Popen([*RUNTIME, "--source", *args, "--no-window", "--jsonl", str(tmp_path / "o.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=_ignore_sigint_and_sighup)
    if early_sigint:
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # while its modules load
    deadline = time.monotonic() + 90
    while not [p for p in tmp_path.glob(".o.jsonl.partial-*") if p.read_text().count("\n") >= 8]:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate()[1][-2000:] or "no JSON lines after 90 s")
        time.sleep(0.02)
    return proc


def _finish(proc: subprocess.Popen, *signals: signal.Signals) -> dict:
    """Send ``signals``, wait for the run to end, and return its summary (exit 0, no traceback)."""
    try:
        for sig in signals:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    return json.loads(stdout.splitlines()[-1])


def test_ignored_signals_stay_ignored_and_sigterm_still_stops(video_path: Path, tmp_path: Path):
    proc = _start([str(video_path), "--max-frames", "80"], tmp_path, early_sigint=True)
    summary = _finish(proc, signal.SIGINT, signal.SIGHUP)  # Ctrl-C at the terminal, then the terminal closed
    assert summary["stopped_by"] == "max frames" and summary["frames"] == 80
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 80

    (tmp_path / "o.jsonl").unlink()
    summary = _finish(_start([str(video_path)], tmp_path), signal.SIGTERM)
    assert summary["stopped_by"] == "SIGTERM" and 8 <= summary["frames"] < 472
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == summary["frames"]
