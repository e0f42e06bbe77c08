"""Retrain a winning configuration with several seeds: is its test result bigger than the seed noise?"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from depthcore.config import ExperimentConfig
from depthcore.engine import fit
from depthcore.evaluate import evaluate_checkpoint


def retrain_with_seeds(config: dict[str, Any], n: int, out_dir: Path, *, select_metric: str | None = None,
                       device: str = "auto", first_seed: int = 1000) -> dict[str, Any]:
    """Train ``config`` with seeds ``first_seed .. first_seed + n - 1`` and test each best checkpoint.

    Only ``train.seed`` changes (weight initialisation, batch order, augmentation); the data
    split stays fixed (``data.split_seed``), and a stage-diw config keeps its stage-1
    checkpoint. Each run keeps the epoch that is best by ``select_metric`` (the stage's selection
    metric; default: the config's) and is tested on that metric's test counterpart. Returns
    ``{"metric", "n", "values", "mean", "std", "ci95"}`` where ``ci95`` is the half-width of the
    95 % confidence interval of the mean (Student's t, n - 1 degrees).
    """
    if n < 2:
        raise ValueError(f"seeds: a confidence interval needs at least 2 runs, found {n}")
    from scipy import stats

    cfg = ExperimentConfig.from_dict(config, source="exported config")
    if select_metric is not None:
        cfg = cfg.replace(train={"select_metric": select_metric})
    metric, _ = cfg.selection
    # evaluate_checkpoint reports each stage's own metrics under the stage's name.
    section, key = cfg.train.stage, metric.removeprefix("val/")
    values = []
    for index in range(n):
        seed = first_seed + index
        run_dir = out_dir / f"seed_{seed}"
        print(f"[seeds] {cfg.model.name} stage {cfg.train.stage}: seed {seed} ({index + 1}/{n})", flush=True)
        seeded = cfg.replace(train={"seed": seed, "out_dir": str(run_dir), "verbose": False, "device": device})
        result = fit(seeded)
        test = evaluate_checkpoint(result["best_checkpoint"], "test", device=device)
        values.append(float(test[section][key]))
    mean = statistics.fmean(values)
    std = statistics.stdev(values)
    ci95 = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"metric": f"test/{key}", "n": n, "seeds": list(range(first_seed, first_seed + n)), "values": values,
            "mean": mean, "std": std, "ci95": ci95}
