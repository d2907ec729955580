"""The report in a real browser: headless Chromium loads the index.html of a real (narrow) run
offline, and of a made-up run that fills every section; each must log no console error, request
nothing from the network, fit a 1400-pixel-wide window, show every figure with its title and
resolve every internal link; screenshots are left for a person to look at.

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
import sys
import time
from pathlib import Path

import pytest
from test_report import CLAIM_DETAILS, bench_doc, results_doc, write, write_page

from nutshell.conformance import report

CHROMIUM = os.environ.get("NUTSHELL_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "reports" / "screenshots"
WIDTH = 1400          # the window the page must fit
SELECTION = "relu or figure3 or edge_detector or claim_xor or claim_pooling"   # a real run of a few seconds' checks
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

    def open(self, url: str, width: int = WIDTH, height: int = 900) -> None:
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


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """reports/index.html of a real narrow run on torch and onnx (ops, the glossary's two images
    with each backend's output, two claims, cross checks), with a bench.json beside it, as
    ``nutshell run`` leaves it."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    cwd = tmp_path_factory.mktemp("run")
    r = subprocess.run([sys.executable, "-m", "nutshell.cli", "run", "-b", "torch", "-b", "onnx", "-k", SELECTION],
                       capture_output=True, text=True, cwd=cwd, timeout=600)
    reports = cwd / "reports"
    assert (reports / "results.json").is_file(), r.stdout + r.stderr
    write(reports / "bench.json", bench_doc())
    return report.write_from_reports_dir(reports)


LAYOUT = """(() => {
  const client = document.documentElement.clientWidth;
  const figures = [...document.querySelectorAll('figure')].map(f => {
    const title = f.querySelector('figcaption.title'), chart = f.querySelector('svg.chart');
    const box = chart ? chart.getBoundingClientRect() : {width: 0, height: 0};
    return {id: f.id, title: title ? title.textContent.trim() : '', width: box.width, height: box.height};
  });
  const broken = [...document.querySelectorAll('a[href^="#"]')].map(a => a.getAttribute('href').slice(1))
    .filter(id => document.getElementById(id) === null);
  const wide = [...document.body.querySelectorAll('*')]
    .filter(e => !(e.parentElement && e.parentElement.closest('svg, .scroll')))
    .filter(e => e.getBoundingClientRect().right > client + 0.5).map(e => e.tagName + '#' + e.id);
  return {client, scroll: document.documentElement.scrollWidth, figures, broken, wide};
})()"""


def check_page(browser: DevTools, page: Path) -> dict:
    """Open ``page`` offline and check what every report page must do; the layout facts."""
    assert page.stat().st_size < 2_000_000, f"{page} has {page.stat().st_size:,} bytes"
    browser.open(page.as_uri())
    assert browser.problems() == []
    assert browser.evaluate("document.title").startswith("nutshell report")
    layout = browser.evaluate(LAYOUT)
    assert layout["client"] <= WIDTH and layout["scroll"] <= layout["client"], "the page is wider than the window"
    assert layout["wide"] == [], "elements reach beyond the page's right edge"
    assert layout["broken"] == [], "internal links without a target"
    assert all(f["title"] and f["width"] > 150 and f["height"] > 80 for f in layout["figures"]), layout["figures"]
    return layout


def screenshots(browser: DevTools, prefix: str, sections: tuple[str, ...]) -> None:
    """The top of the page and the first 1,800 pixels of each section, into reports/screenshots/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(SHOTS / f"{prefix}-top.png")
    for section in sections:
        box = browser.evaluate(f"(() => {{const r = document.getElementById('{section}').getBoundingClientRect();"
                               f" return {{x: 0, y: r.top + window.scrollY, width: {WIDTH},"
                               f" height: Math.min(r.height, 1800)}}; }})()")
        browser.screenshot(SHOTS / f"{prefix}-{section}.png", clip=box)
    assert (SHOTS / f"{prefix}-top.png").stat().st_size > 10_000


def test_a_real_run_renders_offline_and_fits(real_run, browser):
    layout = check_page(browser, real_run)
    ids = {f["id"] for f in layout["figures"]}
    assert {"fig-claim-xor_needs_nonlinearity", "fig-claim-pooling_shift_invariance", "fig-image-conv2d-figure3",
            "fig-image-conv2d-edge_detector", "fig-agree-all", "fig-roofline-cpu", "fig-relative-forward"} <= ids
    link = browser.evaluate("document.querySelector('table.matrix td a').getAttribute('href')")
    assert browser.evaluate(f"document.getElementById({json.dumps(link[1:])}) !== null"), f"{link} has no target"
    for vector in ("figure3", "edge_detector"):      # each backend's own output, as its record keeps it
        text = browser.evaluate(f"document.getElementById('fig-image-conv2d-{vector}').textContent")
        assert "as computed" in text and "torch (float32)" in text and "onnx (float32)" in text, text
    screenshots(browser, "run", ("claims", "performance", "concept-conv2d"))


def test_every_section_renders_offline_and_fits(tmp_path, browser):
    page = write_page(tmp_path, [results_doc("box-a"), results_doc("box-b", gpu=True)], bench_doc())
    layout = check_page(browser, page)
    ids = {f["id"] for f in layout["figures"]}
    assert {f"fig-claim-{cid}" for cid in CLAIM_DETAILS} | {"fig-training-model_digits_cnn", "fig-relative-vjp",
                                                           "fig-filters-model_digits_cnn"} <= ids
    screenshots(browser, "report", ("agreement", "performance", "training", "claims", "node-tests", "concept-conv2d",
                                    "concept-model_digits_cnn"))
