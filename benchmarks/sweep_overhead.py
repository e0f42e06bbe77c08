"""Sweep overhead with short trials: wall time of N trials of T seconds on C CPUs, over the ideal N*T/C.

    python benchmarks/sweep_overhead.py [--quick] [--trials 16] [--trial-s 3] [--cpus 2] [--repeats 3] [--in-process]

Each trial sleeps ``trial_s`` seconds in ``EPOCHS`` steps and reports a value per step, so what is
measured is orchestration only. Headline (targets, firm): **the sweep process's wall time from
its start to its exit** — Python start-up, imports, checks, Ray's start-up, the MLflow and Optuna
stores, Tune, the trials, shut-down; nothing warmed before the clock starts — against the ideal
(target <= 1.2x), and the marginal ratio (wall(2N) - wall(N)) / ideal(N), the cost of trials once
the start-up is paid (target <= 1.1x). The sweep process is ``sweep.orchestrate.run_sweep`` on a
one-stage spec (stage ``nyu``, TPE with constant liar, ASHA, the per-trial MLflow child run) with
a trial of fixed work that logs its MLflow run like a real one. Beside it, each from its own
process start too: Ray Tune alone running the same trials (its start-up, scheduling and shut-down
with nothing of depthsweep: the floor under any sweep Ray Tune runs on this machine), and a plain
sequential Optuna loop of the same trials. Set-ups alternate per repetition
and the median is reported. The synthetic data the spec names is generated before the clock (it
is the sweep's input, not part of its start-up). Each trial records when it started, so the
start-up (launch to the first trial running) is reported on its own.

``--in-process`` adds the earlier breakdown in one Ray runtime started beforehand (not counted):
bare Ray Tune with and without actor reuse and ``build_tuner`` + MLflow.
"""

from __future__ import annotations

import argparse
import json
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
  synthetic: {out: data, frames: 24, diw_train: 8, diw_test: 4}
fixed:
  train/epochs: %(epochs)d
  data/size: [32, 32]
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
    """Sleeps instead of training, but records what ``sweep.trial.run_trial`` records: the MLflow run
    with its config, each epoch, and at each new best epoch the best metrics and the checkpoint;
    a checkpoint per epoch to Ray, with the run id for the searcher. Not the preview image (it needs
    a model)."""
    import math

    import ray
    from ray import tune

    from sweep.tracking import USER_ATTR_MLFLOW, TrialTracker
    from sweep.trial import trial_key

    trial_id = ray.tune.get_context().get_trial_id()
    if os.environ.get("OVERHEAD_STARTS"):
        (Path(os.environ["OVERHEAD_STARTS"]) / trial_id).write_text(repr(time.time()))
    tracker = TrialTracker(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id,
                           trial_key(ctx.study_name, ctx.stage, trial_id))
    tracker.start(params={"optim/lr": config["optim"]["lr"]}, tags={"architecture": "lraspp", "stage": "nyu"},
                  run_name=f"nyu-{trial_id}")
    tracker.log_config({"optim": {"lr": config["optim"]["lr"]}, "train": {"epochs": EPOCHS}})
    step_s = float(os.environ["OVERHEAD_TRIAL_S"]) / EPOCHS
    best = math.inf
    for epoch in range(1, EPOCHS + 1):
        time.sleep(step_s)
        metrics = {"val/rmse": _value(config["optim"]["lr"], epoch), "epoch": epoch}
        tracker.log_epoch(metrics, step=epoch)
        # A checkpoint per epoch, as a real trial reports (a few bytes instead of a model).
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "checkpoint.pt").write_text(str(epoch))
            if metrics["val/rmse"] < best:
                best = metrics["val/rmse"]
                tracker.log_best(metrics, epoch)
                tracker.log_best_checkpoint(folder)
            tune.report({**metrics, USER_ATTR_MLFLOW: tracker.run_id or ""},
                        checkpoint=tune.Checkpoint.from_directory(folder))


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


