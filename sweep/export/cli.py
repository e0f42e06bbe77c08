"""Pick each architecture's best model per stage, test it once, export it and register it.

``python -m sweep.export SWEEP_DIR [--out DIR] [--stage all|nyu|diw] [--seeds N] [--no-register] [--promote]
[--pytorch-format export|torchscript]``

For every stage and architecture of the sweep in SWEEP_DIR (``runs/sweeps/<study>/``):

1. the child run with the best *validation* metric is chosen (``sweep.select``);
2. its best-epoch checkpoint is evaluated once on the held-out test split (NYU: the standard
   metrics on the test frames plus ``mse_norm``; DIW: accuracy and WHDR), and the numbers are
   logged to that run as ``test/*``, with the CPU latency as ``export/latency_ms``;
3. ``SWEEP_DIR/export/<architecture>-<stage>/`` receives ``model.pt2`` (``torch.export``; or
   ``model.pt``, TorchScript, with ``--pytorch-format torchscript``), ``model.onnx``,
   ``state_dict.pt`` + ``config.yaml``, ``metrics.json`` and ``MODEL_CARD.md``;
4. the model is registered as ``depthsweep-<architecture>-<stage>`` (``sweep.export.registry``);
   the alias ``champion`` moves to it only when it beats the current champion on the same data.

``--seeds N`` retrains each winner's configuration with N more seeds and reports the test
metric's mean and 95 % confidence interval, and whether the architectures differ by more
than that spread (Welch's t-test).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from depthcore.checkpoint import load_checkpoint, model_from_checkpoint
from depthcore.evaluate import evaluate_checkpoint
from depthcore.latency import cpu_latency_ms
from depthcore.models import model_info
from depthcore.stages import DEPTH_STAGE, DEPTH_TASK, ORDINAL_STAGE, ORDINAL_TASK, STAGE_NAMES, STAGES, mode_of
from sweep.export.card import model_card
from sweep.export.files import (
    EXPORTERS,
    PYTORCH_FORMATS,
    ExportError,
    publish_folder,
    staging_folder,
    staging_path,
    write_model_files,
)
from sweep.export.loaded import DEPTH_LABELS
from sweep.export.registry import data_digest, register_model
from sweep.record import RecordError, SweepRecord, read_record, require_sqlite_file, write_atomic
from sweep.select import SelectionError, Study, TrialRun, load_study, value_at
from sweep.tracking import TAG_STAGE1_RUN
from sweep.trial_tags import describe_model

TAG_EXPORTED = "depthsweep.export_dir"
LATENCY_THREADS = 1


def registered_name(architecture: str, stage: str) -> str:
    return f"depthsweep-{architecture}-{stage}"


def export_sweep(
    sweep_dir: str | Path, out_dir: str | Path | None = None, *, stages: list[str] | None = None, seeds: int = 0,
    register: bool = True, onnx_exporter: str = "dynamo", device: str = "auto", pytorch_format: str = "export",
    promote: bool = False,
) -> list[dict[str, Any]]:
    """Export the winners of a sweep; returns each winner's ``metrics.json`` contents."""
    from mlflow import MlflowClient

    sweep = read_record(sweep_dir)
    require_sqlite_file("MLflow store", sweep.tracking_uri)  # export needs no Optuna storage
    study = load_study(sweep.tracking_uri, sweep.name)
    winners = study.winners()
    chosen = [s for s in (stages or list(winners)) if s in winners]
    if not chosen:
        raise SelectionError(f"{sweep_dir}: no finished trial to export in stage(s) {', '.join(stages or winners)}")
    out = Path(out_dir) if out_dir else Path(sweep_dir) / "export"
    client = MlflowClient(sweep.tracking_uri, registry_uri=sweep.tracking_uri)
    exported = []
    for stage in chosen:
        for architecture, winner in winners[stage].items():
            print(f"[export] {stage} {architecture}: run {winner.run_id} ({winner.metric} {winner.value:.4f} "
                  f"at epoch {winner.epoch})", flush=True)
            dest = out / f"{architecture}-{stage}"
            try:
                exported.append(export_winner(winner, study, sweep, client, dest, seeds=seeds, register=register,
                                              onnx_exporter=onnx_exporter, device=device,
                                              pytorch_format=pytorch_format, promote=promote))
            except BaseException:  # a failed or interrupted export leaves nothing half-written
                shutil.rmtree(staging_path(dest), ignore_errors=True)
                raise
    if seeds:
        comparison = compare_architectures(exported)
        write_atomic(out / "comparison.json", json.dumps(comparison, indent=2))
        for line in comparison_lines(comparison):
            print(line)
    write_atomic(out / "exported.json", json.dumps(
        [{k: e[k] for k in ("stage", "architecture", "run_id", "directory", "registered_name")} for e in exported],
        indent=2))
    return exported


