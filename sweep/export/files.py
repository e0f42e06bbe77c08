"""The deployable files of one model: torch.export (or TorchScript), ONNX, state dict + config,
checked against eager PyTorch.

``write_model_files`` writes, for a model trained at H x W:

- ``model.pt2`` (default, ``pytorch_format="export"``): a ``torch.export`` program, loaded with
  ``torch.export.load(path).module()``, any batch size at H x W. It refuses pixel values outside
  [0, 1] with one message (``contract.InputGuard``) and a wrong H x W with torch's guard error.
- ``model.pt`` (``pytorch_format="torchscript"``, kept for runtimes that only read TorchScript,
  which torch deprecates): tracing bakes in U-Net++'s padding to a multiple of 32, so the traced
  network is wrapped in a scripted guard that rejects any other H x W, and values outside [0, 1],
  with a clear message.
- ``model.onnx``: dimensions named ``batch, channel, height, width`` (dynamic batch, fixed
  H x W), the input contract in its metadata (``sweep.export.contract``).
- ``state_dict.pt`` + ``config.yaml``: rebuild the eager model with depthcore (any H x W).

Every file is loaded back and compared with the eager model before the function returns.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from sweep.export.contract import InputGuard, input_contract, name_onnx_dimensions, run_onnx
from sweep.export.loaded import ExportError

EXPORTERS = ("dynamo", "torchscript")
"""ONNX exporters: torch.export-based (``dynamo``, needs onnxscript; torch's supported path) and
the older TorchScript-based one (``torchscript``; deprecated by torch, several times faster)."""

PYTORCH_FORMATS = {"export": "model.pt2", "torchscript": "model.pt"}
"""PyTorch deployment formats and their file names: ``torch.export`` (default) or TorchScript."""

TORCHSCRIPT_OPSET = 17
DYNAMO_OPSET = 20
"""ONNX opsets written by each exporter (20 is torch 2.14's default for the dynamo exporter)."""

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
        if bool(image.min() < 0) or bool(image.max() > 1):
            raise ValueError("depth model input: pixel values must be in [0, 1] (float32 RGB); divide 8-bit images by 255")
        return self.traced(image)


def write_model_files(
    model: nn.Module, config: dict[str, Any], size: tuple[int, int], out_dir: Path, *, onnx_exporter: str = "dynamo",
    pytorch_format: str = "export", unit: str = "depth in metres",
) -> dict[str, Any]:
    """Write model.pt2 (or model.pt), model.onnx, state_dict.pt and config.yaml; returns the check results.

    ``unit`` (what the output means) goes into the ONNX metadata with the input contract.

    ``config`` is the training config as a plain dict; its ``model`` section must describe
    ``model`` (``{"name", "args"}``). Raises ``ExportError`` when a file does not reproduce
    the eager outputs within ``TOLERANCE`` (relative to the largest output).
    """
    if onnx_exporter not in EXPORTERS:
        raise ValueError(f"onnx_exporter must be one of {', '.join(EXPORTERS)}, found {onnx_exporter!r}")
    if pytorch_format not in PYTORCH_FORMATS:
        raise ValueError(f"pytorch_format must be one of {', '.join(PYTORCH_FORMATS)}, found {pytorch_format!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    height, width = size
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, height, width, generator=generator)
    probe = torch.rand(3, 3, height, width, generator=generator)  # another batch size than traced

    torch.save(model.state_dict(), out_dir / "state_dict.pt")
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    pytorch_file = out_dir / PYTORCH_FORMATS[pytorch_format]
    for stale in PYTORCH_FORMATS.values():  # an earlier export in the other format
        (out_dir / stale).unlink(missing_ok=True)
    if pytorch_format == "export":
        _save_exported_program(model, example, pytorch_file)
    else:
        _save_torchscript(model, example, size, pytorch_file)
    _export_onnx(model, example, out_dir / "model.onnx", onnx_exporter)
    name_onnx_dimensions(out_dir / "model.onnx", size, input_contract(size, unit))

    with torch.no_grad():
        expected = model(probe)
        from_pytorch = load_pytorch_file(pytorch_file)(probe)
    from_onnx = torch.from_numpy(run_onnx(out_dir / "model.onnx", probe.numpy()))
    checks = {pytorch_format: relative_difference(from_pytorch, expected),
              "onnx": relative_difference(from_onnx, expected)}
    for name, difference in checks.items():
        if not difference <= TOLERANCE:
            raise ExportError(f"{out_dir}: the {name} model differs from eager PyTorch by {difference:.2e} "
                              f"(relative; allowed {TOLERANCE:.0e})")
    return {"max_relative_difference": checks, "input_shape": ["batch", 3, height, width],
            "onnx_exporter": onnx_exporter, "pytorch_format": pytorch_format, "pytorch_file": pytorch_file.name}


def staging_path(dest: Path) -> Path:
    """The hidden folder beside ``dest`` that an export of ``dest`` is written into."""
    return dest.parent / f".{dest.name}.partial"


def staging_folder(dest: Path) -> Path:
    """An empty ``staging_path(dest)`` (one a killed export left is emptied first); ``publish_folder``
    moves it into place."""
    staging = staging_path(dest)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish_folder(staging: Path, dest: Path) -> Path:
    """Replace ``dest`` by ``staging`` (the earlier export is removed only once the new one is whole);
    returns ``dest``."""
    if dest.exists():
        old = dest.parent / f".{dest.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(staging, dest)
        shutil.rmtree(old)
    else:
        os.replace(staging, dest)
    return dest


def load_pytorch_file(path: Path) -> Any:
    """The callable model of a ``model.pt2`` or ``model.pt`` file."""
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation: chosen knowingly here
        return torch.jit.load(str(path))


def _save_exported_program(model: nn.Module, example: Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(InputGuard(model), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def _save_torchscript(model: nn.Module, example: Tensor, size: tuple[int, int], path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches, deprecation
        traced = torch.jit.trace(model, example)
        scripted = torch.jit.script(FixedSizeInput(traced, *size))
        torch.jit.save(scripted, str(path))


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
                                        opset_version=DYNAMO_OPSET,
                                        input_names=["image"], output_names=["depth"])
            if program is None:
                raise ExportError(f"{path}: the ONNX exporter returned no program")
            program.save(str(path))
        else:
            try:
                torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=TORCHSCRIPT_OPSET,
                                  input_names=["image"], output_names=["depth"],
                                  dynamic_axes={"image": {0: "batch"}, "depth": {0: "batch"}})
            except torch.onnx.errors.UnsupportedOperatorError as err:
                # DPT's ViT resamples its position embeddings with antialiased bicubic interpolation,
                # which this exporter cannot translate at any opset; the dynamo exporter can.
                path.unlink(missing_ok=True)
                raise ExportError(f"{path}: the torchscript ONNX exporter (opset {TORCHSCRIPT_OPSET}) cannot translate "
                                  f"{_operator(err)}; export with --onnx-exporter dynamo "
                                  f"(opset {DYNAMO_OPSET})") from None


def _operator(err: Exception) -> str:
    """The ``aten::...`` operator an exporter error names, else its first line."""
    import re

    found = re.search(r"aten::\w+", str(err))
    return found.group(0) if found else str(err).splitlines()[0]

