"""What the web view costs: runtime-live's CPU time per frame on a clip without ``--serve``, with it and no
client, and with it and one client reading ``/stream.mjpg`` (and polling ``/faces.json`` as the page does);
and the latency from a frame's publishing to its receipt by that client.

Rounds are interleaved (the three runs of a round back to back, the order turning each round), so the
ratios compare runs made under the same load. Run it under the project's measuring lock::

    flock -x /tmp/emocam-measure.lock python -m benchmarks.web_view --rounds 3 --out web_view.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT.parent / "shared" / "media" / "WolfgangLanger_Pexels.mp4"
MODES = ("plain", "serve", "serve+client")


def _client(port: int, stop: threading.Event, latency_ms: list[float], polls: list[float]) -> None:
    """Read the MJPEG stream (each part's receipt time minus its X-Published) and poll faces.json every 250 ms."""
    def poll() -> None:
        while not stop.wait(0.25):
            try:
                with urlopen(f"http://127.0.0.1:{port}/faces.json", timeout=5) as resp:
                    state = json.loads(resp.read())
                if state.get("published_unix_ms"):
                    polls.append(time.time() * 1000 - state["published_unix_ms"])
            except OSError:
                return

    threading.Thread(target=poll, daemon=True).start()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        f = sock.makefile("rb")
        while f.readline() not in (b"\r\n", b""):
            pass
        while not stop.is_set():
            line = f.readline()
            if not line:
                return
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                published = None
                while (h := f.readline()) not in (b"\r\n", b""):
                    if h.lower().startswith(b"x-published:"):
                        published = float(h.split(b":")[1])
                f.read(length)
                if published is not None:
                    latency_ms.append((time.time() - published) * 1000)
    except OSError:
        return


def run_once(mode: str, clip: Path, frames: int | None) -> dict:
    """One runtime-live run in ``mode``; its CPU seconds, frames, and (with a client) the latencies."""
    cmd = [sys.executable, "-m", "runtime", "--source", str(clip), "--no-window", "--provider", "cpu"]
    if frames:
        cmd += ["--max-frames", str(frames)]
    if mode != "plain":
        cmd += ["--serve", "127.0.0.1:0"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    latency: list[float] = []
    polls: list[float] = []
    stop = threading.Event()
    client = None
    err_lines = []
    if mode != "plain":
        for line in proc.stderr:
            err_lines.append(line)
            if m := re.search(r"web view at http://127\.0\.0\.1:(\d+)/", line):
                if mode == "serve+client":
                    client = threading.Thread(target=_client, args=(int(m.group(1)), stop, latency, polls))
                    client.start()
                break
    stdout, stderr = proc.communicate()
    stop.set()
    if client is not None:
        client.join(10)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError("".join(err_lines) + stderr)
    summary = json.loads(stdout.splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = {"mode": mode, "frames": summary["frames"], "cpu_s": round(cpu, 3), "wall_s": round(wall, 2),
           "cpu_ms_per_frame": round(cpu * 1000 / summary["frames"], 2), "p50_frame_ms": summary["p50_ms"]}
    if latency:
        lat = sorted(latency[5:] or latency)  # the first parts include the client's start
        out.update(received=len(latency), latency_p50_ms=round(statistics.median(lat), 2),
                   latency_p95_ms=round(lat[int(0.95 * (len(lat) - 1))], 2), latency_max_ms=round(lat[-1], 2))
    if polls:
        out["json_age_p50_ms"] = round(statistics.median(polls), 1)
    return out


def _micro_client(port: int, seconds: float) -> subprocess.Popen:
    """A browser's traffic in another process (its CPU is not counted): the stream, and faces.json at 4 Hz."""
    code = f"""
import json, socket, threading, time, urllib.request
end = time.monotonic() + {seconds}
def poll():
    while time.monotonic() < end:
        urllib.request.urlopen("http://127.0.0.1:{port}/faces.json", timeout=5).read()
        time.sleep(0.25)
threading.Thread(target=poll, daemon=True).start()
s = socket.create_connection(("127.0.0.1", {port}))
s.sendall(b"GET /stream.mjpg HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
s.settimeout(2)
n = 0
while time.monotonic() < end:
    try:
        n += len(s.recv(1 << 16))
    except socket.timeout:
        pass
print(n)
"""
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def micro(clip: Path, frames: int = 240, fps: float = 23.98) -> dict:
    """The web view's own CPU per frame, in-process: real annotated frames of ``clip`` published at ``fps``,
    with no client and with one (in another process); process CPU time over the publishing, per frame."""
    import cv2

    from runtime.annotate import default_emoji_dir
    from runtime.contract import FER2013_LABELS
    from runtime.pipeline import Pipeline
    from runtime.serve import FrameHub, WebView

    pipe = Pipeline(provider="cpu")
    cap = cv2.VideoCapture(str(clip))
    annotated = []
    while len(annotated) < 96 and (ok_frame := cap.read())[0]:
        image, faces = pipe(ok_frame[1])
        annotated.append((image, {"frame": len(annotated), "timestamp_s": 0.0, "faces": faces.to_records()}))
    cap.release()
    pipe.close()
    out = {}
    for mode in ("serve", "serve+client"):
        web = WebView(FrameHub(tuple(FER2013_LABELS), "micro"), ("127.0.0.1", 0), default_emoji_dir())
        web.start()
        client = _micro_client(web.port, frames / fps + 1) if mode == "serve+client" else None
        time.sleep(0.5)
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(frames):
            image, record = annotated[i % len(annotated)]
            web.hub.publish(image, record)
            time.sleep(max(0.0, t0 + (i + 1) / fps - time.perf_counter()))
        cpu = time.process_time() - cpu0
        received = int(client.communicate(timeout=30)[0] or 0) if client is not None else 0
        web.close()
        out[mode] = {"cpu_ms_per_frame": round(cpu * 1000 / frames, 3), "frames": frames,
                     "client_bytes_per_frame": round(received / frames) if client is not None else None}
        print(json.dumps({mode: out[mode]}), flush=True)
    t = time.perf_counter()
    for i in range(200):
        cv2.imencode(".jpg", annotated[i % len(annotated)][0], [cv2.IMWRITE_JPEG_QUALITY, 80])
    out["jpeg_encode_ms"] = round((time.perf_counter() - t) * 1000 / 200, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print (and optionally write) the results."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.web_view", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--frames", type=int, default=None, help="frames per run (default: the whole clip)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--micro", action="store_true",
                   help="measure the web view's own CPU per frame in-process (steadier on a loaded machine)")
    args = p.parse_args(argv)
    if args.micro:
        result = {"clip": args.clip.name, "load_before": os.getloadavg(), "micro": micro(args.clip)}
        result["load_after"] = os.getloadavg()
        print(json.dumps(result))
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
        return 0
    runs = []
    load_before = os.getloadavg()
    for r in range(args.rounds):
        order = MODES[r % 3:] + MODES[:r % 3]
        for mode in order:
            res = run_once(mode, args.clip, args.frames)
            res["round"] = r
            runs.append(res)
            print(json.dumps(res), flush=True)
    per_mode = {m: [x for x in runs if x["mode"] == m] for m in MODES}
    extra = {}
    for m in ("serve", "serve+client"):
        diffs = [(s["cpu_s"] - p_["cpu_s"]) * 1000 / s["frames"] for s, p_ in zip(per_mode[m], per_mode["plain"],
                                                                                    strict=True)]
        ratios = [s["cpu_s"] / p_["cpu_s"] for s, p_ in zip(per_mode[m], per_mode["plain"], strict=True)]
        extra[m] = {"added_cpu_ms_per_frame_median": round(statistics.median(diffs), 2),
                    "added_cpu_ms_per_frame_each_round": [round(d, 2) for d in diffs],
                    "cpu_ratio_to_plain_each_round": [round(x, 3) for x in ratios]}
    result = {"clip": str(args.clip.name), "load_before": load_before, "load_after": os.getloadavg(), "runs": runs,
              "added": extra}
    print(json.dumps(extra, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
