"""The web view of ``runtime-live --serve HOST:PORT``: the annotated stream, the faces and the share
of each emotion so far, in the browser of any machine that may reach it.

Routes (all ``GET``; nothing a request sends changes anything):

- ``/``: the page (``runtime/assets/web_view.html``, one static file, no build step);
- ``/stream.mjpg``: the annotated frames as MJPEG (``multipart/x-mixed-replace``); each part has an
  ``X-Published`` header, the Unix time the frame was published, for measuring latency;
- ``/faces.json``: the latest frame's faces (as in ``--jsonl``), the share of each emotion so far,
  the frame rate, and ``published_unix_ms`` / ``served_unix_ms``;
- ``/snapshot.jpg``: the latest annotated frame;
- ``/emoji/<label>.png``: the emoji of each of the model's labels.

Safety:

- It listens on 127.0.0.1 unless told otherwise. There, the ``Host`` header must name this machine
  (a web page elsewhere cannot reach it through DNS rebinding). Any other address needs an access
  token, made at start and printed with the link; every request must carry it (``?token=`` in the
  link, or ``Authorization: Bearer``).
- Bounded: the pipeline publishes each annotated frame into a one-slot holder (:class:`FrameHub`:
  publishing never waits on a client, and never copies or encodes); a client encodes the newest
  frame when it is ready for one (one encoding per frame, shared), skipping those it was too slow
  for. At most :data:`MAX_STREAMS` streams and :data:`MAX_CONNECTIONS` connections at once, and a
  client that stops reading is dropped after ``client_timeout_s``.

Standard library only (and OpenCV to encode the JPEGs).
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from runtime.cli_support import UserError
from runtime.views import LOOPBACK_NAMES, is_loopback

MAX_STREAMS = 8  # MJPEG clients at once; one more gets 503
MAX_CONNECTIONS = 32  # connections being served at once (streams included); one more is closed at once
CLIENT_TIMEOUT_S = 10.0  # a client that sends nothing, or reads nothing, for this long is dropped
JPEG_QUALITY = 80
FPS_WINDOW = 48  # frames the published frame rate is measured over


def _family(host: str, port: int) -> socket.AddressFamily:
    """The address family to bind ``host`` with (IPv6 for an IPv6 address or name)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise UserError(f"--serve {host}:{port}: no such address here: use 127.0.0.1 (this machine), "
                        "0.0.0.0 (every network) or one of this machine's addresses") from None
    return infos[0][0]


def _bind_error(host: str, port: int, exc: OSError) -> UserError:
    """The one line for an address that cannot be listened on."""
    where = f"--serve {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return UserError(f"{where}: the port is in use: pick another port (or :0 for any free one), "
                         "or stop the program using it")
    if exc.errno == errno.EACCES:
        return UserError(f"{where}: not allowed to listen on port {port} (ports below 1024 need root): "
                         "use a port above 1024")
    if exc.errno == errno.EADDRNOTAVAIL:
        return UserError(f"{where}: no such address on this machine: use 127.0.0.1, 0.0.0.0 (every network) "
                         "or one of this machine's addresses")
    return UserError(f"{where}: cannot listen there ({exc.strerror or exc}): try another address or port")


