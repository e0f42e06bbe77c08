"""A W3C WebDriver session on headless Chromium through ``chromedriver``, over plain HTTP.

For the UI tests that must click (MLflow's compare view shows an artifact of every run side by
side only once a file is picked). The protocol is a few JSON requests, so the standard library
does; no browser-automation package is needed.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services import free_port


class Browser:
    def __init__(self, base: str, session: str) -> None:
        self._base, self._session = base, session

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self._base}/session/{self._session}{path}", method=method, data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        return self.call("POST", "/execute/sync", {"script": source, "args": list(args)})

    def wait_for_text(self, text: str, timeout_s: float = 60) -> dict[str, str]:
        """The first element whose own text is ``text``, once the page shows it."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.call("POST", "/elements", {"using": "xpath", "value": f"//*[text()='{text}']"})
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no element with the text {text!r} after {timeout_s:.0f} s")
            time.sleep(0.5)

    def click(self, element: dict[str, str]) -> None:
        # A script click: the element may sit below the fold or under a sticky header.
        self.script("arguments[0].scrollIntoView(); arguments[0].click();", element)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("GET", "/screenshot")))


@contextmanager
def chromium_session(chromedriver: str, profile: Path, window: tuple[int, int]) -> Iterator[Browser]:
    port = free_port()
    driver = subprocess.Popen([chromedriver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/status", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                f"--window-size={window[0]},{window[1]}", f"--user-data-dir={profile}"]
        body = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"args": args}}}}
        request = urllib.request.Request(f"{base}/session", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            session = json.loads(response.read())["value"]["sessionId"]
        browser = Browser(base, session)
        try:
            yield browser
        finally:
            urllib.request.urlopen(urllib.request.Request(f"{base}/session/{session}", method="DELETE"), timeout=60).close()
    finally:
        driver.terminate()
        driver.wait(timeout=30)
