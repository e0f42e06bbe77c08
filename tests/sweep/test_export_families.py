"""The export checks of test_export.py for the transformer families: TorchScript and ONNX equal eager, wrong sizes refused.

SegFormer exports with either ONNX exporter. DPT exports only with the ``dynamo`` one (ONNX
opset 18): its ViT resamples the position embeddings to the token grid with antialiased bicubic
interpolation (``aten::_upsample_bicubic2d_aa``), which the TorchScript-based exporter cannot
translate at any opset it offers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from depthcore.models import create_model, model_from_spec
from sweep.export.files import TOLERANCE, load_pytorch_file, relative_difference, write_model_files
from sweep.export.loaded import ExportError

# Not multiples of 32: the exported graphs carry the padding both families need.
SIZE = (72, 104)


def _check_export(name: str, exporter: str, out: Path) -> None:
    import onnxruntime

    height, width = SIZE
    torch.manual_seed(0)
    model = create_model(name).eval()
    config = {"model": dict(model.depthcore_spec), "data": {"size": [height, width]}, "train": {"stage": "nyu"}}
    checks = write_model_files(model, config, SIZE, out, onnx_exporter=exporter)
    assert checks["onnx_exporter"] == exporter
    assert max(checks["max_relative_difference"].values()) <= TOLERANCE

    image = torch.rand(2, 3, height, width)
    with torch.no_grad():
        expected = model(image)
        scripted = load_pytorch_file(out / checks["pytorch_file"])  # model.pt2, torch.export
        assert relative_difference(scripted(image), expected) <= TOLERANCE
        rebuilt = model_from_spec(yaml.safe_load((out / "config.yaml").read_text())["model"])
        rebuilt.load_state_dict(torch.load(out / "state_dict.pt", weights_only=True))
        assert relative_difference(rebuilt.eval()(image), expected) == 0.0

    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # dynamic batch
        x = torch.rand(batch, 3, height, width)
        with torch.no_grad():
            eager = model(x)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        assert got.shape == (batch, 1, height, width) and relative_difference(got, eager) <= TOLERANCE

    # Another size: torch.export's guard names the expected height; onnxruntime refuses the dimensions.
    with pytest.raises(Exception, match=rf"size\(\)\[2\] == {height}"):
        scripted(torch.rand(1, 3, 64, 64))
    with pytest.raises(Exception, match=rf"(?s)Got: 64 Expected: {height}.*Got: 64 Expected: {width}"):
        session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 64, 64), dtype=np.float32)})


@pytest.mark.slow
def test_segformer_exports_with_the_torchscript_onnx_exporter(tmp_path: Path) -> None:
    _check_export("segformer_3m", "torchscript", tmp_path)


@pytest.mark.slow
def test_dpt_exports_with_the_dynamo_onnx_exporter(tmp_path: Path) -> None:
    _check_export("dpt_7m", "dynamo", tmp_path)


@pytest.mark.slow
def test_dpt_with_the_torchscript_onnx_exporter_fails_naming_the_operator(tmp_path: Path) -> None:
    # Recorded so that a torch release which adds the translation shows up here.
    model = create_model("dpt_7m").eval()
    config = {"model": dict(model.depthcore_spec), "data": {"size": list(SIZE)}, "train": {"stage": "nyu"}}
    with pytest.raises(ExportError, match=r"torchscript ONNX exporter \(opset 17\) cannot translate "
                                          r"aten::_upsample_bicubic2d_aa; export with --onnx-exporter dynamo"):
        write_model_files(model, config, SIZE, tmp_path, onnx_exporter="torchscript")
    assert (tmp_path / "model.pt2").is_file() and not (tmp_path / "model.onnx").exists()
