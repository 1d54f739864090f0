"""runtime-live works offline: no network socket, from Python or from the native libraries.

Deterministic (no sampling of a running process): the run happens in a child interpreter with an
audit hook on every socket Python creates, and the child lists its own descriptors against the
kernel's TCP/UDP/raw tables once the whole clip is done.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

CHILD = r"""
import json, os, sys
families = []
sys.addaudithook(lambda event, args: families.append(int(args[1])) if event == "socket.__new__" else None)
from runtime.live import cli
code = cli(sys.argv[1:])
inodes = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith("socket:["):
        inodes.add(target[len("socket:["):-1])
network = set()
for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
    with open(f"/proc/self/net/{table}") as fh:
        network.update(line.split()[9] for line in fh.readlines()[1:])
print("NET " + json.dumps({"code": code, "families": families, "network": sorted(inodes & network)}), file=sys.stderr)
"""


def test_runtime_opens_no_network_socket(video_path: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, "--source", str(video_path), "--no-window", "--max-frames",
                           "120", "--jsonl", str(tmp_path / "o.jsonl"), "--output", str(tmp_path / "o.mp4")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("NET ")]
    report = json.loads(line[4:])
    assert report["code"] == 0, proc.stderr[-2000:]
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 120  # the run really ran
    assert not {socket.AF_INET, socket.AF_INET6} & set(report["families"]), report
    assert report["network"] == [], report
