"""runtime-live --serve: the address, the one-slot frame holder, the server's routes and bounds, the command end
to end, and the page in a real headless Chromium (skipped where there is none)."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.annotate import default_emoji_dir
from runtime.cli_support import UserError
from runtime.contract import FER2013_LABELS
from runtime.serve import FrameHub, WebView, check_address
from runtime.views import Pacer, ViewedOutputs, Views, address_arg, is_loopback, parse_address
from tests.conftest import ROOT
from tests.runtime.browser import PIXELS_JS, Chromium, find_chromium
from tests.runtime.support import RUNTIME

LABELS = tuple(FER2013_LABELS)
BANNER = re.compile(r"web view at (http://\S+)")


def _record(frame: int, labels: list[str]) -> dict:
    faces = [{"box_xyxy": [10 * i, 10, 10 * i + 8, 18], "label": label, "confidence": 0.9, "track_id": i}
             for i, label in enumerate(labels)]
    return {"frame": frame, "timestamp_s": frame / 24, "faces": faces}


def _image(seed: int, size_wh: tuple[int, int] = (320, 180)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size_wh[1], size_wh[0], 3), dtype=np.uint8)


@pytest.fixture
def view():
    """A web view on a free loopback port, with the bundled emoji, closed afterwards."""
    web = WebView(FrameHub(LABELS, "test frames"), ("127.0.0.1", 0), default_emoji_dir())
    web.start()
    yield web
    web.close()


def _get(web: WebView, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _open_stream(port: int, path: str = "/stream.mjpg") -> tuple[socket.socket, bytes]:
    """A raw connection to the MJPEG stream; returns it and the status line and headers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


def _read_parts(sock: socket.socket, n: int) -> list[tuple[dict, bytes]]:
    """Read ``n`` MJPEG parts: each one's headers and JPEG."""
    f = sock.makefile("rb")
    assert f.readline() == b"--frame\r\n"
    parts = []
    for _ in range(n):
        headers = {}
        while (line := f.readline().strip()) != b"":
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        body = f.read(int(headers["content-length"]))
        assert f.read(2) == b"\r\n" and f.readline() == b"--frame\r\n"
        parts.append((headers, body))
    return parts


# -- the address -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("8080", ("127.0.0.1", 8080)), (":8080", ("127.0.0.1", 8080)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("localhost:0", ("localhost", 0)), ("[::1]:9000", ("::1", 9000)), (" 10.0.0.5:65535 ", ("10.0.0.5", 65535)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host", "host:", "1:2:3", ":65536", ":-1", "a b:80", "x/y:80", ":８０"])
def test_bad_address_is_one_line_with_the_fix(text):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        address_arg(text)
    message = str(info.value)
    assert "\n" not in message and "HOST:PORT" in message and "127.0.0.1:8080" in message


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.org"))


def test_check_address_names_the_problem():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UserError, match="in use: pick another port"):
            check_address(("127.0.0.1", busy.getsockname()[1]))
    with pytest.raises(UserError, match="no such address on this machine"):
        check_address(("192.0.2.1", 8080))  # TEST-NET-1: never this machine's
    check_address(("127.0.0.1", 0))


# -- the one-slot holder -----------------------------------------------------------------------------------------


def test_hub_keeps_the_newest_frame_and_counts_the_shares():
    hub = FrameHub(LABELS, "src")
    assert hub.latest_jpeg() is None and hub.state()["published_unix_ms"] is None
    frames = [_image(i) for i in range(5)]
    for i, image in enumerate(frames):
        hub.publish(image, _record(i, ["happy"] if i < 3 else ["sad", "happy"]))
    seq, jpeg, published = hub.next_jpeg(0, timeout_s=1)  # a client that took none: the newest only
    assert seq == 5 and abs(published - time.time()) < 5
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == frames[-1].shape
    assert hub.latest_jpeg()[1] is jpeg  # encoded once per frame, shared by every client
    assert hub.next_jpeg(5, timeout_s=0.05) is None  # nothing newer yet
    state = hub.state()
    assert state["frame"] == 4 and [f["label"] for f in state["faces"]] == ["sad", "happy"]
    assert state["counts"]["happy"] == 5 and state["counts"]["sad"] == 2 and state["counts"]["angry"] == 0
    assert state["shares"]["happy"] == round(5 / 7, 4) and state["frames"] == 5 and state["running"]
    json.dumps(state, allow_nan=False)
    hub.close()
    assert hub.next_jpeg(0, timeout_s=5) is None and not hub.state()["running"]


def test_publishing_never_waits_on_a_client():
    hub = FrameHub(LABELS)
    hub.publish(_image(0), _record(0, []))
    with hub._encode:  # a client in the middle of encoding (or stalled)
        t0 = time.perf_counter()
        for i in range(200):
            hub.publish(_image(1), _record(i, ["happy"]))
        assert time.perf_counter() - t0 < 1.0
    assert hub.seq == 201


