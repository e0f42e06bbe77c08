"""``MODEL_CARD.md`` of an exported model: what it is, how it was trained and chosen, how well it does."""

from __future__ import annotations

import json
from typing import Any

from depthcore.baselines import TITLES
from depthcore.evaluate import NYU_KEYS, below_best_line
from depthcore.models import get_family
from depthcore.stages import DEPTH_STAGE, DEPTH_TASK, ORDINAL_STAGE, STAGES
from sweep.export.contract import RESIZE_METHOD

SEED_TABLE = """\
| model (seed study) | parameters | NYU MSE (normalised depth) | DIW accuracy |
|---|---|---|---|
| U-Net++, resnext50_32x4d ImageNet encoder | 48 M | 0.032 | 65.3 % |
| LR-ASPP MobileNetV3-Large, COCO weights, all frozen but a 21->1 convolution | 3.2 M (190 trainable) | 0.058 | 58.4 % |

From the course study depthsweep started from: NYU Depth V2 at 200x200 with a seeded random
70/15/15 frame split, then fine-tuning on DIW. "NYU MSE" there is `mse_norm` here, on
normalised depth. The numbers are not comparable with a model trained on other data or splits,
and the two models differ in size and in what was trained as much as in architecture."""


def model_card(info: dict[str, Any]) -> str:
    """Markdown model card from the ``metrics.json`` contents of one export (see ``sweep.export``)."""
    model, size, stage = info["model"], info["input_size"], info["stage"]
    relative = STAGES[stage].task != DEPTH_TASK
    unit = "relative depth (arbitrary scale per image)" if relative else "depth in metres"
    lines = [
        f"# {info['registered_name']}",
        "",
        f"{get_family(model['architecture']).label} depth model selected by `python -m sweep.export` from sweep "
        f"`{info['study']}`, stage `{stage}` ({'fine-tuned on DIW relative-depth pairs' if relative else 'supervised NYU Depth V2 depth'}).",
        "",
        "## Model",
        "",
        f"- registry name `{model['name']}`, arguments `{json.dumps(model['args'])}`; family `{model['architecture']}`, "
        f"encoder/backbone `{model['encoder']}`",
        f"- parameters: {model['parameters_total']:,} total, {model['parameters_trainable']:,} trainable",
        f"- input: float32 RGB images `(B, 3, {size[0]}, {size[1]})` (NCHW, RGB order) with values in [0, 1]: divide "
        f"8-bit pixels by 255 (normalisation is inside the model); output: `(B, 1, {size[0]}, {size[1]})` {unit}, "
        "always > 0",
        f"- resize an image to {size[0]}x{size[1]} (height x width) first, as the training data was: {RESIZE_METHOD}; "
        "resize the prediction back to the image's size bilinearly (`python -m sweep.predict` does both)",
        f"- {_pytorch_file(info)} and `model.onnx` take any batch size at {size[0]}x{size[1]} only (the exported "
        "graphs fix U-Net++'s padding). `model.onnx` names its dimensions `batch, channel, height, width` and carries "
        "this contract in its metadata (`onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map`); "
        "`sweep.export.contract.run_onnx` checks shape and range before running it. For other sizes resize the "
        "image, or rebuild the eager model, which takes any size: "
        "`depthcore.models.model_from_spec(yaml.safe_load(open('config.yaml'))['model'])` and "
        "`load_state_dict(torch.load('state_dict.pt'))`.",
        f"- exported files agree with eager PyTorch within {_max_diff(info):.1e} (relative; the PyTorch file and "
        "onnxruntime, checked on export)",
        "",
        "## Training and selection",
        "",
        f"- training data: {info['data']['description']}",
        f"- NYU split: {info['data']['split']}; validation carved from train by scene",
        f"- selected by the validation metric only: `{info['selection']['metric']}` = "
        f"{info['selection']['value']:.4f} ({info['selection']['mode']}) at epoch {info['selection']['epoch']}, "
        f"best of {info['selection']['candidates']} {get_family(model['architecture']).label} trials of the stage",
        f"- MLflow run `{info['run_id']}` (trial `{info['trial_key']}`)"
        + (f", started from stage-1 run `{info['stage1_run_id']}`" if info.get("stage1_run_id") else ""),
        f"- sampled parameters: `{json.dumps(info.get('sampled_params', info['params']), sort_keys=True)}` "
        "(all parameters: `metrics.json`, or the run's params in MLflow)",
        "",
        "## Results",
        "",
        _metrics_table(info),
        "",
        f"CPU latency at batch 1, {size[0]}x{size[1]}, {int(info['latency']['threads'])} thread(s), eager PyTorch "
        f"{info['environment']['torch']}: median {info['latency']['median_ms']:.1f} ms "
        f"(p90 {info['latency']['p90_ms']:.1f} ms) on {info['environment']['cpu']}.",
    ]
    if info.get("seeds"):
        seeds = info["seeds"]
        lines += ["", f"Retrained with {seeds['n']} seeds: test `{seeds['metric']}` mean {seeds['mean']:.4f}, "
                  f"95 % confidence interval ±{seeds['ci95']:.4f} (values {', '.join(f'{v:.4f}' for v in seeds['values'])})."]
    lines += ["", "## The seed study, for comparison", "", SEED_TABLE, "", "## Known limits", ""]
    lines += [f"- {limit}" for limit in _limits(info)]
    return "\n".join(lines) + "\n"


