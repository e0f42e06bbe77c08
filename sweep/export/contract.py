"""The input contract of an exported depth model, written into and enforced by its files.

Every exported model takes float32 RGB batches ``(batch, 3, H, W)`` at its training size with
values in [0, 1] and returns ``(batch, 1, H, W)`` depth. ``model.pt2`` (``torch.export``)
refuses values outside [0, 1] itself (``InputGuard``); an ONNX graph cannot raise, so
``model.onnx`` carries the contract in its metadata and names its dimensions, and ``run_onnx``
checks a batch against that metadata before ONNX Runtime sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

RANGE_MESSAGE = ("depth model input: pixel values must be in [0, 1] (float32 RGB); "
                 "divide 8-bit images by 255")
RESIZE_METHOD = ("bilinear with antialiasing, align_corners=False (torch.nn.functional.interpolate(image, size=(H, W), "
                 "mode='bilinear', antialias=True)), the same resize the training data had")
DIMENSIONS = ("batch", "channel", "height", "width")
"""Names of the ONNX input and output dimensions (height and width are fixed numbers)."""


def input_contract(size: tuple[int, int], unit: str) -> dict[str, str]:
    """What an exported model expects and returns, as ONNX metadata (strings) and for the model card."""
    height, width = size
    return {
        "input_shape": f"(batch, 3, {height}, {width})",
        "input_height": str(height),
        "input_width": str(width),
        "input_layout": "NCHW, RGB channel order, float32",
        "input_range": "[0, 1]; normalisation is inside the model",
        "input_resize": RESIZE_METHOD,
        "output_shape": f"(batch, 1, {height}, {width})",
        "output_unit": unit,
    }


class InputGuard(nn.Module):
    """Refuses a batch with values outside [0, 1] with ``RANGE_MESSAGE``; exportable by
    ``torch.export`` (an asynchronous assert, kept in the graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        torch._assert_async((image.amin() >= 0) & (image.amax() <= 1), RANGE_MESSAGE)
        return self.model(image)


def name_onnx_dimensions(path: Path, size: tuple[int, int], metadata: dict[str, str]) -> None:
    """Name the ONNX model's input and output dimensions ``batch, channel, height, width`` (the
    exporter names the output's after internal nodes), fix height and width to the training size,
    and store ``metadata`` (the input contract) in the model's ``metadata_props``."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    height, width = size
    for value, channels in ((model.graph.input[0], 3), (model.graph.output[0], 1)):
        dims = value.type.tensor_type.shape.dim
        for dim, name, fixed in zip(dims, DIMENSIONS, (None, channels, height, width), strict=True):
            if fixed is None:
                dim.dim_param = name
            else:
                dim.dim_value = fixed
    del model.metadata_props[:]
    for key, text in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, text
    onnx.save(model, str(path))


def check_batch(batch: np.ndarray, size: tuple[int, int], source: str = "input") -> None:
    """Raise ``ValueError`` naming what is wrong when ``batch`` breaks the contract at ``size``."""
    height, width = size
    if batch.ndim != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != (height, width):
        hint = (" (channels last: transpose to (batch, 3, H, W))" if batch.ndim == 4 and batch.shape[-1] == 3
                else f" (resize: {RESIZE_METHOD})")
        raise ValueError(f"{source}: expected a batch of shape (batch, 3, {height}, {width}), "
                         f"found {tuple(batch.shape)}{hint}")
    if batch.dtype != np.float32:
        raise ValueError(f"{source}: expected float32 values, found {batch.dtype}")
    low, high = float(batch.min()), float(batch.max())
    if low < 0 or high > 1:
        raise ValueError(f"{source}: {RANGE_MESSAGE}; found values from {low:g} to {high:g}")


def onnx_size(session: Any) -> tuple[int, int]:
    """The input size an ONNX Runtime session's model declares (metadata, else the input shape)."""
    meta = session.get_modelmeta().custom_metadata_map
    if "input_height" in meta and "input_width" in meta:
        return int(meta["input_height"]), int(meta["input_width"])
    shape = session.get_inputs()[0].shape
    return int(shape[2]), int(shape[3])


def run_onnx(path: str | Path, batch: np.ndarray) -> np.ndarray:
    """Depth for ``batch`` from ``model.onnx``, after checking it against the model's contract."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check_batch(batch, onnx_size(session), source=f"{path}")
    return session.run(None, {session.get_inputs()[0].name: batch})[0]