def export_winner(
    winner: TrialRun, study: Study, sweep: SweepRecord, client: Any, dest: Path, *, seeds: int, register: bool,
    onnx_exporter: str, device: str, pytorch_format: str = "export", promote: bool = False,
) -> dict[str, Any]:
    """Test, export and register one winner; returns what ``metrics.json`` holds."""
    started = time.perf_counter()
    # Written into a hidden folder beside ``dest`` and moved into place whole: a killed export
    # leaves the earlier export (or none) and that folder, which the next export replaces.
    staging = staging_folder(dest)
    with tempfile.TemporaryDirectory(prefix="depthsweep-export-") as tmp:
        try:
            local = client.download_artifacts(winner.run_id, "checkpoint", tmp)
        except Exception as err:  # MLflow raises its own exception type for a missing path
            raise SelectionError(f"run {winner.run_id} ({winner.trial_key}): no checkpoint artifact to export "
                                 f"(checkpoint/checkpoint.pt): {str(err).splitlines()[0]}") from None
        checkpoint = Path(local) / "checkpoint.pt"
        payload = load_checkpoint(checkpoint)
        if payload["epoch"] != winner.epoch:
            # Possible after a resumed trial, whose process no longer knew its earlier best epoch.
            print(f"[export] warning: run {winner.run_id}: the checkpoint artifact is from epoch {payload['epoch']}, "
                  f"its best {winner.metric} from epoch {winner.epoch}; exporting the checkpoint", flush=True)
        print(f"[export] {winner.stage} {winner.architecture}: evaluating on the test split", flush=True)
        test = evaluate_checkpoint(str(checkpoint), "test", device=device)
    model = model_from_checkpoint(payload)
    config = dict(payload["config"])
    config["model"] = dict(payload["model"])  # stage diw: the stage-1 model it fine-tuned
    size = (int(config["data"]["size"][0]), int(config["data"]["size"][1]))
    print(f"[export] {winner.stage} {winner.architecture}: writing {PYTORCH_FORMATS[pytorch_format]} and ONNX to {dest}",
          flush=True)
    files = write_model_files(model, config, size, staging, onnx_exporter=onnx_exporter, pytorch_format=pytorch_format,
                              unit=DEPTH_LABELS[winner.stage])
    latency = cpu_latency_ms(model, size, batch=1, threads=LATENCY_THREADS)
    counts = model_info(model)
    info: dict[str, Any] = {
        "registered_name": registered_name(winner.architecture, winner.stage),
        "study": study.name, "stage": winner.stage, "architecture": winner.architecture,
        "run_id": winner.run_id, "trial_key": winner.trial_key, "stage1_run_id": winner.tags.get(TAG_STAGE1_RUN),
        "directory": str(dest.resolve()), "input_size": list(size),
        "model": {**payload["model"], **describe_model(payload["model"]["name"], payload["model"]["args"],
                                                       counts["total"]),
                  "parameters_total": counts["total"], "parameters_trainable": counts["trainable"]},
        "selection": {"metric": winner.metric, "mode": winner.mode, "value": winner.value, "epoch": winner.epoch,
                      "checkpoint_epoch": int(payload["epoch"]),
                      "candidates": sum(1 for r in study.trials[winner.stage]
                                        if r.architecture == winner.architecture)},
        "params": dict(sorted(winner.params.items())),
        "sampled_params": _sampled(winner, sweep),
        "validation": _validation_at(client, winner),
        "test": {k: test[k] for k in (DEPTH_STAGE.name, "nyu_frames", ORDINAL_STAGE.name, "diw_pairs", "median_scaled")
                 if k in test},
        "test_baselines": test.get("baselines", {}), "train_mean_depth": test.get("train_mean_depth"),
        "latency": latency, "files": files, "data": {**_data_description(sweep, config), "digest": data_digest(config)},
        "environment": {"torch": torch.__version__, "cpu": _cpu_name(), "python": platform.python_version()},
    }
    info["model"]["architecture"] = winner.architecture
    if seeds:
        from sweep.export.seeds import retrain_with_seeds

        info["seeds"] = retrain_with_seeds(config, seeds, staging / "seeds", select_metric=winner.metric, device=device)
    (staging / "metrics.json").write_text(json.dumps(info, indent=2, default=str))
    (staging / "MODEL_CARD.md").write_text(model_card(info))
    publish_folder(staging, dest)
    _log_to_run(client, winner, info)
    if register:
        info["registry"] = register_model(model, dest, info, sweep.tracking_uri, promote=promote)
        info["registered_version"] = info["registry"]["version"]
        write_atomic(dest / "metrics.json", json.dumps(info, indent=2, default=str))
    print(f"[export] {winner.stage} {winner.architecture}: {_headline(info)}; latency "
          f"{latency['median_ms']:.1f} ms; done in {time.perf_counter() - started:.0f} s", flush=True)
    return info


