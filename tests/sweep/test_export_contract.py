"""The exported files' input contract: torch.export by default, named ONNX dimensions, the [0, 1] guard, clear size errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from sweep.export.contract import RANGE_MESSAGE, check_batch, run_onnx
from sweep.export.files import TOLERANCE, load_pytorch_file, relative_difference, write_model_files

SIZE = (32, 48)


def _tiny_depth_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1), nn.Softplus()).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("contract")
    model = _tiny_depth_model()
    config = {"model": {"name": "tiny", "args": {}}, "data": {"size": list(SIZE)}, "train": {"stage": "nyu"}}
    checks = write_model_files(model, config, SIZE, out, onnx_exporter="dynamo")
    return model, out, checks


def test_the_pytorch_file_is_a_torch_export_program_equal_to_eager(exported):
    model, out, checks = exported
    assert checks["pytorch_format"] == "export" and checks["pytorch_file"] == "model.pt2"
    assert (out / "model.pt2").is_file() and not (out / "model.pt").exists()  # no TorchScript by default
    program = torch.export.load(str(out / "model.pt2")).module()
    x = torch.rand(5, 3, *SIZE)  # another batch size than exported with
    with torch.no_grad():
        assert relative_difference(program(x), model(x)) <= TOLERANCE


def test_pixel_values_outside_0_1_are_refused_with_one_message(exported):
    _, out, _ = exported
    program = load_pytorch_file(out / "model.pt2")
    with pytest.raises(RuntimeError, match=r"pixel values must be in \[0, 1\].*divide 8-bit images by 255"):
        program(torch.rand(1, 3, *SIZE) * 255)
    with pytest.raises(ValueError, match=r"divide 8-bit images by 255; found values from 0.* to 2[0-9][0-9]"):
        run_onnx(out / "model.onnx", (np.random.rand(1, 3, *SIZE) * 255).astype(np.float32))


def test_onnx_dimensions_are_named_and_the_contract_is_in_its_metadata(exported):
    _, out, _ = exported
    model = onnx.load(str(out / "model.onnx"))
    for value, channels in ((model.graph.input[0], 3), (model.graph.output[0], 1)):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", channels, *SIZE], dims
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["input_height"] == "32" and meta["input_width"] == "48"
    assert "[0, 1]" in meta["input_range"] and "bilinear" in meta["input_resize"] and meta["output_unit"]


def test_a_wrong_size_for_onnx_names_the_expected_shape_and_how_to_resize(exported):
    _, out, _ = exported
    with pytest.raises(ValueError, match=r"expected a batch of shape \(batch, 3, 32, 48\), found \(1, 3, 64, 64\) "
                                         r"\(resize: bilinear"):
        run_onnx(out / "model.onnx", np.zeros((1, 3, 64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match=r"channels last"):
        check_batch(np.zeros((1, 32, 48, 3), dtype=np.float32), SIZE)
    with pytest.raises(ValueError, match=r"float32.*uint8"):
        check_batch(np.zeros((1, 3, *SIZE), dtype=np.uint8), SIZE)
    assert run_onnx(out / "model.onnx", np.random.rand(2, 3, *SIZE).astype(np.float32)).shape == (2, 1, *SIZE)


def test_torchscript_stays_an_option_and_guards_range_and_size(tmp_path):
    model = _tiny_depth_model()
    config = {"model": {"name": "tiny", "args": {}}, "data": {"size": list(SIZE)}, "train": {"stage": "nyu"}}
    checks = write_model_files(model, config, SIZE, tmp_path, onnx_exporter="torchscript", pytorch_format="torchscript")
    assert checks["pytorch_file"] == "model.pt" and not (tmp_path / "model.pt2").exists()
    scripted = load_pytorch_file(tmp_path / "model.pt")
    with pytest.raises(Exception, match=RANGE_MESSAGE.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        scripted(torch.rand(1, 3, *SIZE) * 255)
    with pytest.raises(Exception, match=r"\(B, 3, 32, 48\), found \[1, 3, 64, 64\]"):
        scripted(torch.rand(1, 3, 64, 64))
