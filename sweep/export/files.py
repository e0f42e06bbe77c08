"""The deployable files of one model: TorchScript, ONNX, state dict + config, checked against eager PyTorch.

``write_model_files`` writes, for a model trained at H x W:

- ``model.pt``: TorchScript. Tracing bakes in U-Net++'s padding to a multiple of 32, so the
  traced network is wrapped in a scripted guard that rejects any other H x W with a clear
  message instead of failing deep inside the decoder. Any batch size works.
- ``model.onnx``: dynamic batch, fixed H x W (onnxruntime names both in its error otherwise).
- ``state_dict.pt`` + ``config.yaml``: rebuild the eager model with depthcore (any H x W).

Every file is loaded back and compared with the eager model before the function returns.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from sweep.export.loaded import ExportError

EXPORTERS = ("dynamo", "torchscript")
"""ONNX exporters: torch.export-based (``dynamo``, needs onnxscript; torch's supported path) and
the older TorchScript-based one (``torchscript``; deprecated by torch, several times faster)."""

TOLERANCE = 1e-4
"""Largest relative difference allowed between an exported model and eager PyTorch."""


class FixedSizeInput(nn.Module):
    """Scripted guard around a traced depth model: (B, 3, H, W) at the traced H x W only."""

    def __init__(self, traced: torch.jit.ScriptModule, height: int, width: int) -> None:
        super().__init__()
        self.traced = traced
        self.height = height
        self.width = width

    def forward(self, image: Tensor) -> Tensor:
        if image.dim() != 4 or image.size(1) != 3 or image.size(2) != self.height or image.size(3) != self.width:
            raise ValueError(
                "this TorchScript depth model takes images of shape (B, 3, " + str(self.height) + ", "
                + str(self.width) + "), found " + str(list(image.shape))
                + "; resize the images, or rebuild the eager model from state_dict.pt + config.yaml for other sizes"
            )
        return self.traced(image)


def write_model_files(
    model: nn.Module, config: dict[str, Any], size: tuple[int, int], out_dir: Path, *, onnx_exporter: str = "dynamo"
) -> dict[str, Any]:
    """Write model.pt, model.onnx, state_dict.pt and config.yaml; returns the check results.

    ``config`` is the training config as a plain dict; its ``model`` section must describe
    ``model`` (``{"name", "args"}``). Raises ``ExportError`` when a file does not reproduce
    the eager outputs within ``TOLERANCE`` (relative to the largest output).
    """
    if onnx_exporter not in EXPORTERS:
        raise ValueError(f"onnx_exporter must be one of {', '.join(EXPORTERS)}, found {onnx_exporter!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    height, width = size
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, height, width, generator=generator)
    probe = torch.rand(3, 3, height, width, generator=generator)  # another batch size than traced

    torch.save(model.state_dict(), out_dir / "state_dict.pt")
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        traced = torch.jit.trace(model, example)
    scripted = torch.jit.script(FixedSizeInput(traced, height, width))
    torch.jit.save(scripted, str(out_dir / "model.pt"))
    _export_onnx(model, example, out_dir / "model.onnx", onnx_exporter)

    with torch.no_grad():
        expected = model(probe)
        from_torchscript = torch.jit.load(str(out_dir / "model.pt"))(probe)
    from_onnx = torch.from_numpy(_run_onnx(out_dir / "model.onnx", probe.numpy()))
    checks = {"torchscript": relative_difference(from_torchscript, expected),
              "onnx": relative_difference(from_onnx, expected)}
    for name, difference in checks.items():
        if not difference <= TOLERANCE:
            raise ExportError(f"{out_dir}: the {name} model differs from eager PyTorch by {difference:.2e} "
                              f"(relative; allowed {TOLERANCE:.0e})")
    return {"max_relative_difference": checks, "input_shape": ["batch", 3, height, width],
            "onnx_exporter": onnx_exporter}


def relative_difference(actual: Tensor, expected: Tensor) -> float:
    """``max |actual - expected| / max |expected|``."""
    scale = float(expected.abs().max().clamp_min(1e-12))
    return float((actual.float() - expected.float()).abs().max()) / scale


def _export_onnx(model: nn.Module, example: Tensor, path: Path, exporter: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                        input_names=["image"], output_names=["depth"])
            if program is None:
                raise ExportError(f"{path}: the ONNX exporter returned no program")
            program.save(str(path))
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                              input_names=["image"], output_names=["depth"],
                              dynamic_axes={"image": {0: "batch"}, "depth": {0: "batch"}})


def _run_onnx(path: Path, image: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0]
