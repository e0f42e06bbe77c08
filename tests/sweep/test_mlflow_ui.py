"""The MLflow UI shows tracked trials side by side, rendered by a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from _require import require_tool
from PIL import Image
from webdriver import chromium_session

from depthcore.config import ExperimentConfig
from depthcore.viz import prediction_grid
from sweep.tracking import TrialTracker, ensure_experiment, start_parent_run
from sweep.tracking.views import trial_run_name
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


def _chromium_page(chromium: str, url: str, screenshot, profile) -> tuple[list[str], float]:
    """The visible text of ``url`` after its requests settle, and the seconds Chromium took."""
    began = time.monotonic()
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    page = _VisibleText()
    page.feed(result.stdout)
    return page.chunks, time.monotonic() - began


@pytest.mark.slow
def test_the_documented_compare_view_names_architectures_and_best_epoch_values(chromium, mlflow_server, tmp_path):
    """The README's compare view of a sweep's trials as the sweep logs them: run names with the
    architecture, the architecture tags side by side, the best-epoch summary metric. The
    experiment's note is checked in test_tracking. ``DEPTHSWEEP_SCREENSHOT_DIR`` keeps the screenshot."""
    spec = {"study": {"name": "compare study"}, "stages": {"nyu": {"metric": "val/rmse", "mode": "min"}}}
    experiment_id = ensure_experiment("compare study", mlflow_server)
    parent = start_parent_run(experiment_id, "nyu", "compare study", spec, mlflow_server, resume=False)
    names, run_ids = [], []
    for i, model in enumerate(["unetpp_3m", "lraspp_3m", "unetpp_3m", "lraspp_3m"]):
        cfg = ExperimentConfig.from_dict({"model": {"name": model}, "data": {"nyu_path": "nyu.mat"}})
        tags = trial_tags(cfg, parameter_count=1000 + i)
        tracker = TrialTracker(mlflow_server, experiment_id, parent, f"compare_{i}")
        names.append(trial_run_name(tags["architecture"], "nyu", i))
        run_ids.append(tracker.start(cfg.flat(), tags, run_name=names[-1]))
        for epoch in (1, 2, 3):
            metrics = {"val/rmse": (0.9 + 0.2 * i) / epoch, "val/d1": 0.2 * epoch}
            tracker.log_epoch(metrics, step=epoch)
            tracker.log_best(metrics, epoch)
        depth = torch.rand(2, 1, 32, 32) + 1.0
        tracker.log_preview(prediction_grid(torch.rand(2, 3, 32, 32), depth, depth * 1.1, path=tmp_path / f"{i}.png",
                                            title="validation split, epoch 3"), epoch=3)
        tracker.finish("completed")
        assert tracker.failures == 0

    screenshot = tmp_path / "compare_runs.png"
    # The README's documented view: tick the trials, Compare.
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    url = f"{mlflow_server}/#/compare-runs?{query}"
    text, elapsed = _chromium_page(chromium, url, screenshot, tmp_path / "profile")
    context = f"(chromium took {elapsed:.0f} s) page text: {' | '.join(text)[:4000]}"
    assert "Something went wrong" not in text, context
    assert _contains_run(text, ["Run Name:", *names]), context
    assert _contains_run(text, ["architecture", "unetpp", "lraspp", "unetpp", "lraspp"]), context
    assert "best/val_rmse" in text, context
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 100).mean() > 0.005, context
    keep = os.environ.get("DEPTHSWEEP_SCREENSHOT_DIR")
    if keep:
        shutil.copyfile(screenshot, Path(keep) / "mlflow_compare_runs.png")


@pytest.mark.slow
def test_the_compare_view_shows_every_runs_preview_side_by_side(chromium, mlflow_server, tmp_path):
    """Tick the trials, Compare, pick ``preview_val_best.png`` under Artifacts: the preview of each run
    appears beside the others (the file has one name at every run's artifact root)."""
    chromedriver = require_tool("chromedriver", "apt-get install chromium-driver")
    spec = {"study": {"name": "preview study"}, "stages": {"nyu": {"metric": "val/rmse", "mode": "min"}}}
    experiment_id = ensure_experiment("preview study", mlflow_server)
    parent = start_parent_run(experiment_id, "nyu", "preview study", spec, mlflow_server, resume=False)
    run_ids = []
    for i, model in enumerate(["unetpp_3m", "lraspp_3m"]):
        cfg = ExperimentConfig.from_dict({"model": {"name": model}, "data": {"nyu_path": "nyu.mat"}})
        tags = trial_tags(cfg, parameter_count=1000 + i)
        tracker = TrialTracker(mlflow_server, experiment_id, parent, f"preview_{i}")
        run_ids.append(tracker.start(cfg.flat(), tags, run_name=trial_run_name(tags["architecture"], "nyu", i)))
        tracker.log_epoch({"val/rmse": 0.9 - 0.1 * i}, step=1)
        depth = torch.rand(2, 1, 32, 32) + 1.0
        tracker.log_preview(prediction_grid(torch.rand(2, 3, 32, 32), depth, depth * (1.1 + i),
                                            path=tmp_path / f"{i}.png", title="validation split, epoch 1"), epoch=1)
        tracker.finish("completed")
        assert tracker.failures == 0

    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    with chromium_session(chromedriver, tmp_path / "profile", WINDOW) as browser:
        browser.open(f"{mlflow_server}/#/compare-runs?{query}")
        browser.click(browser.wait_for_text("preview_val_best.png"))
        count_shown = ("return Array.from(document.images).filter("
                       "i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0).map(i => i.src);")
        deadline = time.monotonic() + 60
        while len(set(shown := browser.script(count_shown))) < len(run_ids) and time.monotonic() < deadline:
            time.sleep(0.5)
        screenshot = tmp_path / "compare_previews.png"
        browser.screenshot(screenshot)
    # One picture per run, each fetched from its own run's artifacts (MLflow shows them as blobs).
    assert len(set(shown)) >= len(run_ids), shown
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10
    keep = os.environ.get("DEPTHSWEEP_SCREENSHOT_DIR")
    if keep:
        shutil.copyfile(screenshot, Path(keep) / "mlflow_compare_previews.png")
