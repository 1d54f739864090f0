"""runtime.files' temporary files: a stop signal at any moment leaves no temporary file behind."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from runtime.cli_support import signals_held
from runtime.files import TempFile, remove_leftovers
from tests.conftest import ROOT

#: A command whose stop comes right after a temporary file is made, before any owner holds it
#: (the window where export-onnx once left ``.m.int8.onnx.partial-*`` behind under a real SIGTERM).
STOPPED_COMMAND = """
import sys
from pathlib import Path
from runtime.cli_support import run_main
from runtime.files import TempFile

def main(argv):
    TempFile(Path(argv[0]) / "result.onnx")
    raise KeyboardInterrupt

sys.exit(run_main(main, "demo")(sys.argv[1:]))
"""


def test_a_stop_before_the_owner_holds_its_temporary_file_leaves_nothing(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", STOPPED_COMMAND, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 130 and proc.stderr.strip() == "demo: interrupted", proc.stderr
    assert list(tmp_path.iterdir()) == [], "a temporary file was left behind"


def test_leftovers_are_only_files_never_committed_or_discarded(tmp_path: Path) -> None:
    kept, dropped, orphan = TempFile(tmp_path / "kept.txt"), TempFile(tmp_path / "dropped.txt"), TempFile(
        tmp_path / "orphan.txt")
    for tmp in (kept, dropped, orphan):
        tmp.close_fd()
        tmp.path.write_text("data")
    kept.commit()
    dropped.discard()
    assert remove_leftovers() == [orphan.path]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]  # the result stays, whole
    assert (tmp_path / "kept.txt").read_text() == "data"
    assert remove_leftovers() == []


def test_a_stop_signal_while_a_temporary_file_is_made_waits_until_it_is_noted() -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with signals_held():
            signal.raise_signal(signal.SIGTERM)
            assert received == []  # held while the block runs
        assert received == [signal.SIGTERM]  # delivered when it ends, not lost
    finally:
        signal.signal(signal.SIGTERM, previous)
