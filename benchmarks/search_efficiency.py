"""TPE + ASHA against random search without early stopping, at an equal budget of training epochs.

    python benchmarks/search_efficiency.py [--quick] [--seeds 0 1 2] [--trials 12] [--grace 2] [--reduction 2]
                                           [--startup 4] [--set KEY=VALUE ...] [--keep DIR]

Both searches are real sweeps of stage ``nyu`` of ``search_spaces/quickstart.yaml`` (its search
space, its synthetic data, its epochs), run with ``python -m sweep.run`` in their own process:

- ``random``: TPE with ``n_startup_trials`` = all trials (every point random) and the ``fifo``
  scheduler (every trial runs all its epochs): ``trials`` trials,
- ``TPE + ASHA``: the spec as shipped (TPE after its start-up trials, ASHA with the given grace
  period and reduction factor), with twice the trials, cut at the random search's epoch total.

From each sweep's Optuna study, trials in the order they finished: epochs spent so far (the
intermediate values each reported) against the best validation RMSE so far. The verdict: the
epochs TPE + ASHA needs to reach random search's final best, as a fraction of random search's
epochs, median over seeds. Target: <= 0.5. The curves are saved as ``search_efficiency.png``.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _verdict import median, table, verdict  # noqa: E402

SPEC = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"
TARGET = 0.5


def run_sweep(out: Path, name: str, seed: int, trials: int, overrides: list[str]) -> Path:
    """One sweep of stage nyu in its own process; returns its Optuna database."""
    sets = [f"study.name={name}", f"study.seed={seed}", "study.timestamp=false", f"study.output_dir={out}",
            f"stages.nyu.num_samples={trials}", *overrides]
    command = [sys.executable, "-m", "sweep.run", str(SPEC), "--stage", "nyu"]
    for item in sets:
        command += ["--set", item]
    log = out / f"{name}.log"
    with log.open("w") as stream:
        code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=dict(os.environ)).returncode
    if code != 0:
        raise SystemExit(f"{' '.join(command)} exited {code}:\n{log.read_text()[-3000:]}")
    return out / name / "optuna.db"


def curve(db: Path, study: str) -> list[tuple[int, float]]:
    """(epochs spent, best val/rmse so far) after each finished trial, in the order they finished."""
    import optuna

    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{db}")
    done = sorted((t.datetime_complete, t.number, t) for t in loaded.get_trials(deepcopy=False)
                  if t.datetime_complete is not None)
    points, spent, best = [], 0, math.inf
    for _, _, trial in done:
        values = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
        spent += len(trial.intermediate_values)
        if values:
            best = min(best, *values)
        points.append((spent, best))
    return points


def rung_rank_correlation(db: Path, study: str, rungs: list[int]) -> dict[int, float]:
    """Over the trials of a study that ran to the end (random search): Spearman's rank correlation
    of each ASHA rung's value with the trial's best value. Near 1, a rung ranks trials as their
    ends do and ASHA stops the right ones; near 0, it stops them at random."""
    import optuna
    from scipy.stats import spearmanr

    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    last = max((max(t.intermediate_values, default=0) for t in trials), default=0)
    found = {}
    for rung in (r for r in rungs if r < last):  # ASHA's rungs come before the last epoch
        pairs = [(t.intermediate_values[rung], min(t.intermediate_values.values())) for t in trials
                 if rung in t.intermediate_values]
        if len(pairs) >= 3:
            found[rung] = float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)
    return found


def epochs_to_reach(points: list[tuple[int, float]], value: float, budget: int) -> float:
    for spent, best in points:
        if spent > budget:
            break
        if best <= value:
            return float(spent)
    return math.inf


def plot(curves: dict[str, list[list[tuple[int, float]]]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for (method, runs), color in zip(curves.items(), ("tab:gray", "tab:blue"), strict=False):
        for i, points in enumerate(runs):
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.step(xs, ys, where="post", color=color, alpha=0.8, label=method if i == 0 else None)
    ax.set_xlabel("training epochs spent")
    ax.set_ylabel("best validation RMSE so far")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed, 3 random trials of 2 epochs, small data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--trials", type=int, default=12, help="random search's trials (TPE + ASHA gets twice as many)")
    p.add_argument("--grace", type=int, default=2, help="ASHA grace period (epochs)")
    p.add_argument("--reduction", type=int, default=2, help="ASHA reduction factor")
    p.add_argument("--startup", type=int, default=4, help="TPE's random start-up trials")
    p.add_argument("--png", default=str(Path(__file__).resolve().parent / "search_efficiency.png"))
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a spec override for both searches, e.g. fixed.optim/schedule=constant (repeatable)")
    p.add_argument("--keep", metavar="DIR", help="keep the sweeps (Optuna studies, logs) in DIR instead of a temporary folder")
    args = p.parse_args(argv)
    common: list[str] = []
    if args.quick:
        args.seeds, args.trials, args.grace, args.startup = [0], 3, 1, 2
        common = ["fixed.train/epochs=2", "data.synthetic.frames=24", "data.synthetic.diw_train=8",
                  "data.synthetic.diw_test=4", "fixed.data/size=[32, 32]"]
    common += args.sets
    print(f"{SPEC.name}, stage nyu, seeds {args.seeds}: random search {args.trials} trials (fifo) against TPE + ASHA "
          f"{2 * args.trials} trials (grace {args.grace}, reduction {args.reduction}, {args.startup} start-up trials)"
          + (f"; both with {', '.join(args.sets)}" if args.sets else ""),
          flush=True)
    curves: dict[str, list[Any]] = {"random": [], "TPE + ASHA": []}
    rows, fractions = [], []
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as tmp:
        out = Path(args.keep or tmp)
        out.mkdir(parents=True, exist_ok=True)
        if args.quick:  # the quick data lives in the temporary folder, not beside the shipped spec
            common.append(f"data.synthetic.out={out / 'data'}")
        for seed in args.seeds:
            random_db = run_sweep(out, f"random-{seed}", seed, args.trials,
                                  common + [f"study.n_startup_trials={args.trials}", "scheduler.type=fifo"])
            tpe_db = run_sweep(out, f"tpe-{seed}", seed, 2 * args.trials,
                               common + [f"study.n_startup_trials={args.startup}", "scheduler.type=asha",
                                         f"scheduler.grace_period={args.grace}",
                                         f"scheduler.reduction_factor={args.reduction}",
                                         # Stage diw is not run; the spec bounds the grace period by its epochs too.
                                         f"stages.diw.fixed.train/epochs={max(args.grace, 3)}"])
            random_curve = curve(random_db, f"random-{seed}-nyu")
            tpe_curve = curve(tpe_db, f"tpe-{seed}-nyu")
            budget, target = random_curve[-1]
            needed = epochs_to_reach(tpe_curve, target, budget)
            fractions.append(needed / budget)
            curves["random"].append(random_curve)
            curves["TPE + ASHA"].append([pt for pt in tpe_curve if pt[0] <= budget])
            tpe_best = min((b for s, b in tpe_curve if s <= budget), default=math.inf)
            rows.append([seed, budget, target, tpe_best, needed, needed / budget])
            print(f"seed {seed}: random best {target:.4f} after {budget} epochs; TPE + ASHA reaches it after "
                  f"{needed:g} epochs", flush=True)
            rungs = [args.grace * args.reduction ** k for k in range(8)]
            ranks = rung_rank_correlation(random_db, f"random-{seed}-nyu", rungs)
            print(f"seed {seed}: rank correlation (Spearman) of each ASHA rung's value with the trial's best, over "
                  "random search's trials: " + ", ".join(f"epoch {r}: {c:.2f}" for r, c in ranks.items()), flush=True)
    plot(curves, Path(args.png))
    print(table(["seed", "random: epochs", "random: best val/rmse", "TPE + ASHA: best within budget",
                 "TPE + ASHA: epochs to random's best", "fraction"], rows))
    print(f"curves: {args.png}")
    fraction = median(fractions)
    verdict("search_efficiency", fraction, TARGET, fraction <= TARGET,
            fractions=[round(f, 3) if math.isfinite(f) else None for f in fractions])
    return 0


if __name__ == "__main__":
    sys.exit(main())
