"""Evaluate a checkpoint on a split: ``python -m depthcore.evaluate --checkpoint DIR --split test``.

NYU uses the standard protocol: predictions are upsampled to the ground truth's native
resolution and compared with the raw Kinect depth (Eigen crop at 480x640, valid range
1e-3..10 m, predictions clipped). A DIW fine-tuned model predicts relative depth, so
its NYU numbers are computed after per-image median scaling, and its DIW accuracy
and WHDR are reported beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from depthcore.baselines import TITLES, best_baseline, gain_over, split_baselines
from depthcore.checkpoint import load_checkpoint, model_from_checkpoint
from depthcore.config import ExperimentConfig, add_set_argument, parse_override, set_dotted
from depthcore.engine import evaluate_depth, evaluate_ordinal, resolve_device
from depthcore.errors import UserError, report
from depthcore.loaders import diw_dataset, make_loader, nyu_dataset
from depthcore.preflight import check_data, check_device, check_output_file
from depthcore.stages import DEPTH_STAGE, DEPTH_TASK, ORDINAL_STAGE, STAGES

# Results are keyed by the stage whose data they score (``DEPTH_STAGE.name``, ``ORDINAL_STAGE.name``).
DEPTH = DEPTH_STAGE.name
ORDINAL = ORDINAL_STAGE.name

NYU_KEYS = ["rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "silog", "d1", "d2", "d3", "mse_norm"]


def checkpoint_config(payload: dict[str, Any], checkpoint: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """The config stored in a loaded checkpoint, with ``--set`` overrides applied."""
    raw = payload["config"]
    for item in overrides or []:
        set_dotted(raw, *parse_override(item))
    return ExperimentConfig.from_dict(raw, source=f"{checkpoint} (config)")


def evaluate_checkpoint(
    checkpoint: str, split: str = "test", overrides: list[str] | None = None, device: str = "auto"
) -> dict[str, Any]:
    """Metrics of a checkpoint on ``split``: ``{DEPTH: {...}, ORDINAL: {...}, "median_scaled": bool,
    "baselines": {DEPTH: {...}, ORDINAL: {...}}, ...}``; the baselines (``depthcore.baselines``) are fitted on
    the training split and scored on ``split`` as the model is."""
    payload = load_checkpoint(checkpoint)
    cfg = checkpoint_config(payload, checkpoint, overrides)
    dev = resolve_device(device, "--device")
    model = model_from_checkpoint(payload).to(dev)
    # A stage trained on point-pair orderings predicts relative depth: scale it per image.
    relative = STAGES[cfg.train.stage].task != DEPTH_TASK
    result: dict[str, Any] = {"stage": cfg.train.stage, "split": split, "median_scaled": relative,
                              "model": payload["model"], "epoch": payload["epoch"]}
    if cfg.data.nyu_path:
        # Full-resolution ground truth for the test split (the standard protocol); the
        # training-size validation split otherwise.
        full = split == "test"
        data = nyu_dataset(cfg.replace(data={"augment": False}), split, full_res_gt=full)
        loader = make_loader(data, cfg, train=False, batch_size=4 if full else None)
        result[DEPTH] = evaluate_depth(model, loader, dev, full_res=full, median_scale=relative)
        result["nyu_frames"] = len(data)
    if relative or (cfg.data.diw_root and (cfg.data.diw_test_csv if split == "test" else cfg.data.diw_train_csv)):
        pairs = diw_dataset(cfg, "test" if split == "test" else "val")
        result[ORDINAL] = evaluate_ordinal(model, make_loader(pairs, cfg, train=False), dev)
        result["diw_pairs"] = len(pairs)
    found = split_baselines(cfg, split, dev, median_scale=relative)
    result["baselines"] = {k: found[k] for k in (DEPTH, ORDINAL) if k in found}
    if "train_mean_depth" in found:
        result["train_mean_depth"] = found["train_mean_depth"]
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{result['model']['name']} {result['model']['args']}  stage {result['stage']}  "
             f"epoch {result['epoch']}  split {result['split']}"]
    if DEPTH in result:
        note = " (after per-image median scaling: the model predicts relative depth)" if result["median_scaled"] else ""
        lines.append(f"NYU Depth V2, {result['nyu_frames']} frames{note}")
        lines.append("  " + "  ".join(f"{k:>8}" for k in NYU_KEYS))
        lines.append("  " + "  ".join(f"{result[DEPTH][k]:8.4f}" for k in NYU_KEYS) + "  model")
        baselines = result.get("baselines", {}).get(DEPTH, {})
        for name, values in baselines.items():
            lines.append("  " + "  ".join(f"{values[k]:8.4f}" for k in NYU_KEYS) + f"  baseline: {TITLES[name]}")
        lines.append("  " + below_best_line(result[DEPTH]["rmse"], baselines, "rmse", "RMSE"))
    if ORDINAL in result:
        lines.append(f"DIW, {result['diw_pairs']} pairs:")
        lines.append(f"  {'accuracy':>8}  {'WHDR':>8}")
        lines.append(f"  {result[ORDINAL]['accuracy']:8.4f}  {result[ORDINAL]['whdr']:8.4f}  model")
        rules = result.get("baselines", {}).get(ORDINAL, {})
        for name, values in rules.items():
            lines.append(f"  {values['accuracy']:8.4f}  {values['whdr']:8.4f}  baseline: {TITLES[name]}")
        lines.append("  " + below_best_line(result[ORDINAL]["accuracy"], rules, "accuracy", "accuracy"))
    return "\n".join(lines)


def below_best_line(value: float, baselines: dict[str, dict[str, float]], metric: str, label: str) -> str:
    """``RMSE 31.2 % below the best baseline (row prior ...)`` or ``accuracy 12.0 points above ...``."""
    best = best_baseline(baselines, metric)
    if best is None:
        return f"{label}: no baseline to compare with"
    gain = gain_over(value, best[1], metric)
    if metric == "accuracy":
        amount = f"{100 * abs(gain):.1f} points {'above' if gain >= 0 else 'below'}"
    else:
        amount = f"{100 * abs(gain):.1f} % {'below' if gain >= 0 else 'above'}"
    return f"{label} {amount} the best baseline ({TITLES[best[0]]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m depthcore.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory or checkpoint.pt")
    parser.add_argument("--split", default="test", choices=["val", "test"])
    add_set_argument(parser, "data.nyu_path=... (a config value stored in the checkpoint)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        # Every input is checked before any compute, and nothing is written until the end.
        check_device(args.device, "--device")
        if args.json:
            check_output_file(args.json, "--json")
        check_data(checkpoint_config(load_checkpoint(args.checkpoint), args.checkpoint, args.overrides))
        result = evaluate_checkpoint(args.checkpoint, args.split, args.overrides, args.device)
    except (UserError, FileNotFoundError) as err:
        return report(err)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