def test_metrics(info: dict[str, Any]) -> dict[str, float]:
    """The ``test/*`` metrics logged to a winner's run (NYU depth for stage nyu, DIW ordinal for both), and the
    baselines' beside them as ``baseline/<name>/test/*``."""
    metrics: dict[str, float] = {}
    test = info["test"]
    relative = STAGES[info["stage"]].task != DEPTH_TASK
    prefix = "test/median_scaled/" if relative else "test/"
    for key, value in test.get(DEPTH_STAGE.name, {}).items():
        metrics[prefix + key] = float(value)
    for key in ("accuracy", "whdr"):
        if key in test.get(ORDINAL_STAGE.name, {}):
            metrics[f"test/{key}"] = float(test[ORDINAL_STAGE.name][key])
    for part, found in info.get("test_baselines", {}).items():
        for name, values in found.items():
            for key, value in values.items():
                if part == ORDINAL_STAGE.name or not relative:
                    metrics[f"baseline/{name}/test/{key}"] = float(value)
    metrics["export/latency_ms"] = float(info["latency"]["median_ms"])
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def compare_architectures(exported: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage, the architectures' seed results: the best mean, and Welch's t-test of it against each other.

    The direction is the compared test metric's own (``depthcore.stages.mode_of``), whatever the
    stage selected by. ``significant``: the best differs from every other at p < 0.05.
    """
    from scipy import stats

    result: dict[str, Any] = {}
    for stage in sorted({e["stage"] for e in exported}):
        rows = [e for e in exported if e["stage"] == stage and e.get("seeds")]
        if len(rows) < 2:
            continue
        metric = rows[0]["seeds"]["metric"]
        mode = mode_of(metric)
        ranked = sorted(rows, key=lambda r: r["seeds"]["mean"], reverse=mode == "max")
        best = ranked[0]
        p_values = {r["architecture"]: float(stats.ttest_ind(best["seeds"]["values"], r["seeds"]["values"],
                                                              equal_var=False).pvalue) for r in ranked[1:]}
        result[stage] = {
            "metric": metric, "mode": mode, "p_value": max(p_values.values()), "p_values": p_values,
            "means": {r["architecture"]: r["seeds"]["mean"] for r in rows},
            "ci95": {r["architecture"]: r["seeds"]["ci95"] for r in rows},
            "better": best["architecture"], "significant": all(p < 0.05 for p in p_values.values()),
        }
    return result


def comparison_lines(comparison: dict[str, Any]) -> list[str]:
    lines = []
    for stage, c in comparison.items():
        means = ", ".join(f"{arch} {m:.4f} ± {c['ci95'][arch]:.4f}" for arch, m in c["means"].items())
        verdict = (f"{c['better']} is better (p = {c['p_value']:.3f})" if c["significant"]
                   else f"no difference beyond the seed-to-seed spread (p = {c['p_value']:.3f})")
        lines.append(f"[export] {stage}: {c['metric']} {means}: {verdict}")
    return lines


def _sampled(winner: TrialRun, sweep: SweepRecord) -> dict[str, str]:
    """The winner's values of the parameters its stage searched (Optuna's), as logged in MLflow."""
    spec = sweep.spec
    stage = (spec.get("stages") or {}).get(winner.stage) or {}
    keys = {*(spec.get("space") or {}), *(stage.get("space") or {}), "stage1_trial"}
    for choices in (spec.get("conditional") or {}).values():
        for space in (choices or {}).values() if isinstance(choices, dict) else []:
            keys.update(space or {})
    if any(k.startswith("model/args/") for k in keys):
        keys.add("model/args")  # model arguments are logged as one parameter
    return {k: v for k, v in sorted(winner.params.items()) if k in keys}


def _validation_at(client: Any, winner: TrialRun) -> dict[str, float]:
    values = {key: value_at(client, winner.run_id, key, winner.epoch)
              for key in sorted(k for k in winner.metrics if k.startswith("val/"))}
    return {k: v for k, v in values.items() if math.isfinite(v)}


def _log_to_run(client: Any, winner: TrialRun, info: dict[str, Any]) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in test_metrics(info).items()]
    client.log_batch(winner.run_id, metrics=metrics, tags=[RunTag(TAG_EXPORTED, info["directory"])])
    client.log_artifact(winner.run_id, str(Path(info["directory"]) / "MODEL_CARD.md"), "export")
    client.log_artifact(winner.run_id, str(Path(info["directory"]) / "metrics.json"), "export")


def _data_description(sweep: SweepRecord, config: dict[str, Any]) -> dict[str, Any]:
    synthetic = (sweep.spec.get("data") or {}).get("synthetic")
    data = config["data"]
    source = f"NYU-format file {data.get('nyu_path')}"
    if STAGES[config["train"]["stage"]].task == ORDINAL_TASK:
        source += f", fine-tuned on DIW pairs from {data.get('diw_train_csv')}"
    if synthetic:
        source = "synthetic rooms rendered by depthcore.data.synthetic in the real file formats; " + source
    split = (f"from {data['split_file']}" if data.get("split_file") else "the official NYU Depth V2 795/654 split")
    if data.get("scheme") == "seed_random":
        split = "the seed study's random 70/15/15 frame split"
    return {"description": source, "split": split, "synthetic": bool(synthetic)}


def _headline(info: dict[str, Any]) -> str:
    test = info["test"]
    parts = []
    depth, ordinal = test.get(DEPTH_STAGE.name), test.get(ORDINAL_STAGE.name)
    if depth:
        scaled = STAGES[info["stage"]].task != DEPTH_TASK
        parts.append(f"test rmse {depth['rmse']:.4f}" + (" (median-scaled)" if scaled else ""))
    if ordinal:
        parts.append(f"test accuracy {ordinal['accuracy']:.4f}")
    return ", ".join(parts) or "no test metrics"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.export", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="the sweep's folder, runs/sweeps/<study>")
    parser.add_argument("--out", help="export folder (default: SWEEP_DIR/export)")
    parser.add_argument("--stage", choices=["all", *STAGE_NAMES], default="all")
    parser.add_argument("--seeds", type=int, default=0, help="retrain each winner with N seeds (default 0: no)")
    parser.add_argument("--no-register", action="store_true", help="skip the MLflow Model Registry")
    parser.add_argument("--onnx-exporter", choices=EXPORTERS, default="dynamo",
                        help="torch.onnx exporter: dynamo (default) or the faster, deprecated torchscript")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--pytorch-format", choices=list(PYTORCH_FORMATS), default="export",
                        help="PyTorch file: export (model.pt2, torch.export; default) or torchscript (model.pt, "
                             "deprecated by torch, for runtimes that read only TorchScript)")
    parser.add_argument("--promote", action="store_true",
                        help="make each new version @champion even if it does not beat the current one")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.seeds < 0 or args.seeds == 1:
        print(f"error: --seeds: expected 0 or at least 2, found {args.seeds}", file=sys.stderr)
        return 2
    try:
        export_sweep(args.sweep_dir, args.out, stages=None if args.stage == "all" else [args.stage],
                     seeds=args.seeds, register=not args.no_register, onnx_exporter=args.onnx_exporter,
                     device=args.device, pytorch_format=args.pytorch_format, promote=args.promote)
    except (RecordError, SelectionError, ExportError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # The sweep's records are untouched; an export is redone whole, folder by folder.
        print(f"\ninterrupted during the export; the sweep is unchanged. Export again with:\n"
              f"  python -m sweep.export {' '.join(argv if argv is not None else sys.argv[1:])}", file=sys.stderr)
        return 130
    except Exception as err:  # MLflow's errors (e.g. a run without its checkpoint artifact): one line
        from mlflow.exceptions import MlflowException

        if not isinstance(err, MlflowException):
            raise
        print(f"error: MLflow: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