def _metrics_table(info: dict[str, Any]) -> str:
    test, val, baselines = info["test"], info["validation"], info.get("test_baselines", {})
    depth, ordinal = test.get(DEPTH_STAGE.name, {}), test.get(ORDINAL_STAGE.name, {})
    keys = [k for k in NYU_KEYS if k in depth]
    rows = []
    if keys:
        scaled = " (per-image median scaling: the model predicts relative depth)" if STAGES[info["stage"]].task != DEPTH_TASK else ""
        rows += [f"{_test_set(info)}, {test['nyu_frames']} frames, standard protocol{scaled}:", "",
                 "| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys),
                 "| this model | " + " | ".join(f"{depth[k]:.4f}" for k in keys) + " |"]
        for name, values in baselines.get(DEPTH_STAGE.name, {}).items():
            rows.append(f"| baseline: {TITLES[name]} | " + " | ".join(f"{values[k]:.4f}" for k in keys) + " |")
        rows += ["", below_best_line(depth["rmse"], baselines.get(DEPTH_STAGE.name, {}), "rmse", "RMSE") + ".", ""]
    if ordinal:
        rules = baselines.get(ORDINAL_STAGE.name, {})
        rows += [f"DIW test split, {test['diw_pairs']} pairs:", "", "| | accuracy | WHDR |", "|---|---|---|",
                 f"| this model | {ordinal['accuracy']:.4f} | {ordinal['whdr']:.4f} |"]
        rows += [f"| baseline: {TITLES[name]} | {v['accuracy']:.4f} | {v['whdr']:.4f} |" for name, v in rules.items()]
        rows += ["", below_best_line(ordinal["accuracy"], rules, "accuracy", "Accuracy") + ".", ""]
    if baselines:
        rows += ["Baselines (`depthcore.baselines`): fitted on the training split only and scored like the model"
                 + (" (median-scaled like it)" if STAGES[info["stage"]].task != DEPTH_TASK else "") + ".", ""]
    rows.append("Validation at the selected epoch: "
                + ", ".join(f"`{k}` {v:.4f}" for k, v in sorted(val.items())))
    return "\n".join(rows)


def _test_set(info: dict[str, Any]) -> str:
    """What the test frames really are: NYU Depth V2's, or the synthetic rooms' held-out split."""
    if info["data"].get("synthetic"):
        return "Synthetic test split (depthsweep's rendered rooms in the NYU file format, not NYU Depth V2)"
    return "NYU Depth V2 test split"


def _pytorch_file(info: dict[str, Any]) -> str:
    name = info["files"].get("pytorch_file", "model.pt")
    kind = "TorchScript, deprecated by torch" if name == "model.pt" else "`torch.export.load(path).module()`"
    guard = "; refuses values outside [0, 1]"
    return f"`{name}` ({kind}{guard})"


def _max_diff(info: dict[str, Any]) -> float:
    return max(info["files"]["max_relative_difference"].values())


def _limits(info: dict[str, Any]) -> list[str]:
    limits = []
    if info["data"].get("synthetic"):
        limits.append("trained on depthsweep's procedurally rendered rooms (synthetic data in the NYU/DIW file "
                      "formats): a pipeline check, not a model for real photographs")
    if STAGES[info["stage"]].task != DEPTH_TASK:
        limits.append("predicts relative depth only: scale and shift are arbitrary, compare orderings or "
                      "median-scale against a reference before reading metres")
    limits.append(f"trained and tested at {info['input_size'][0]}x{info['input_size'][1]}; other resolutions are "
                  "untested")
    limits.append("one training run: differences between architectures smaller than the seed-to-seed spread "
                  "(`python -m sweep.export --seeds N`) are not differences")
    return limits
