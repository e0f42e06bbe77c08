"""A valid spec as YAML text, one section at a time, for the spec tests to vary."""

from __future__ import annotations

from pathlib import Path

# A valid spec, one YAML text per section; cases replace sections (None removes one).
BASE = {
    "study": "name: unit\nn_startup_trials: 2",
    "data": "synthetic: {out: generated, frames: 8, height: 32, width: 32}",
    "fixed": "data/size: [32, 32]\ntrain/epochs: 3\ntrain/threads: 1",
    "space": (
        "optim/lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "model/name: {type: categorical, choices: [unetpp, lraspp]}\n"
        "data/batch_size: {type: int, low: 2, high: 8, step: 2}"
    ),
    "conditional": (
        "model/name:\n"
        "  unetpp: {model/args/encoder: {type: categorical, choices: [mobilenet_v2, resnet18]}}\n"
        "  lraspp: {model/args/size: {type: categorical, choices: [large, small]}}"
    ),
    "stages": "nyu: {num_samples: 4}\ndiw: {num_samples: 2, top_k: 1, fixed: {train/epochs: 2}}",
    "scheduler": "type: asha\ngrace_period: 1\nreduction_factor: 2",
    "resources": "cpu: 1\ngpu: 0",
}
REAL_DATA = "nyu_path: nyu/nyu.mat\ndiw_root: diw\ndiw_train_csv: diw/DIW_train_val.csv\ndiw_test_csv: diw/DIW_test.csv"


def spec_text(**sections: str | None) -> str:
    """The base spec with some sections replaced; a section's text is indented under its name."""
    merged = {**BASE, **sections}
    return "".join(
        f"{name}:\n" + "".join(f"  {line}\n" for line in text.splitlines())
        for name, text in merged.items()
        if text is not None
    )


def write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def make_real_data(root: Path) -> None:
    for relative in ("nyu/nyu.mat", "diw/DIW_train_val.csv", "diw/DIW_test.csv"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("")


def lr_space(body: str) -> str:
    return BASE["space"].replace("{type: float, low: 1.0e-4, high: 1.0e-2, log: true}", body)


# --- errors --------------------------------------------------------------------------------------
