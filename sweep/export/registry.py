"""Register an exported model in the MLflow Model Registry, and move ``@champion`` only to a better one.

The model version is MLflow's PyTorch flavour in its ``pt2`` format (a ``torch.export``
program: loading it runs no pickled code and needs no depthsweep, only torch), with a tensor
signature and the export files (``model.onnx``, ``model.pt2``/``model.pt``, ``state_dict.pt``,
``config.yaml``, ``metrics.json``, ``MODEL_CARD.md``) attached. It is logged against the winner's
run by id, without reopening that run, so the run's end time and duration stay the training's.

``@champion`` moves to the new version only when it was selected on the same data (the
``depthsweep.data_digest`` tag: training file, split, validation carve-out, size) by the same
metric and beats the current champion's validation value, or on ``--promote``. Models trained
on other data (a synthetic quickstart and a real-NYU sweep on one server) never replace each
other's champion without ``--promote``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depthcore.data.cache import IDENTITY_ATTRS, source_fingerprint, split_fingerprint
from depthcore.stages import FIRST_STAGE, ORDINAL_TASK, STAGES, better
from sweep.export.contract import InputGuard
from sweep.export.loaded import process_wide_stores

CHAMPION = "champion"
TAG_DATA_DIGEST = "depthsweep.data_digest"
TAG_SELECTION_METRIC = "depthsweep.selection_metric"
TAG_SELECTION_VALUE = "depthsweep.selection_value"
TAG_SELECTION_MODE = "depthsweep.selection_mode"
ATTACHED = ("model.onnx", "model.pt2", "model.pt", "state_dict.pt", "config.yaml", "metrics.json", "MODEL_CARD.md")


def data_digest(config: dict[str, Any]) -> str:
    """A digest of what a model was trained and selected on: the NYU file's content (a prepared
    cache counts as its source file), the split and validation carve-out, the size, and for a
    DIW fine-tune the DIW training pairs. Equal digests: the validation values are comparable."""
    data = config.get("data") or {}
    identity: dict[str, Any] = {key: data.get(key) for key in ("size", "depth", "scheme", "val_fraction", "split_seed")}
    identity["nyu_file"] = _nyu_identity(Path(str(data.get("nyu_path"))))
    identity["split"] = split_fingerprint(data.get("split_file"))
    if STAGES[(config.get("train") or {}).get("stage", FIRST_STAGE)].task == ORDINAL_TASK:
        identity["diw_train"] = source_fingerprint(str(data.get("diw_train_csv")))
        identity["diw_val_fraction"] = data.get("diw_val_fraction")
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _nyu_identity(path: Path) -> str:
    if path.suffix == ".h5":
        from depthcore.data.matfile import open_h5

        with open_h5(path) as f:
            recorded = f.attrs.get(IDENTITY_ATTRS[0])
        if recorded is not None:
            return recorded.decode() if isinstance(recorded, bytes) else str(recorded)
    return source_fingerprint(path)


def signature_for(size: tuple[int, int]) -> Any:
    """Input ``image`` float32 ``(-1, 3, H, W)``, output ``depth`` float32 ``(-1, 1, H, W)``."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    height, width = size
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, height, width), "image")]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, height, width), "depth")]))


def requirements() -> list[str]:
    """What loading the ``pt2`` model needs: torch and numpy as installed here (MLflow adds itself)."""
    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]


def register_model(model: torch.nn.Module, dest: Path, info: dict[str, Any], tracking_uri: str, *,
                   promote: bool = False) -> dict[str, Any]:
    """Log and register ``model`` (see the module docstring); returns ``{"version", "champion",
    "reason", "data_digest"}``: whether ``@champion`` now points at this version, and why."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)  # not the process-wide registry URI
    name, size = info["registered_name"], (int(info["input_size"][0]), int(info["input_size"][1]))
    example = np.random.default_rng(0).random((2, 3, *size), dtype=np.float32)
    with process_wide_stores(tracking_uri):
        # The logged model belongs to the winner's experiment; no run is started or reopened.
        mlflow.set_experiment(experiment_id=client.get_run(info["run_id"]).info.experiment_id)
        logged = mlflow.pytorch.log_model(
            InputGuard(model.eval().cpu()), name="model", run_id=info["run_id"], serialization_format="pt2",
            signature=signature_for(size), input_example=example, pip_requirements=requirements(),
            extra_files=[str(dest / f) for f in ATTACHED if (dest / f).is_file()], registered_model_name=name,
        )
    version = str(logged.registered_model_version)
    selection = info["selection"]
    digest = info["data"].get("digest") or ""
    tags = {TAG_DATA_DIGEST: digest, TAG_SELECTION_METRIC: selection["metric"],
            TAG_SELECTION_MODE: selection["mode"], TAG_SELECTION_VALUE: repr(float(selection["value"])),
            "study": info["study"], "stage": info["stage"], "architecture": info["architecture"]}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=(dest / "MODEL_CARD.md").read_text())
    moved, reason = champion_decision(client, name, tags, promote)
    if moved:
        client.set_registered_model_alias(name, CHAMPION, version)
    print(f"[export] registered models:/{name}/{version}; @{CHAMPION} "
          f"{'now points at it' if moved else 'unchanged'}: {reason}", flush=True)
    return {"version": int(version), "champion": moved, "reason": reason, "data_digest": digest}


def champion_decision(client: Any, name: str, new: dict[str, str], promote: bool) -> tuple[bool, str]:
    """``(move @champion?, why)`` for a new version with tags ``new`` (``register_model``'s)."""
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # MLflow raises RESOURCE_DOES_NOT_EXIST for an alias not set yet
        return True, "no champion yet"
    if promote:
        return True, f"--promote (replacing version {current.version})"
    old = current.tags or {}
    metric = new[TAG_SELECTION_METRIC]
    if old.get(TAG_DATA_DIGEST) != new[TAG_DATA_DIGEST]:
        return False, (f"version {current.version} was selected on other data (digest {old.get(TAG_DATA_DIGEST)} vs "
                       f"{new[TAG_DATA_DIGEST]}); their values do not compare; --promote to replace it")
    if old.get(TAG_SELECTION_METRIC) != metric:
        return False, (f"version {current.version} was selected by {old.get(TAG_SELECTION_METRIC)}, this one by "
                       f"{metric}; --promote to replace it")
    old_value, new_value = float(old[TAG_SELECTION_VALUE]), float(new[TAG_SELECTION_VALUE])
    if better(new_value, old_value, new[TAG_SELECTION_MODE]):
        return True, f"{metric} {new_value:.4f} beats version {current.version}'s {old_value:.4f}"
    return False, f"{metric} {new_value:.4f} does not beat version {current.version}'s {old_value:.4f}"