def check_address(address: tuple[str, int]) -> None:
    """Fail early, with the fix, if ``address`` cannot be listened on (bound and released at once).

    Raises:
        UserError: Unknown address, port in use, or not allowed.
    """
    host, port = address
    family = _family(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise _bind_error(host, port, exc) from None


class FrameHub:
    """The one-slot holder between the pipeline and the clients: the newest frame and its record.

    :meth:`publish` only swaps references and counts (it never copies, encodes or waits on a
    client); a client takes the newest frame when it is ready for one (:meth:`next_jpeg`), so a
    slow client skips frames and a stalled one holds one JPEG at most.

    Args:
        labels: The model's class names (the shares are given for each).
        description: What the source is, for the page.
    """

    def __init__(self, labels: Sequence[str] = (), description: str = "") -> None:
        self.labels = tuple(labels)
        self.description = description
        self._cond = threading.Condition()
        self._encode = threading.Lock()
        self._seq = 0
        self._image: np.ndarray | None = None
        self._record: dict | None = None
        self._published = 0.0  # Unix time of the newest frame
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._counts: Counter[str] = Counter()
        self._face_frames = 0
        self._times: deque[float] = deque(maxlen=FPS_WINDOW)
        self.closed = False

    def publish(self, image: np.ndarray, record: Mapping) -> None:
        """Make ``image`` (annotated, BGR; never modified afterwards) and its record the newest frame."""
        now = time.time()
        labels = [face.get("label") for face in record.get("faces", ())]
        with self._cond:
            self._seq += 1
            self._image, self._record, self._published = image, dict(record), now
            self._counts.update(label for label in labels if label)
            self._face_frames += bool(labels)
            self._times.append(time.monotonic())
            self._cond.notify_all()

    def close(self) -> None:
        """The run has ended: every waiting client stops."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    @property
    def seq(self) -> int:
        """How many frames were published."""
        return self._seq

    def next_jpeg(self, after: int, timeout_s: float) -> tuple[int, bytes, float] | None:
        """The newest frame once it is newer than frame number ``after``, as JPEG.

        Returns:
            ``(frame number, JPEG bytes, Unix time published)``, or None after ``timeout_s`` or
            once the hub is closed.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > after or self.closed, timeout_s) or self.closed:
                return None
        return self.latest_jpeg()

    def latest_jpeg(self) -> tuple[int, bytes, float] | None:
        """The newest frame as JPEG (encoded once, for every client), or None before the first."""
        import cv2

        with self._encode:  # one encoding per frame: a second client waits for it, then shares it
            with self._cond:
                seq, image, published = self._seq, self._image, self._published
            if image is None:
                return None
            if self._jpeg[0] != seq:
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    return None
                self._jpeg = (seq, buf.tobytes())
            return seq, self._jpeg[1], published

    def state(self) -> dict:
        """The page's data: the newest frame's record, the share of each emotion so far, the frame rate."""
        with self._cond:
            record = dict(self._record or {})
            counts, face_frames, published, seq = dict(self._counts), self._face_frames, self._published, self._seq
            times = list(self._times)
        faces_seen = sum(counts.values())
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        labels = list(self.labels) + sorted(set(counts) - set(self.labels))
        return {
            **record,
            "faces": record.get("faces", []),
            "frames": seq,
            "frames_with_faces": face_frames,
            "labels": labels,
            "counts": {label: counts.get(label, 0) for label in labels},
            "shares": {label: round(counts.get(label, 0) / faces_seen, 4) if faces_seen else 0.0 for label in labels},
            "fps": round(fps, 2),
            "source": self.description,
            "running": not self.closed,
            "published_unix_ms": round(published * 1000, 1) if seq else None,
            "served_unix_ms": round(time.time() * 1000, 1),
        }


def page_html() -> bytes:
    """The page: one static file."""
    return (resources.files("runtime") / "assets" / "web_view.html").read_bytes()


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that refuses connections beyond :data:`MAX_CONNECTIONS`."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    view: WebView

    def process_request(self, request, client_address) -> None:
        if not self.view._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: closed, costing no thread
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.view._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.view._slots.release()

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-answer is no error worth a traceback."""


class _Handler(BaseHTTPRequestHandler):
    """The routes of the web view (see the module's docstring)."""

    server: _Server
    server_version = "emocam"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.timeout = self.server.view.client_timeout_s  # reads and writes: a stalled client is dropped
        super().setup()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        """Quiet: the run's stderr is for the run."""

    # Read-only: every method that could change something is refused.
    def _refuse_method(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only: GET only\n", "text/plain; charset=utf-8",
                   {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: Mapping[str, str] | None = None,
              head: bool = False) -> None:
        """One whole answer; a refusal (any status but 200) also closes the connection, freeing its slot."""
        if status != HTTPStatus.OK:
            self.close_connection = True
            headers = {**(headers or {}), "Connection": "close"}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in self._common_headers(headers).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _common_headers(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        return {
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",  # the token in the link never leaves in a Referer
            "X-Frame-Options": "DENY",
            **(headers or {}),
        }

    def _allowed(self, query: dict[str, list[str]]) -> bool:
        """The token (when there is one), or for a loopback-only server, a Host naming this machine."""
        view = self.server.view
        if view.token is None:
            host = (self.headers.get("Host") or "").strip().lower()
            name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
            if name not in LOOPBACK_NAMES and not is_loopback(name):
                self._send(HTTPStatus.FORBIDDEN, b"forbidden: open it as localhost or 127.0.0.1\n",
                           "text/plain; charset=utf-8")
                return False
            return True
        given = (query.get("token") or [""])[0]
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if hmac.compare_digest(given.encode(), view.token.encode()):
            return True
        self._send(HTTPStatus.UNAUTHORIZED, b"unauthorized: open the link runtime-live printed (it has the token)\n",
                   "text/plain; charset=utf-8")
        return False

    def _route(self, head: bool) -> None:
        parts = urlsplit(self.path)
        if not self._allowed(parse_qs(parts.query)):
            return
        view = self.server.view
        path = parts.path
        if path in ("/", "/index.html"):
            csp = ("default-src 'none'; img-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
                   "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")
            self._send(HTTPStatus.OK, view.page, "text/html; charset=utf-8", {"Content-Security-Policy": csp}, head)
        elif path == "/faces.json":
            body = json.dumps(view.hub.state(), allow_nan=False).encode()
            self._send(HTTPStatus.OK, body, "application/json", head=head)
        elif path == "/snapshot.jpg":
            latest = view.hub.latest_jpeg()
            if latest is None:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no frame yet\n", "text/plain; charset=utf-8",
                           {"Retry-After": "1"}, head)
            else:
                self._send(HTTPStatus.OK, latest[1], "image/jpeg", {"X-Published": f"{latest[2]:.6f}"}, head)
        elif path.startswith("/emoji/") and path.endswith(".png") and path[7:-4] in view.emoji:
            self._send(HTTPStatus.OK, view.emoji[path[7:-4]], "image/png", {"Cache-Control": "max-age=3600"}, head)
        elif path == "/stream.mjpg":
            self._stream(head)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head=head)

    def _stream(self, head: bool) -> None:
        """MJPEG: the newest frame each time the client has taken the last (frames in between are skipped)."""
        view = self.server.view
        if not view._streams.acquire(blocking=False):
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"at most {view.max_streams} streams at once\n".encode(),
                       "text/plain; charset=utf-8", {"Retry-After": "5"}, head)
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Connection", "close")
            for name, value in self._common_headers().items():
                self.send_header(name, value)
            self.end_headers()
            self.close_connection = True
            if head:
                return
            self.wfile.write(b"--frame\r\n")
            seq = 0
            while not view.hub.closed:
                item = view.hub.next_jpeg(seq, timeout_s=0.5)
                if item is None:
                    continue
                seq, jpeg, published = item
                head_lines = (f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                              f"X-Published: {published:.6f}\r\n\r\n").encode()
                # the next boundary right after the image: browsers show a part once its end is known
                self.wfile.write(head_lines + jpeg + b"\r\n--frame\r\n")
        except OSError:  # the client went away, or stopped reading for client_timeout_s
            pass
        finally:
            view._streams.release()


