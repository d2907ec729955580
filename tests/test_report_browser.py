"""The report in a real browser: headless Chromium loads reports/index.html offline, must log no
console error, request nothing from the network, fit 1280 px, and leaves screenshots.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: commands
on fd 3, replies and events on fd 4, each a JSON message ended by a NUL byte), so every console
message, uncaught exception and network request arrives as a structured event.
Screenshots go to reports/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_report import bench_doc, results_doc, write_page

CHROMIUM = os.environ.get("NUTSHELL_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "reports" / "screenshots"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe")

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"headless Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium)")


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, user_data_dir: Path):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def wire_fds():  # runs in the child before exec: the pipe ends become fds 3 and 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(3, 4),
                                     preexec_fn=wire_fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id, self.events, self.session = b"", 0, [], None

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        """Send a command (to the attached page once there is one) and wait for its reply."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        reply = self.wait(lambda m: m.get("id") == self._id, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait(self, match, timeout: float = 60) -> dict:
        """Read messages until one matches; events read meanwhile are kept in ``events``."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                m = json.loads(raw)
                if "method" in m:
                    self.events.append(m)
                if match(m):
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError(f"no DevTools reply (chromium exit code {self.proc.poll()})")
            if select.select([self._r], [], [], left)[0]:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk

    def open(self, url: str, width: int = 1280, height: int = 900) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        self.send("Page.navigate", url=url)
        self.wait(lambda m: m.get("method") == "Page.loadEventFired")

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self, path: Path, clip: dict | None = None) -> None:
        params = {"format": "png"} | ({"clip": clip | {"scale": 1}, "captureBeyondViewport": True} if clip else {})
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", **params)["data"]))

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, and any request that leaves the file."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log error: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif e["method"] == "Network.requestWillBeSent" and \
                    not p["request"]["url"].startswith(("file:", "data:", "about:")):
                out.append(f"network request: {p['request']['url']}")
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


@pytest.fixture
def browser(tmp_path):
    d = DevTools(tmp_path / "profile")
    yield d
    d.close()


def test_report_renders_offline_without_console_errors(tmp_path, browser):
    page = write_page(tmp_path, [results_doc("box-a"), results_doc("box-b", gpu=True)], bench_doc())
    browser.open(page.as_uri())
    assert browser.problems() == []
    assert browser.evaluate("document.title").startswith("nutshell report")
    assert browser.evaluate("document.documentElement.scrollWidth") <= 1280, "the page is wider than 1280 px"
    assert browser.evaluate("document.querySelectorAll('svg.chart').length") >= 4
    widths = browser.evaluate("[...document.querySelectorAll('svg.chart')].map(s => s.getBoundingClientRect().width)")
    assert all(400 < w <= 1240 for w in widths), widths
    link = browser.evaluate("document.querySelector('table.matrix td a').getAttribute('href')")
    assert browser.evaluate(f"document.getElementById({json.dumps(link[1:])}) !== null"), f"{link} has no target"
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(SHOTS / "report-top.png")
    for section in ("agreement", "performance", "training"):
        box = browser.evaluate(f"(() => {{const r = document.getElementById('{section}').getBoundingClientRect();"
                               f" return {{x: 0, y: r.top + window.scrollY, width: 1280,"
                               f" height: Math.min(r.height, 1800)}}; }})()")
        browser.screenshot(SHOTS / f"report-{section}.png", clip=box)
    assert (SHOTS / "report-top.png").stat().st_size > 10_000
