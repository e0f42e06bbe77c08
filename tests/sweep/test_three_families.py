"""Three model families (U-Net++, LR-ASPP, SegFormer) through one sweep, its export and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sweep_fixtures import TINY_SPEC

from depthcore.models import get_family, model_family
from sweep.run import main

pytestmark = pytest.mark.slow

FAMILIES = ("unetpp_3m", "lraspp_3m", "segformer_3m")


def test_three_families_sweep_export_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    text = (TINY_SPEC.replace("name: tiny,", "name: three,")
            .replace("choices: [unetpp_3m, lraspp_3m]", f"choices: [{', '.join(FAMILIES)}]")
            .replace("nyu: {num_samples: 4}", "nyu: {num_samples: 3}")
            .replace("diw: {num_samples: 2,", "diw: {num_samples: 3,")
            .replace("{type: asha, grace_period: 1, reduction_factor: 2}", "{type: fifo}")
            .replace("train/epochs: 2", "train/epochs: 1"))
    spec = tmp_path / "three.yaml"
    spec.write_text(text)
    assert main([str(spec), "--export", "--onnx-exporter", "torchscript", "--report"]) == 0

    sweep_dir = tmp_path / "out" / "three"
    exported = json.loads((sweep_dir / "export" / "exported.json").read_text())
    labels = {get_family(model_family(name)).label for name in FAMILIES}
    for stage in ("nyu", "diw"):
        # Each family got its enqueued first trial in both stages, so each has a winner to export.
        assert {e["architecture"] for e in exported if e["stage"] == stage} == {model_family(n) for n in FAMILIES}
    for entry in exported:
        metrics = json.loads((Path(entry["directory"]) / "metrics.json").read_text())
        assert metrics["architecture"] == entry["architecture"]
        card = (Path(entry["directory"]) / "MODEL_CARD.md").read_text()
        assert get_family(entry["architecture"]).label in card
    report = (sweep_dir / "report" / "report.md").read_text()
    for label in labels:
        assert label in report
