"""The playground page in a real headless Chromium: predict, explanation, feedback, screenshot.

The browser is driven over the Chrome DevTools Protocol with the `websockets` package Serve's
uvicorn already brings, so the test needs no Selenium or Playwright, only a Chromium on PATH
(`make test` installs Debian's where it runs as root).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from shipyard.serving.feedback_store import read_feedback

TEXT = "WIN a FREE prize now, claim your cash"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = (1100, 1000)
WAIT_S = 30.0


BROWSER = next(filter(None, map(shutil.which, BROWSERS)), None)

# Checked before the module's fixtures train and serve anything.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        BROWSER is None,
        reason="no Chromium: install Debian's chromium (make test does where it runs as root)",
    ),
]


class CDPError(RuntimeError):
    pass


class Browser:
    """One headless Chromium and one page, over one DevTools websocket (flattened session)."""

    def __init__(self, executable: str, workdir: Path):
        from websockets.sync.client import connect

        profile = workdir / "profile"
        profile.mkdir()
        args = [
            executable,
            "--headless=new",
            "--remote-debugging-port=0",  # the chosen port goes to <profile>/DevToolsActivePort
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--no-proxy-server",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
        ]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        args.append("about:blank")
        self.log_path = workdir / "chromium.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        self._ids = itertools.count(1)
        self.exceptions: list[str] = []
        self.ws = None
        try:
            port, path = self._devtools_address(profile / "DevToolsActivePort")
            self.ws = connect(
                f"ws://127.0.0.1:{port}{path}",
                proxy=None,
                max_size=None,  # screenshots are megabytes of base64
                open_timeout=30,
                ping_interval=None,
            )
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]
            self.page("Page.enable")
            self.page("Runtime.enable")
            self.page(
                "Emulation.setDeviceMetricsOverride",
                width=VIEWPORT[0],
                height=VIEWPORT[1],
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    def _devtools_address(self, port_file: Path, timeout: float = 60.0) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CDPError(f"Chromium exited with {self.proc.returncode}: {self.log_tail()}")
            lines = port_file.read_text().splitlines() if port_file.exists() else []
            if len(lines) >= 2:
                return int(lines[0]), lines[1]
            time.sleep(0.1)
        raise CDPError(f"Chromium opened no DevTools port in {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def call(self, method: str, session: str | None = None, timeout: float = 60.0, **params):
        """Send one command and return its result; events read meanwhile are kept or dropped."""
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"{method}: no answer in {timeout:.0f} s")
            reply = json.loads(self.ws.recv(timeout=remaining))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if reply.get("method") == "Runtime.exceptionThrown":
                details = reply["params"]["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                self.exceptions.append(str(text))

    def page(self, method: str, **params):
        return self.call(method, session=self.session, **params)

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.page(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(
                f"{expression!r}: {details.get('exception', {}).get('description', details)}"
            )
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = WAIT_S):
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                error = self.js("document.getElementById('error')?.textContent || ''")
                raise AssertionError(
                    f"the page did not show {what} within {timeout:.0f} s"
                    f" (#error: {error!r}; page exceptions: {self.exceptions})"
                )
            time.sleep(0.2)

    def navigate(self, url: str) -> None:
        self.page("Page.navigate", url=url)
        self.wait_for(
            "document.readyState === 'complete' && !!document.getElementById('predict')",
            f"the playground at {url}",
        )

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width}; })()"
        )
        assert box and box["w"] > 0, f"{selector} is not on the page (or not visible)"
        for kind in ("mousePressed", "mouseReleased"):
            self.page(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=1,
            )

    def type_into(self, selector: str, text: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.page("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.page("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):  # the browser may be gone already
                self.call("Browser.close", timeout=10)
            self.ws.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a well-formed PNG, checking every chunk's CRC and that the picture is
    not one flat colour."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, chunks, pixels = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in the {kind!r} chunk"
        chunks.append(kind)
        if kind == b"IDAT":
            pixels += body
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", chunks
    width, height = struct.unpack(">II", data[16:24])
    raw = zlib.decompress(pixels)
    assert len(set(raw[: 1 << 20])) > 16, "the screenshot is (nearly) one flat colour"
    return width, height


def test_playground_predicts_explains_and_stores_feedback(deployed, tmp_path):
    pytest.importorskip("websockets.sync.client")
    service, client = deployed

    expected = client.post("/v1/predict", {"inputs": [TEXT]})
    assert expected.status_code == 200, expected.text
    expected_label = expected.json()["predictions"][0]["label"]
    champion = client.get("/v1/model").json()["champion"]
    labels = champion["labels"]
    other_label = next(label for label in labels if label != expected_label)

    browser = Browser(BROWSER, tmp_path)
    try:
        browser.navigate(service.url)
        assert browser.js("document.title").startswith(f"{champion['name']} v")

        browser.type_into("#input-text", TEXT)
        assert browser.js("document.getElementById('input-text').value") == TEXT
        browser.click("#predict")
        browser.wait_for(
            "document.getElementById('prediction-label').textContent.trim() !== ''"
            " && document.querySelectorAll('#tokens .token').length > 0",
            "a prediction and its highlighted tokens",
        )
        shown = browser.js("document.getElementById('prediction-label').textContent.trim()")
        assert shown == expected_label
        bars = browser.js(
            "[...document.querySelectorAll('#probabilities [data-label]')]"
            ".map(e => e.dataset.label)"
        )
        assert sorted(bars) == sorted(labels)
        tokens = browser.js(
            "[...document.querySelectorAll('#tokens .token')]"
            ".map(e => ({text: e.textContent, score: e.dataset.score}))"
        )
        assert [t["text"] for t in tokens] == re.findall(r"\w+", TEXT)
        assert all(isinstance(float(t["score"]), float) for t in tokens)
        # The highlighted text reads as the input, gaps and punctuation included.
        assert browser.js("document.getElementById('tokens').textContent") == TEXT

        browser.click("#feedback-down")
        browser.wait_for(
            "!document.getElementById('correct-fields').hidden", "the correct-label picker"
        )
        browser.js(
            "(() => { const s = document.getElementById('correct-label');"
            f" s.value = {json.dumps(other_label)};"
            " s.dispatchEvent(new Event('change', {bubbles: true})); return s.value; })()"
        )
        browser.click("#feedback-send")
        status = browser.wait_for(
            "(t => t.startsWith('thanks, stored as ') && t)"
            "(document.getElementById('feedback-status').textContent)",
            "'thanks, stored as <id>' after sending feedback",
        )
        record_id = status.removeprefix("thanks, stored as ").strip()
        assert browser.js("document.getElementById('error').textContent") == ""
        assert browser.exceptions == []

        shot = browser.screenshot(tmp_path / "playground.png")
    finally:
        browser.close()

    stored = {r.id: r for r in read_feedback(service.feedback_dir)}
    assert record_id in stored, f"{record_id} not among the stored feedback {sorted(stored)}"
    record = stored[record_id]
    assert (record.input, record.prediction, record.label) == (TEXT, expected_label, other_label)
    assert record.arm == "champion" and record.request_id

    data = shot.read_bytes()
    width, height = png_size(data)
    assert VIEWPORT[0] - 40 <= width <= VIEWPORT[0] and height >= 400, (width, height)
    assert len(data) > 10_000, f"a {len(data)}-byte screenshot is too small to show the page"
    print(f"\nplayground screenshot: {shot} ({width}x{height}, {len(data)} bytes)")
