"""Sweep overhead with short trials: wall time of N trials of T seconds on C CPUs, over the ideal N*T/C.

    python benchmarks/overhead.py [--trials 16] [--trial-s 3] [--cpus 2]

Each trial sleeps ``trial_s`` seconds in ``epochs`` steps and reports a value per step, so the
measurement is orchestration only (Ray actors, the Optuna searcher, ASHA, MLflow logging). Four
set-ups run one after another in one Ray runtime (its start-up is timed separately, as a sweep
pays it once):

- ``optuna loop``: a plain sequential Optuna study (no parallelism),
- ``tune bare``: Ray Tune + OptunaSearch, a new actor per trial,
- ``tune bare reuse``: the same with ``reuse_actors=True``,
- ``depthsweep``: ``sweep.tuner.build_tuner`` as a sweep uses it (TPE with constant liar,
  concurrency limit, ASHA, true Optuna states, per-trial progress callback), with each trial
  logging its MLflow child run (start, params, tags, one metric batch per epoch, close).

Prints one line per set-up with its wall time and ratio to the ideal. ``depthsweep`` also runs 2N
trials: (wall(2N) - wall(N)) / ideal(N) is its marginal ratio, the cost of trials once the
one-off start-up is paid (the trial processes importing torch, depthcore and MLflow, the
MLflow and Optuna databases, Tune's set-up).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EPOCHS = 3

SPEC = """
study: {name: overhead, seed: 0, max_concurrent: %(cpus)d, output_dir: out, timestamp: false, n_startup_trials: 4}
data:
  synthetic: {out: data, frames: 24}
fixed:
  train/epochs: %(epochs)d
space:
  optim/lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
stages:
  nyu: {num_samples: %(trials)d}
scheduler: {type: asha, grace_period: %(epochs)d, reduction_factor: 2}
resources: {cpu: 1, gpu: 0}
"""


def _value(lr: float, epoch: int) -> float:
    return abs(lr - 1e-3) + 1.0 / epoch


def bare_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    step_s = config["trial_s"] / EPOCHS
    for epoch in range(1, EPOCHS + 1):
        time.sleep(step_s)
        tune.report({"val/rmse": _value(config["lr"], epoch), "epoch": epoch})


def sweep_trainable(config: dict[str, Any], ctx: Any) -> None:
    """Sleeps instead of training, but tracks its MLflow run like ``sweep.trial.run_trial``."""
    import ray
    from ray import tune

    from sweep.tracking import TrialTracker
    from sweep.trial import trial_key

    trial_id = ray.tune.get_context().get_trial_id()
    tracker = TrialTracker(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id,
                           trial_key(ctx.study_name, ctx.stage, trial_id))
    tracker.start(params={"optim/lr": config["optim"]["lr"]}, tags={"architecture": "none", "stage": "nyu"},
                  run_name=f"nyu-{trial_id}")
    step_s = float(os.environ["OVERHEAD_TRIAL_S"]) / EPOCHS
    for epoch in range(1, EPOCHS + 1):
        time.sleep(step_s)
        metrics = {"val/rmse": _value(config["optim"]["lr"], epoch), "epoch": epoch}
        tracker.log_epoch(metrics, step=epoch)
        tune.report(metrics)


def run_optuna_loop(trials: int, trial_s: float) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        for _ in range(EPOCHS):
            time.sleep(trial_s / EPOCHS)
        return _value(lr, EPOCHS)

    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - start


def run_bare_tune(trials: int, trial_s: float, cpus: int, reuse: bool, storage: Path) -> float:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(metric="val/rmse", mode="min", seed=0)
    tuner = tune.Tuner(
        tune.with_resources(bare_trainable, {"cpu": 1}),
        param_space={"lr": tune.loguniform(1e-4, 1e-2), "trial_s": trial_s},
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=cpus),
                                    num_samples=trials, reuse_actors=reuse),
        run_config=tune.RunConfig(name=f"bare-{reuse}", storage_path=str(storage), verbose=0),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def run_depthsweep(trials: int, trial_s: float, cpus: int, root: Path) -> float:
    from sweep.spec import load_spec
    from sweep.tracking import default_artifact_root, default_tracking_uri, ensure_experiment, start_parent_run
    from sweep.trial import TrialContext
    from sweep.tuner import build_tuner

    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / "overhead.yaml"
    spec_path.write_text(SPEC % {"cpus": cpus, "trials": trials, "epochs": EPOCHS})
    spec = load_spec(spec_path)
    uri = default_tracking_uri(spec.study.output_dir)
    start = time.perf_counter()  # from here on as run_sweep does it, after ray.init and data preparation
    experiment = ensure_experiment(f"overhead-{trials}", uri, default_artifact_root(spec.study.output_dir))
    parent = start_parent_run(experiment, "nyu", "overhead", spec.to_dict(), uri, resume=False)
    ctx = TrialContext(spec=spec, stage="nyu", tracking_uri=uri, experiment_id=experiment, parent_run_id=parent,
                       threads=1, study_name="overhead")
    tuner = build_tuner(ctx, storage_url=f"sqlite:///{root / 'optuna.db'}", optuna_study="overhead-nyu",
                        ray_dir=root / "ray", num_samples=trials, max_epochs=EPOCHS, trainable=sweep_trainable)
    tuner.fit()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--trial-s", type=float, default=3.0)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--only", choices=["depthsweep"], help="run only this set-up")
    args = parser.parse_args(argv)
    os.environ["OVERHEAD_TRIAL_S"] = str(args.trial_s)
    import ray

    ideal = args.trials * args.trial_s / args.cpus
    print(f"{args.trials} trials x {args.trial_s:g} s on {args.cpus} CPUs: ideal wall time {ideal:.1f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False,
                 runtime_env={"env_vars": {"OVERHEAD_TRIAL_S": str(args.trial_s)}})
        print(f"ray.init: {time.perf_counter() - start:.1f} s (once per sweep, not counted below)", flush=True)
        results = {}
        if args.only is None:
            results["optuna loop (sequential)"] = [run_optuna_loop(args.trials, args.trial_s)]
            results["tune bare, new actor per trial"] = [run_bare_tune(args.trials, args.trial_s, args.cpus, False, root)]
            results["tune bare, reuse_actors"] = [run_bare_tune(args.trials, args.trial_s, args.cpus, True, root)]
        results["depthsweep build_tuner + MLflow"] = [
            run_depthsweep(n, args.trial_s, args.cpus, root / str(n)) for n in (args.trials, 2 * args.trials)]
        ray.shutdown()
    print(f"\n| set-up | wall, {args.trials} trials (s) | ratio to ideal {ideal:.1f} s | wall, {2 * args.trials} "
          f"trials (s) | marginal ratio |\n|---|---|---|---|---|")
    for name, walls in results.items():
        row = f"| {name} | {walls[0]:.1f} | {walls[0] / ideal:.2f} |"
        # The second N trials cost (wall_2N - wall_N): the ratio without the one-off start-up.
        row += f" {walls[1]:.1f} | {(walls[1] - walls[0]) / ideal:.2f} |" if len(walls) > 1 else " | |"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