# -- the server --------------------------------------------------------------------------------------------------


def test_routes(view: WebView):
    status, headers, body = _get(view, "/")
    assert status == 200 and b"stream.mjpg" in body and "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store" and headers["X-Content-Type-Options"] == "nosniff"
    assert _get(view, "/snapshot.jpg")[0] == 503  # no frame yet
    view.hub.publish(_image(1), _record(7, ["fear"]))
    status, headers, body = _get(view, "/snapshot.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and "X-Published" in headers
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (180, 320, 3)
    status, _, body = _get(view, "/faces.json")
    state = json.loads(body)
    assert status == 200 and state["frame"] == 7 and state["faces"][0]["label"] == "fear"
    assert state["shares"]["fear"] == 1.0 and state["source"] == "test frames" and state["labels"] == list(LABELS)
    status, headers, body = _get(view, "/emoji/happy.png")
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
    for path in ("/emoji/../serve.py", "/emoji/%2e%2e%2fdemo.png", "/emoji/unknown.png", "/nothing", "/..%2f"):
        assert _get(view, path)[0] == 404, path
    assert _get(view, "/faces.json", "HEAD")[0] == 200


def test_read_only(view: WebView):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = _get(view, "/faces.json", method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_loopback_view_refuses_other_host_names(view: WebView):
    """A page elsewhere that rebinds its own name to 127.0.0.1 still sends its own name as the Host."""
    assert _get(view, "/faces.json", headers={"Host": "attacker.example:8080"})[0] == 403
    for host in (f"localhost:{view.port}", f"127.0.0.1:{view.port}", "[::1]:80", "localhost"):
        assert _get(view, "/faces.json", headers={"Host": host})[0] == 200, host
    assert view.token is None and view.url == f"http://127.0.0.1:{view.port}/"


def test_any_other_address_needs_the_token():
    web = WebView(FrameHub(LABELS), ("0.0.0.0", 0))
    web.start()
    try:
        assert web.token and len(web.token) >= 20 and f"?token={web.token}" in web.url
        assert "access token" in web.banner() and web.url in web.banner()
        for path, headers in (("/", {}), ("/faces.json?token=wrong", {}), ("/stream.mjpg", {}),
                              ("/snapshot.jpg", {"Authorization": "Bearer nope"})):
            status, _, body = _get(web, path, headers=headers)
            assert status == 401 and b"token" in body, path
        assert _get(web, f"/?token={web.token}")[0] == 200
        assert _get(web, "/faces.json", headers={"Authorization": f"Bearer {web.token}"})[0] == 200
    finally:
        web.close()


def test_stream_sends_the_newest_frames_and_ends_with_the_run(view: WebView):
    stop = threading.Event()

    def publish() -> None:
        i = 0
        while not stop.is_set():
            view.hub.publish(_image(i % 3), _record(i, ["happy"]))
            i += 1
            time.sleep(0.01)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        sock, head = _open_stream(view.port)
        assert head.startswith(b"HTTP/1.1 200") and b"multipart/x-mixed-replace; boundary=frame" in head
        parts = _read_parts(sock, 4)
        seqs = [float(h["x-published"]) for h, _ in parts]
        assert seqs == sorted(seqs) and len(set(seqs)) == 4
        for _, jpeg in parts:
            assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (180, 320, 3)
    finally:
        stop.set()
        publisher.join()
    view.close()  # the run ended: the stream ends, the port is released
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", view.port), timeout=2).close()


def test_streams_and_connections_are_capped():
    web = WebView(FrameHub(LABELS), ("127.0.0.1", 0), max_streams=2, max_connections=4, client_timeout_s=2)
    web.start()
    web.hub.publish(_image(0), _record(0, []))
    held = []
    try:
        for _ in range(2):
            sock, head = _open_stream(web.port)
            assert head.startswith(b"HTTP/1.1 200")
            held.append(sock)
        sock, head = _open_stream(web.port)  # a third stream
        assert head.startswith(b"HTTP/1.1 503") and b"Connection: close" in head
        sock.settimeout(5)
        refusal = b""
        while chunk := sock.recv(1 << 16):  # the refusal, then the server closes (a timeout if it did not)
            refusal += chunk
        assert b"at most 2 streams" in refusal
        sock.close()
        deadline = time.monotonic() + 10
        while web._slots._value != 2 and time.monotonic() < deadline:  # the refused one's slot is free again
            time.sleep(0.05)
        assert web._slots._value == 2
        idle = [socket.create_connection(("127.0.0.1", web.port), timeout=5) for _ in range(2)]  # say nothing
        held += idle
        deadline = time.monotonic() + 10
        while web._slots._value and time.monotonic() < deadline:  # every slot taken
            time.sleep(0.05)
        assert web._slots._value == 0
        extra = socket.create_connection(("127.0.0.1", web.port), timeout=5)  # a fifth connection: closed
        extra.sendall(b"GET /faces.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            assert extra.recv(100) == b""
        extra.close()
        for sock in idle:  # silent clients are dropped after client_timeout_s: room again
            sock.settimeout(5)
            assert sock.recv(100) == b""
        deadline = time.monotonic() + 5
        while _get(web, "/faces.json")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _get(web, "/faces.json")[0] == 200
    finally:
        for sock in held:
            sock.close()
        web.close()


def test_a_stalled_client_never_slows_the_pipeline_and_is_dropped():
    web = WebView(FrameHub(LABELS), ("127.0.0.1", 0), max_streams=1, client_timeout_s=1.5)
    web.start()
    try:
        sock, head = _open_stream(web.port)  # then never reads: its buffers fill up
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert head.startswith(b"HTTP/1.1 200")
        noisy = [_image(i, (1280, 720)) for i in range(4)]  # incompressible: ~1 MB a JPEG
        worst = 0.0
        t_end = time.monotonic() + 4
        i = 0
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            web.hub.publish(noisy[i % 4], _record(i, ["happy"]))
            worst = max(worst, time.perf_counter() - t0)
            i += 1
            time.sleep(0.02)
        assert worst < 0.5, f"a publish took {worst * 1000:.0f} ms"  # never the client's 1.5 s (loaded CI: slack)
        deadline = time.monotonic() + 10  # the stalled stream was dropped: its slot is free again
        while time.monotonic() < deadline:
            probe, head = _open_stream(web.port)
            probe.close()
            if head.startswith(b"HTTP/1.1 200"):
                break
            time.sleep(0.5)
        assert head.startswith(b"HTTP/1.1 200"), head
        sock.close()
    finally:
        web.close()


# -- native frame rate -------------------------------------------------------------------------------------------


class _Frame:
    def __init__(self, t: float, fps: float = 25.0, path: str = "a.mp4") -> None:
        self.timestamp_s, self.fps, self.path, self.name = t, fps, path, ""


def test_pacer_holds_a_file_to_its_rate():
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(clock=lambda: now[0], sleep=sleep)
    assert pacer.wait(_Frame(0.0)) == 0.0
    now[0] += 0.01  # processing took 10 ms
    assert pacer.wait(_Frame(0.04)) == pytest.approx(0.03)
    now[0] += 0.5  # a slow frame: far behind
    assert pacer.wait(_Frame(0.08)) == 0.0
    now[0] += 0.01
    assert pacer.wait(_Frame(0.12)) == pytest.approx(0.03)  # from there on, at the rate again: no burst
    assert pacer.wait(_Frame(0.0, path="b.mp4")) == 0.0  # the next file of a folder starts again
    assert pacer.wait(_Frame(5.0, fps=0)) == 0.0  # a photo or a camera: never held
    assert pacer.wait(_Frame(60.0, path="b.mp4")) == 1.0  # a misread rate never freezes the run


def test_viewed_outputs_show_what_is_written_and_close_with_the_run():
    calls = []

    class Outputs:
        written = ["x"]
        waiting_on_reader = False

        def write(self, image, record, frame=None):
            calls.append(("write", record["frame"]))

        def close(self):
            calls.append(("close",))

        def discard(self):
            calls.append(("discard",))

    hub = FrameHub(LABELS)
    web = WebView(hub, ("127.0.0.1", 0))
    web.start()
    outputs = ViewedOutputs(Outputs(), Views(web, None, None))
    outputs.write(_image(0), _record(3, ["sad"]))
    assert calls == [("write", 3)] and hub.state()["frame"] == 3
    assert outputs.written == ["x"] and outputs.waiting_on_reader is False
    outputs.discard()
    assert calls[-1] == ("discard",) and hub.closed


# -- the command -------------------------------------------------------------------------------------------------


def _start(args: list[str]) -> tuple[subprocess.Popen, str, queue.Queue]:
    """runtime-live with ``args``; returns it, the web view's link from its banner, and its further stderr lines."""
    proc = subprocess.Popen([*RUNTIME, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if match := BANNER.search(line):
            return proc, match.group(1), lines
    proc.kill()
    proc.wait()
    raise AssertionError("no web view banner: " + "".join(seen)[-2000:])


def _finish(proc: subprocess.Popen, lines: queue.Queue, timeout: float = 60) -> tuple[dict, str]:
    stdout = proc.stdout.read() if proc.wait(timeout=timeout) is not None else ""
    rest = []
    while (line := lines.get(timeout=10)) is not None:
        rest.append(line)
    return json.loads(stdout.splitlines()[-1]), "".join(rest)


def _port(url: str) -> int:
    return int(re.search(r":(\d+)/", url).group(1))


def test_serve_plays_a_file_at_its_rate_and_stops_at_its_end(video_path: Path):
    proc, url, lines = _start(["--source", str(video_path), "--no-window", "--serve", "127.0.0.1:0",
                               "--max-frames", "60"])
    try:
        port = _port(url)
        assert url == f"http://127.0.0.1:{port}/"
        sock, head = _open_stream(port)
        assert head.startswith(b"HTTP/1.1 200")
        parts = _read_parts(sock, 3)
        latency = [time.time() - float(h["x-published"]) for h, _ in parts[1:]]
        assert all(-0.5 < s < 10 for s in latency), latency
        first = cv2.imdecode(np.frombuffer(parts[0][1], np.uint8), cv2.IMREAD_COLOR)
        assert first.shape == (360, 640, 3)
        state = json.loads(urlopen_text(f"{url}faces.json"))
        assert state["faces"] and state["faces"][0]["label"] in LABELS and state["source"].startswith("video")
        summary, stderr = _finish(proc, lines)
        assert proc.returncode == 0 and "Traceback" not in stderr, stderr
        assert summary["frames"] == 60 and summary["stopped_by"] == "max frames"
        assert summary["wall_s"] >= 59 / 23.98 * 0.95  # held to the clip's 23.98 fps
        sock.settimeout(10)
        while sock.recv(1 << 16):  # the stream ends with the run
            pass
        sock.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def urlopen_text(url: str) -> str:
    from urllib.request import urlopen

    with urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def test_serve_on_the_network_prints_the_token(video_path: Path):
    proc, url, lines = _start(["--source", str(video_path), "--no-window", "--serve", "0.0.0.0:0",
                               "--max-frames", "30"])
    try:
        token = re.search(r"\?token=([\w-]+)$", url).group(1)
        port = _port(url)
        with pytest.raises(Exception, match="401"):
            urlopen_text(f"http://127.0.0.1:{port}/faces.json")
        assert json.loads(urlopen_text(f"http://127.0.0.1:{port}/faces.json?token={token}"))["labels"]
        summary, stderr = _finish(proc, lines)
        assert proc.returncode == 0 and summary["frames"] == 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_port_in_use_and_foreign_address_are_one_line_exit_2(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for address, words in ((f"127.0.0.1:{port}", "the port is in use"), ("192.0.2.1:8080", "no such address"),
                               ("1:2:3", "is not HOST:PORT")):
            proc = subprocess.run([*RUNTIME, "--source", "demo", "--no-window", "--serve", address,
                                   "--output", str(tmp_path / "o.jpg")], capture_output=True, text=True, cwd=ROOT,
                                  timeout=60)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr
            assert not (tmp_path / "o.jpg").exists()


# -- the page in a real browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = find_chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the browser test needs a real browser")
    return exe


def test_page_in_headless_chromium(chromium: str, video_path: Path, tmp_path: Path):
    """The page loads, its video changes, its faces update; SIGTERM ends the run and the page says so."""
    with Chromium(chromium) as browser:
        browser.send("Browser.getVersion", session=False)  # up before the run starts: the clip lasts 20 s
        proc, url, lines = _start(["--source", str(video_path), "--no-window", "--serve", "127.0.0.1:0"])
        try:
            browser.open(url)
            assert browser.wait_for("document.title") == "emocam web view"
            first = browser.wait_for(PIXELS_JS)
            assert first[:2] == [640, 360]
            frame = browser.wait_for("document.querySelectorAll('#faces img').length > 0 && "
                                     "Number(document.getElementById('faces').dataset.frame)")
            label = browser.evaluate("document.querySelector('#faces .name').textContent")
            assert label in LABELS
            assert browser.evaluate("document.querySelectorAll('#shares li').length") == len(LABELS)
            assert "frames with faces" in browser.evaluate("document.getElementById('status').textContent")
            browser.wait_for(f"(() => {{ const p = {PIXELS_JS}; return p && p[2] !== {first[2]}; }})()", 15)
            browser.wait_for(f"Number(document.getElementById('faces').dataset.frame) > {frame}", 15)
            png = browser.screenshot()
            (tmp_path / "web-view.png").write_bytes(png)
            shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            assert shot.shape[:2] == (760, 1280) and shot.std() > 20
            proc.send_signal(signal.SIGTERM)
            summary, stderr = _finish(proc, lines)
            assert proc.returncode == 0 and summary["stopped_by"] == "SIGTERM" and "Traceback" not in stderr
            assert "disconnected" in browser.wait_for(
                "(t => t.includes('disconnected') && t)(document.getElementById('status').textContent)", 15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
