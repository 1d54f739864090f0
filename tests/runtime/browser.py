"""A real headless Chromium driven through the DevTools protocol over a pipe (no websocket, no extra package).

Chromium's ``--remote-debugging-pipe`` reads JSON commands from its descriptor 3 and writes replies
and events to descriptor 4, each message ended by a NUL byte. Every wait has a deadline: a stuck
browser fails the test, it never hangs it.

Also a command, for README's screenshot::

    python -m tests.runtime.browser http://127.0.0.1:8080/ docs/web-view.png
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    """The browser did not answer in time, or answered with an error."""


class Chromium:
    """One headless Chromium with one page, for tests.

    Args:
        executable: The browser (see :func:`find_chromium`).
        size_wh: The page's viewport.
        timeout_s: The longest any one command may take.
    """

    def __init__(self, executable: str, size_wh: tuple[int, int] = (1280, 760), timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._profile = tempfile.TemporaryDirectory(prefix="emocam-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the child's ends above 9, so that putting them on 3 and 4 never overwrites one with the other
        to_browser_r, from_browser_w = (self._high(fd) for fd in (to_browser_r, from_browser_w))
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows", "--disable-component-update", "--mute-audio",
            "--hide-scrollbars", f"--window-size={size_wh[0]},{size_wh[1]}", f"--user-data-dir={self._profile.name}",
            "--remote-debugging-pipe", "about:blank",
        ]
        # the shell puts the pipe ends on descriptors 3 and 4, where Chromium looks for them
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close(); a file, never a pipe: a full pipe would stall the browser
        self.process = subprocess.Popen(["bash", "-c", script, executable, *flags],
                                        pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=self._log)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        self.size_wh = size_wh

    @staticmethod
    def _high(fd: int) -> int:
        """``fd`` moved to a descriptor number of 10 or more."""
        high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return high

    def log(self) -> str:
        """What the browser wrote on stdout and stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError("the browser did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"the browser closed its pipe: {self.log()[-800:]}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = True,
             timeout_s: float | None = None) -> dict:
        """Send one DevTools command (to the page's session, unless ``session`` is False) and return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url: str) -> None:
        """Open a page at ``url`` (the first call makes the page)."""
        if self.session is None:
            self.send("Browser.getVersion", session=False)  # the browser is up
            target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                     session=False)["sessionId"]
            self.send("Page.enable")
            w, h = self.size_wh
            self.send("Emulation.setDeviceMetricsOverride", {"width": w, "height": h, "deviceScaleFactor": 1,
                                                             "mobile": False})
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:60]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0, every_s: float = 0.2):
        """Poll a JavaScript expression until it is truthy; returns its value.

        Raises:
            BrowserError: Still falsy after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"still false after {timeout_s:g} s: {expression}")
            time.sleep(every_s)

    def screenshot(self) -> bytes:
        """The page as PNG."""
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        """Close the browser (killed if it does not go)."""
        with contextlib.suppress(BrowserError, OSError):
            self.send("Browser.close", session=False, timeout_s=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: JavaScript: a small checksum of the video's pixels as the page shows them (changes when the frame does).
PIXELS_JS = """(() => {
  const img = document.getElementById("video");
  if (!img || !img.naturalWidth) return null;
  const c = document.createElement("canvas");
  c.width = 64; c.height = 36;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0, 64, 36);
  const d = g.getImageData(0, 0, 64, 36).data;
  let sum = 0;
  for (let i = 0; i < d.length; i += 4) sum += d[i] * 3 + d[i + 1] * 5 + d[i + 2] * 7 + (i % 97);
  return [img.naturalWidth, img.naturalHeight, sum];
})()"""


def main(argv: list[str] | None = None) -> int:
    """Screenshot a running web view: ``URL OUT.png [SECONDS]`` (waits for a face, then SECONDS more)."""
    argv = sys.argv[1:] if argv is None else argv
    url, out = argv[0], Path(argv[1])
    settle = float(argv[2]) if len(argv) > 2 else 1.0
    exe = find_chromium()
    if exe is None:
        print("no chromium on PATH", file=sys.stderr)
        return 2
    with Chromium(exe, size_wh=(1280, 580)) as browser:  # the page without the empty space below
        browser.open(url)
        browser.wait_for("document.querySelectorAll('#faces img').length > 0")
        time.sleep(settle)
        out.write_bytes(browser.screenshot())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