def run_bare_tune(trials: int, trial_s: float, cpus: int, reuse: bool, storage: Path, optuna: bool = True) -> float:
    """Ray Tune on its own with the sleeping trial: Optuna's searcher (in memory) under a concurrency
    limit, or with ``optuna=False`` Tune's default random search; the seconds ``fit`` took."""
    from ray import tune

    search = None
    if optuna:  # imported only then: Tune alone's process start stays without Optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search = ConcurrencyLimiter(OptunaSearch(metric="val/rmse", mode="min", seed=0), max_concurrent=cpus)
    tuner = tune.Tuner(
        tune.with_resources(bare_trainable, {"cpu": 1}),
        param_space={"lr": tune.loguniform(1e-4, 1e-2), "trial_s": trial_s},
        tune_config=tune.TuneConfig(search_alg=search, num_samples=trials, reuse_actors=reuse,
                                    max_concurrent_trials=None if optuna else cpus),
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


def write_spec(root: Path, trials: int, cpus: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "overhead.yaml"
    path.write_text(SPEC % {"cpus": cpus, "trials": trials, "epochs": EPOCHS})
    return path


def child_sweep(spec_path: Path) -> int:
    """The sweep process: what ``python -m sweep.run SPEC`` does, with the fixed-work trial.

    Records when its imports ended and when ``ray.init`` began and ended (epoch seconds, in
    ``phases.json`` beside the spec) for the start-up breakdown; the wrapper adds no work.
    """
    import json

    phases: dict[str, float] = {}
    import ray

    from sweep.orchestrate import run_sweep
    from sweep.spec import load_spec

    phases["imports_done"] = time.time()
    init = ray.init

    def timed_init(*args: Any, **kwargs: Any) -> Any:
        phases["ray_init_start"] = time.time()
        try:
            return init(*args, **kwargs)
        finally:
            phases["ray_init_done"] = time.time()
            (spec_path.parent / "phases.json").write_text(json.dumps(phases))

    ray.init = timed_init
    spec = load_spec(spec_path)
    return run_sweep(spec, ["nyu"], Path(spec.study.output_dir) / spec.resolved_name(), resume=False, address=None,
                     stage1_from=None, trainable=sweep_trainable)


def child_optuna(trials: int, trial_s: float) -> int:
    run_optuna_loop(trials, trial_s)
    return 0


def child_tune(trials: int, trial_s: float, cpus: int) -> int:
    """Ray Tune alone, timed from its process start like the sweep: its own runtime, Tune's default
    random search, the trial that only sleeps and reports, no checkpoints, MLflow or Optuna
    storage. What any sweep run through Ray Tune pays on this machine at the least."""
    import ray

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, configure_logging=False)
    with tempfile.TemporaryDirectory() as storage:
        run_bare_tune(trials, trial_s, cpus, reuse=True, storage=Path(storage), optuna=False)
    ray.shutdown()
    return 0


def timed_process(args: list[str], env: dict[str, str], log: Path) -> float:
    """Wall time of ``python this_script ARGS`` from launch to exit (output to ``log``)."""
    import subprocess

    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run([sys.executable, __file__, *args], env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{' '.join(args)} exited {code}; its output: {log}\n{log.read_text()[-3000:]}")
    return wall


def sweep_process(root: Path, trials: int, trial_s: float, cpus: int, run: int) -> dict[str, float]:
    """One sweep process of ``trials`` trials: its wall time, and its start-up until the first trial ran."""
    folder = root / f"sweep-{trials}-{run}"
    spec = write_spec(folder, trials, cpus)
    # The input data is generated once, outside the clock, as for any sweep run on existing data.
    data = root / "data"
    (folder / "data").symlink_to(data, target_is_directory=True)
    starts = folder / "starts"
    starts.mkdir()
    env = {**os.environ, "OVERHEAD_TRIAL_S": str(trial_s), "OVERHEAD_STARTS": str(starts)}
    launched = time.time()
    wall = timed_process(["--child", "sweep", str(spec)], env, folder / "log.txt")
    first = min(float(p.read_text()) for p in starts.iterdir())
    phases = json.loads((folder / "phases.json").read_text())
    return {"wall": wall, "startup": first - launched, "imports": phases["imports_done"] - launched,
            "checks": phases["ray_init_start"] - phases["imports_done"],
            "ray_init": phases["ray_init_done"] - phases["ray_init_start"],
            "to_first_trial": first - phases["ray_init_done"]}


def prepare_inputs(root: Path, cpus: int) -> None:
    """Generate the spec's synthetic data and its cache (untimed), the way a first sweep would."""
    from sweep.orchestrate import prepare_data
    from sweep.spec import load_spec

    folder = root / "prepare"
    spec = load_spec(write_spec(folder, 2, cpus))
    prepare_data(spec, ["nyu"])
    (folder / "data").rename(root / "data")


def process_level(args: argparse.Namespace, root: Path) -> dict[str, list[float]]:
    prepare_inputs(root, args.cpus)
    runs: dict[str, list[float]] = {"sweep": [], "startup": [], "imports": [], "checks": [], "ray_init": [],
                                    "to_first_trial": [], "tune": [], "optuna": [], "sweep 2N": []}
    for run in range(args.repeats):
        one = sweep_process(root, args.trials, args.trial_s, args.cpus, run)
        runs["sweep"].append(one.pop("wall"))
        for key, value in one.items():
            runs[key].append(value)
        runs["tune"].append(timed_process(["--child", "tune", str(args.trials), str(args.trial_s), str(args.cpus)],
                                          dict(os.environ), root / f"tune-{run}.txt"))
        runs["optuna"].append(timed_process(["--child", "optuna", str(args.trials), str(args.trial_s)],
                                            dict(os.environ), root / f"optuna-{run}.txt"))
        if not args.quick:
            runs["sweep 2N"].append(sweep_process(root, 2 * args.trials, args.trial_s, args.cpus, run)["wall"])
        print(f"repetition {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in runs.items() if v), flush=True)
    return runs


def in_process(args: argparse.Namespace, root: Path) -> dict[str, list[float]]:
    """The earlier breakdown, in one Ray runtime started beforehand (its start-up not counted)."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"OVERHEAD_TRIAL_S": str(args.trial_s)}})
    print(f"in-process set-ups: ray.init took {time.perf_counter() - start:.1f} s (not counted)", flush=True)
    results = {
        "in-process: tune bare, new actor per trial": [run_bare_tune(args.trials, args.trial_s, args.cpus, False, root)],
        "in-process: tune bare, reuse_actors": [run_bare_tune(args.trials, args.trial_s, args.cpus, True, root)],
        "in-process: build_tuner + MLflow": [run_depthsweep(n, args.trial_s, args.cpus, root / f"in-{n}")
                                             for n in (args.trials, 2 * args.trials)],
    }
    ray.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child"]:
        if argv[1] == "sweep":
            return child_sweep(Path(argv[2]))
        if argv[1] == "tune":
            return child_tune(int(argv[2]), float(argv[3]), int(argv[4]))
        return child_optuna(int(argv[2]), float(argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 trials of 1 s, one repetition, no 2N run")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--trial-s", type=float, default=3.0)
    parser.add_argument("--cpus", type=int, default=2, help="must equal the machine's CPU count (run_sweep uses all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help="also the in-process breakdown (as before)")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.trial_s, args.repeats = 4, 1.0, 1
    if args.cpus != os.cpu_count():
        print(f"note: the sweep process uses all {os.cpu_count()} CPUs of this machine, the ideal assumes {args.cpus}")
    ideal = args.trials * args.trial_s / args.cpus
    print(f"{args.trials} trials x {args.trial_s:g} s on {args.cpus} CPUs: ideal wall time {ideal:.1f} s; "
          f"{args.repeats} repetition(s), set-ups alternating", flush=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _verdict import median, table, verdict

    with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as tmp:
        root = Path(tmp)
        runs = process_level(args, root)
        extra = in_process(args, root) if args.in_process else {}
    wall, optuna, tune_alone = median(runs["sweep"]), median(runs["optuna"]), median(runs["tune"])
    rows = [["sweep process (run_sweep), start to exit", wall, wall / ideal,
             median(runs["sweep 2N"]) if runs["sweep 2N"] else "", ""],
            ["  of which start-up: launch to the first trial running", median(runs["startup"]),
             median(runs["startup"]) / ideal, "", ""],
            *[[f"    {label}", median(runs[key]), median(runs[key]) / ideal, "", ""] for key, label in (
                ("imports", "Python start-up and the driver's imports"),
                ("checks", "spec, data and store checks before Ray"),
                ("ray_init", "ray.init (the MLflow store is created meanwhile)"),
                ("to_first_trial", "Tune, the Optuna study, the trial process's imports, up to the first trial"))],
            ["Ray Tune alone (random search, no MLflow, no checkpoints), process start to exit", tune_alone,
             tune_alone / ideal, "", ""],
            ["plain sequential Optuna loop, process start to exit", optuna, optuna / ideal, "", ""]]
    marginal = (median(runs["sweep 2N"]) - wall) / ideal if runs["sweep 2N"] else float("nan")
    if runs["sweep 2N"]:
        rows[0][4] = marginal
    for name, walls in extra.items():
        rows.append([name, walls[0], walls[0] / ideal, walls[1] if len(walls) > 1 else "",
                     (walls[1] - walls[0]) / ideal if len(walls) > 1 else ""])
    print(table(["set-up", f"wall, {args.trials} trials (s)", f"x ideal {ideal:.1f} s", f"wall, {2 * args.trials} trials (s)",
                 "marginal x ideal"], rows))
    ratio = wall / ideal
    ok = ratio <= 1.2 and (marginal <= 1.1 if runs["sweep 2N"] else True)
    verdict("sweep_overhead", ratio, 1.2, ok, marginal=marginal if runs["sweep 2N"] else None, marginal_target=1.1,
            startup_s=median(runs["startup"]), tune_alone_ratio=tune_alone / ideal, optuna_loop_ratio=optuna / ideal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
