"""Load a model exported by ``sweep.export``: from its folder or from an MLflow URI.

An export folder holds ``config.yaml`` (the training config; its ``model`` section names the
network) and ``state_dict.pt``; the model is rebuilt with depthcore, so it takes any input size.
An MLflow URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH``) is
downloaded first and the export files are found in it (MLflow's PyTorch flavour puts them under
``extra_files/``). MLflow stays on this side: depthcore never imports it.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from depthcore.models import model_from_spec
from depthcore.stages import DEPTH_TASK, STAGES
from sweep.tracking.store import DEFAULT_STORE, existing_tracking_uri, first_line

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "state_dict.pt"
DEPTH_LABELS = {name: "depth (m)" if stage.task == DEPTH_TASK else "relative depth (arbitrary scale)"
                for name, stage in STAGES.items()}
"""Colour-bar label per training stage: ``nyu`` models predict metres, ``diw`` models an
ordering whose scale is arbitrary (they were fine-tuned on ordinal point pairs)."""
SEARCH_DEPTH = 2
"""How many folder levels below ``--model`` (or a download) are searched for the export files."""

# Two or more letters before the colon, so a Windows drive ("C:\\...") is not taken for a URI.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")

class PredictError(Exception):
    """A user mistake (bad ``--model``, an input that matches nothing): one line, exit code 2."""


class ExportError(PredictError):
    """An export is missing, incomplete, unreadable, or could not be written or checked against
    eager PyTorch; the message names it (the one export error of ``sweep.export``)."""


@dataclass
class ExportedModel:
    """A model rebuilt from an export, ready for inference (eval mode, on the CPU until used)."""

    model: nn.Module
    size: tuple[int, int]
    """Training resolution ``(H, W)`` (``data.size``): images are resized to it before prediction."""
    stage: str
    """``nyu`` (depth in metres) or ``diw`` (relative depth, arbitrary scale)."""
    name: str
    """Registered model name, e.g. ``unetpp_3m``."""
    config: dict[str, Any]
    """The full training config from ``config.yaml``."""
    directory: Path
    """The folder the export was read from (for an MLflow URI: a temporary download that lives
    as long as this object)."""
    source: str = ""
    """What was asked for: the folder or the MLflow URI."""
    _download: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)

    @property
    def depth_label(self) -> str:
        return DEPTH_LABELS[self.stage]


# -- loading an export -----------------------------------------------------------------------


def is_uri(source: str) -> bool:
    """Whether ``source`` is an MLflow URI rather than a local path."""
    return bool(_URI.match(source)) and not Path(source).exists()


def load_exported(source: str, tracking_uri: str | None = None) -> ExportedModel:
    """Rebuild the model of an export folder or an MLflow URI (raises ``ExportError``).

    A local ``source`` is the export folder itself, a file in it, or a folder holding exactly
    one export within ``SEARCH_DEPTH`` levels. An MLflow URI is downloaded into a temporary
    folder with ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI``, else ``runs/sweeps/mlflow.db``
    when it exists); the download must hold exactly one folder with both export files.
    """
    if is_uri(source):
        download = tempfile.TemporaryDirectory(prefix="depthsweep-model-")
        try:
            root = _download(source, Path(download.name), tracking_uri)
            directory = find_export_dir(root, source)
            exported = _load_directory(directory, source)
        except BaseException:
            download.cleanup()
            raise
        exported._download = download
        return exported
    path = Path(source)
    if not path.exists():
        raise ExportError(
            f"--model {source}: no such file or folder; expected an export folder holding {CONFIG_FILE} "
            f"and {WEIGHTS_FILE}, or an MLflow URI such as models:/NAME@ALIAS"
        )
    if path.is_file():
        path = path.parent
    return _load_directory(find_export_dir(path, source), source)


def find_export_dir(root: Path, source: str) -> Path:
    """The one folder at or below ``root`` (``SEARCH_DEPTH`` levels) with both export files."""
    root = Path(root)
    if root.is_file():
        root = root.parent
    found = [d for d in _folders(root, SEARCH_DEPTH) if (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()]
    if len(found) == 1:
        return found[0]
    if not found:
        present = sorted(p.name for p in root.iterdir())[:8]
        listing = ", ".join(present) if present else "nothing"
        raise ExportError(
            f"--model {source}: no folder holds both {CONFIG_FILE} and {WEIGHTS_FILE} "
            f"(an export written by sweep.export); found {listing}"
        )
    names = ", ".join(str(d.relative_to(root)) for d in found[:6])
    raise ExportError(f"--model {source}: {len(found)} exports found ({names}); name one of them")


def _folders(root: Path, depth: int) -> Iterator[Path]:
    yield root
    if depth > 0:
        for child in sorted(root.iterdir()):
            if child.is_dir():
                yield from _folders(child, depth - 1)


def _load_directory(directory: Path, source: str) -> ExportedModel:
    config_path = directory / CONFIG_FILE
    weights_path = directory / WEIGHTS_FILE
    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise ExportError(f"--model {source}: {config_path} is not readable YAML ({first_line(err)})") from None
    spec, size, stage = _read_config(config, config_path)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise ExportError(f"--model {source}: {weights_path} is not a saved state dict ({first_line(err)})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ExportError(f"--model {source}: {weights_path} does not hold a state dict of tensors")
    try:
        model = model_from_spec(spec)
    except (KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ExportError(f"--model {source}: {config_path}: model: {message}") from None
    try:
        outcome = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise ExportError(f"--model {source}: {weights_path} does not fit model {spec['name']!r}: {detail}") from None
    if outcome.missing_keys or outcome.unexpected_keys:
        parts = []
        if outcome.missing_keys:
            parts.append(f"{len(outcome.missing_keys)} missing (e.g. {outcome.missing_keys[0]})")
        if outcome.unexpected_keys:
            parts.append(f"{len(outcome.unexpected_keys)} unexpected (e.g. {outcome.unexpected_keys[0]})")
        raise ExportError(f"--model {source}: {weights_path} does not fit model {spec['name']!r}: "
                          f"{' and '.join(parts)} weights")
    return ExportedModel(model=model.eval(), size=size, stage=stage, name=str(spec["name"]), config=config,
                         directory=directory, source=source)


def _read_config(config: Any, path: Path) -> tuple[dict[str, Any], tuple[int, int], str]:
    """The model spec, training size and stage of an export's config (raises ``ExportError``)."""
    if not isinstance(config, dict):
        raise ExportError(f"{path}: expected a mapping (a depthcore training config), found {type(config).__name__}")
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ExportError(f"{path}: model: expected {{name: <model name>, args: {{...}}}}, found {model!r}")
    args = model.get("args") or {}
    if not isinstance(args, dict):
        raise ExportError(f"{path}: model.args: expected a mapping, found {args!r}")
    size = _section(config, "data").get("size")
    if (not isinstance(size, list | tuple) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ExportError(f"{path}: data.size: expected the training size [H, W], found {size!r}")
    stage = _section(config, "train").get("stage")
    if stage not in DEPTH_LABELS:
        raise ExportError(f"{path}: train.stage: expected one of {', '.join(DEPTH_LABELS)}, found {stage!r}")
    return {"name": model["name"], "args": dict(args)}, (int(size[0]), int(size[1])), stage


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def _download(uri: str, dst: Path, tracking_uri: str | None) -> Path:
    tracking_uri = tracking_uri or existing_tracking_uri()
    if tracking_uri is None and uri.startswith(("models:", "runs:")):
        # MLflow would fall back to ./mlflow.db, creating an empty store in the current folder.
        raise ExportError(f"--model {uri}: no MLflow store to look it up in: pass --tracking-uri or set "
                          f"MLFLOW_TRACKING_URI (there is no {DEFAULT_STORE} here)")
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        # Opening a missing sqlite file would create an empty store and report the model as unknown.
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():
            raise ExportError(f"--model {uri}: MLflow store {tracking_uri} does not exist (no file {db})")
    # Imported here: MLflow is needed only for URIs and takes seconds to import.
    import mlflow.artifacts

    where = f" (tracking URI {tracking_uri})" if tracking_uri else ""
    try:
        with process_wide_stores(tracking_uri):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri, registry_uri=tracking_uri
            )
    except Exception as err:  # MLflow raises its own and several standard types
        raise ExportError(f"--model {uri}: cannot download from MLflow{where}: {first_line(err)}") from None
    return Path(local)


@contextmanager
def process_wide_stores(uri: str | None) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs set to ``uri`` (if given), then put back.

    MLflow (3.x) resolves ``models:/`` URIs and logs models through these, ignoring a client's or
    a ``registry_uri`` argument there. Its setters also write ``MLFLOW_TRACKING_URI`` /
    ``MLFLOW_REGISTRY_URI`` into the environment (for subprocesses): left as they are, every later
    lookup and every child process would use this store. Both are restored afterwards.
    """
    if not uri:
        yield
        return
    import mlflow

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {key: os.environ.get(key) for key in keys}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # "not set": MLflow reads the environment again
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


