"""The MLflow UI shows two tracked trials side by side, rendered by a real headless Chromium."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from html.parser import HTMLParser

import numpy as np
import pytest
from _require import require_tool
from PIL import Image

from depthcore.config import ExperimentConfig
from sweep.tracking import TrialTracker, ensure_experiment, start_parent_run
from sweep.trial_tags import trial_tags

WINDOW = (1400, 2400)  # tall enough to show the Tags table below the params
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    # Virtual time runs the page's timers and waits for its requests, then the DOM is dumped.
    "--virtual-time-budget=15000",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the Chromium binary; session-scoped and listed first, so a skip comes before the server starts."""
    return require_tool("chromium", "apt-get install chromium chromium-driver")


class _VisibleText(HTMLParser):
    """The text nodes of a page, in document order, without scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self._hidden += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.chunks.append(data.strip())


def _contains_run(items: list[str], run: list[str]) -> bool:
    return any(items[i : i + len(run)] == run for i in range(len(items) - len(run) + 1))


# ~35 s on 2 busy cores: ~20 s to start the server (shared by the session), ~13 s of Chromium.
@pytest.mark.slow
def test_compare_page_shows_both_architectures(chromium, mlflow_server, tmp_path):
    experiment_id = ensure_experiment("ui study", mlflow_server)
    parent = start_parent_run(experiment_id, "nyu", "ui study", {"study": {"name": "ui study"}}, mlflow_server, resume=False)
    names, run_ids, final_rmse = ["ui-unetpp", "ui-lraspp"], [], []
    for i, (model, name) in enumerate(zip(["unetpp_3m", "lraspp_3m"], names, strict=True)):
        cfg = ExperimentConfig.from_dict({"model": {"name": model}, "data": {"nyu_path": "nyu.mat"},
                                          "optim": {"lr": 1.0e-3 * (i + 1)}})
        tracker = TrialTracker(mlflow_server, experiment_id, parent, f"trial_{i}")
        run_ids.append(tracker.start(cfg.flat(), trial_tags(cfg, parameter_count=1000 + i), run_name=name))
        for epoch in (1, 2, 3):
            tracker.log_epoch({"val/rmse": (0.9 + 0.3 * i) / epoch}, step=epoch)
        tracker.finish("completed")
        assert tracker.failures == 0
        final_rmse.append(f"{(0.9 + 0.3 * i) / 3:g}")

    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    url = f"{mlflow_server}/#/compare-runs?{query}"
    screenshot = tmp_path / "compare.png"
    began = time.monotonic()
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stderr[-3000:]

    page = _VisibleText()
    page.feed(result.stdout)
    text = page.chunks
    context = f"(chromium took {elapsed:.0f} s) page text: {' | '.join(text)[:3000]}"
    assert "Something went wrong" not in text, context
    assert _contains_run(text, ["Run Name:", *names]), context
    assert _contains_run(text, ["architecture", "unetpp", "lraspp"]), context  # the Tags table, one column per run
    assert _contains_run(text, ["val/rmse", *final_rmse]), context  # the Metrics table: last values
    assert _contains_run(text, ["encoder", "mobilenet_v2", "mobilenet_v3_large"]), context

    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.size == WINDOW
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10  # not a blank page
    assert (pixels < 100).mean() > 0.005  # dark text and lines were drawn