class WebView:
    """The web view's server, on its own thread.

    Args:
        hub: Where the frames come from.
        address: ``(host, port)``; port 0 picks a free one (see :attr:`url`).
        emoji_dir: The folder of ``<label>.png`` the page shows (the hub's labels only).
        max_streams: MJPEG clients at once.
        max_connections: Connections at once.
        client_timeout_s: A client silent (or not reading) this long is dropped.

    Raises:
        UserError: The address cannot be listened on.
    """

    def __init__(self, hub: FrameHub, address: tuple[str, int], emoji_dir: Path | None = None,
                 max_streams: int = MAX_STREAMS, max_connections: int = MAX_CONNECTIONS,
                 client_timeout_s: float = CLIENT_TIMEOUT_S) -> None:
        host, port = address
        self.hub = hub
        self.max_streams = max_streams
        self.client_timeout_s = client_timeout_s
        self._streams = threading.BoundedSemaphore(max_streams)
        self._slots = threading.BoundedSemaphore(max_connections)
        self.page = page_html()
        self.emoji: dict[str, bytes] = {}  # read once: the only files it serves
        for label in hub.labels if emoji_dir is not None else ():
            with contextlib.suppress(OSError):
                self.emoji[label] = (Path(emoji_dir) / f"{label}.png").read_bytes()
        server_class = type("Server", (_Server,), {"address_family": _family(host, port)})
        try:
            self._server = server_class((host, port), _Handler)
        except OSError as exc:
            raise _bind_error(host, port, exc) from None
        self._server.view = self
        self.host, self.port = host, self._server.server_address[1]
        self.token = None if is_loopback(host) else secrets.token_urlsafe(18)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="emocam-web-view", daemon=True)

    @property
    def url(self) -> str:
        """The link to open (with the token, when there is one)."""
        host = self.host
        if host in ("0.0.0.0", "::"):  # every network: this machine's name is what others can open
            host = socket.gethostname()
        shown = f"[{host}]" if ":" in host else host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{shown}:{self.port}/{query}"

    def start(self) -> None:
        """Serve on the background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving: the clients' streams end, the port is released."""
        self.hub.close()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def banner(self) -> str:
        """The line printed at start: where to open it, and who can."""
        if self.token is None:
            return f"runtime-live: web view at {self.url} (this machine only: --serve 0.0.0.0:PORT shares it)"
        return (f"runtime-live: web view at {self.url} - open to the network on {self.host}:{self.port}: every "
                "request needs this access token (it is in the link); share the link only with who may watch")
