"""Run a sweep: ``python -m sweep.run SPEC.yaml [--set key=value] [--smoke-test] [--dry-run] [--resume] [--address ADDR]``.

Stage ``nyu`` sweeps depth training; stage ``diw`` then fine-tunes the top-k stage-1
checkpoints. Everything is written under ``<study.output_dir>/<study name>/``: Ray's
results and checkpoints (``ray/``, or ``--storage-path``), the Optuna study (``optuna.db``, or
``study.storage``) and ``sweep.json``. Trials are recorded in MLflow (``MLFLOW_TRACKING_URI``,
default ``<output_dir>/mlflow.db``). On a cluster see ``sweep.stores``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import optuna
import yaml

from depthcore.config import add_set_argument, flatten
from depthcore.errors import UserError
from depthcore.errors import report as report_error
from depthcore.stages import STAGE_NAMES, STAGES
from sweep.preflight import RESOURCE_WAIT_S
from sweep.record import RECORD_FILE, RecordError, is_sweep_dir, read_record
from sweep.redact import redact_text
from sweep.spec import SpecError, SweepSpec, load_spec
from sweep.spec.check import DATA_PATHS
from sweep.spec.read import missing_data_paths
from sweep.study import STAGE1_PARAM, model_first_points, stage_sampler
from sweep.tracking.store import TrackingError, bound_http_retries


def smoke_overrides(spec: SweepSpec) -> list[str]:
    """Two trials per stage, one epoch each (a stage's own fixed epochs included); ASHA's grace
    period follows the single epoch."""
    out = ["fixed.train/epochs=1", "scheduler.grace_period=1"]
    for name, stage in spec.stages.items():
        out.append(f"stages.{name}.num_samples=2")
        if "train/epochs" in stage.fixed:
            out.append(f"stages.{name}.fixed.train/epochs=1")
    return out


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, found {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sweep.run", description=__doc__.splitlines()[0])
    p.add_argument("spec", help="search-space YAML, e.g. search_spaces/quickstart.yaml")
    add_set_argument(p, "study.max_concurrent=1 or fixed.train/epochs=2")
    p.add_argument("--smoke-test", action="store_true", help="two trials per stage, one epoch each")
    p.add_argument("--dry-run", action="store_true", help="validate, print the resolved spec, missing data files and the first trials of each stage, no compute")
    p.add_argument("--resume", nargs="?", const="latest", metavar="SWEEP_DIR",
                   help="continue an interrupted sweep (default: the newest sweep of this spec)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster address (default: $RAY_ADDRESS, else a local runtime)")
    p.add_argument("--resource-wait", type=_seconds, default=RESOURCE_WAIT_S, metavar="SECONDS",
                   help="with --address: how long to wait for a node that can run one trial before giving up "
                        f"(default {RESOURCE_WAIT_S:g})")
    p.add_argument("--storage-path", default=os.environ.get("DEPTHSWEEP_STORAGE_PATH"), metavar="DIR",
                   help="Ray's results and checkpoints go to DIR/<sweep name>: on a cluster, a folder every node "
                        "mounts at the same path (default: $DEPTHSWEEP_STORAGE_PATH, else <sweep folder>/ray)")
    p.add_argument("--stage", choices=["all", *STAGE_NAMES], default="all", help="run one stage only")
    p.add_argument("--stage1-from", metavar="SWEEP_DIR",
                   help="with --stage diw: fine-tune the top stage-1 trials of this earlier sweep")
    p.add_argument("--export", action="store_true",
                   help="then run python -m sweep.export on the sweep (test metrics, exported models, registry)")
    p.add_argument("--onnx-exporter", choices=["dynamo", "torchscript"], default="dynamo",
                   help="with --export: torch.onnx exporter (see python -m sweep.export --help)")
    p.add_argument("--report", action="store_true", help="then run python -m sweep.report on the sweep")
    return p.parse_args(argv)


def dry_run(spec: SweepSpec, stages: list[str], n: int = 3) -> None:
    """The resolved spec, what is missing for a real run, and the first ``n`` configurations each
    stage's study samples: the enqueued first trials (one per architecture) and then the sampler's,
    with the sweep's own sampler and seed."""
    print(yaml.safe_dump(spec.to_dict(), sort_keys=False).rstrip())
    if spec.data.synthetic is not None:
        print(f"\n# data: generated into {spec.data.synthetic.out} on the first real run (if not there yet)")
    else:
        paths = {name: getattr(spec.data, name) for name in DATA_PATHS}
        for name, kind, path in missing_data_paths(paths):
            print(f"\n# missing: data.{name}: no {kind} at {path} (a real run stops here; see the README, "
                  f"'Using real data')")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" lines
    for stage in stages:
        study = optuna.create_study(sampler=stage_sampler(spec))
        first = model_first_points(spec, stage)
        for point in first:
            study.enqueue_trial(point)
        count = max(n, len(first))
        print(f"\n# first {count} configurations of stage {stage}"
              + (f" (the first {len(first)} enqueued: one per architecture)" if first else ""))
        if STAGES[stage].finetunes:
            print(f"# each also fine-tunes one of the top-k stage-1 checkpoints ({STAGE1_PARAM}), "
                  "known once the first stage has run; each architecture's best first")
        for _ in range(count):
            trial = study.ask()
            constants = spec.sampler(stage)(trial) or {}
            print(json.dumps({**trial.params, **constants}, default=str))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def sweep_dir_for(spec: SweepSpec, resume: str | None) -> Path:
    """The sweep's folder: a new one, or the one to resume."""
    root = Path(spec.study.output_dir)
    if resume is None:
        return root / spec.resolved_name()
    if resume != "latest":
        return Path(resume)
    candidates = sorted((d for d in root.glob(f"{spec.study.name}*") if (d / "sweep.json").is_file()),
                        key=lambda d: (d / "sweep.json").stat().st_mtime)
    if not candidates:
        raise SpecError(f"--resume: no sweep of study {spec.study.name!r} under {root}")
    return candidates[-1]


def resumed_spec(path: str, sweep_dir: Path, overrides: list[str]) -> tuple[SweepSpec, list[str]]:
    """The spec a resume runs: the file with the overrides the sweep was started with (and any given
    again); a spec that now resolves differently from the recorded one is refused, naming the key."""
    if not is_sweep_dir(sweep_dir):
        raise SpecError(f"--resume: {sweep_dir} holds no sweep (no {RECORD_FILE})")
    try:
        record = read_record(sweep_dir)
    except RecordError as err:
        raise SpecError(f"--resume: {err}") from None
    merged = record.overrides + [item for item in overrides if item not in record.overrides]
    spec = load_spec(path, merged)
    now, then = _comparable(spec.to_dict()), _comparable(record.spec)
    if then and now != then:
        key = next(k for k in sorted(set(now) | set(then)) if now.get(k) != then.get(k))
        raise SpecError(f"--resume: {path}: {key}: expected {then.get(key)!r} as recorded in {record.path}, "
                        f"found {now.get(key)!r}; resume with the spec the sweep was started with, or start a new sweep")
    return spec, merged


def _comparable(resolved: dict[str, Any]) -> dict[str, str]:
    """A resolved spec, flat, without what differs between runs of one sweep (its name, the file's path)."""
    flat = flatten({k: v for k, v in resolved.items() if k not in ("name", "path")})
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in flat.items() if k != "study/timestamp"}


def interrupted(spec: SweepSpec, sweep_dir: Path, overrides: list[str]) -> int:
    """Close the parent runs the interrupted driver left open as KILLED; print the resume command; 130."""
    from sweep.orchestrate import resume_command
    from sweep.reconcile import close_open_parents
    from sweep.tracking import default_tracking_uri

    try:
        close_open_parents(default_tracking_uri(spec.study.output_dir), sweep_dir.resolve().name)
    finally:
        if is_sweep_dir(sweep_dir):
            print(f"\ninterrupted; the state is saved. Continue with:\n  {resume_command(spec, sweep_dir.resolve(), overrides)}",
                  flush=True)
        else:  # stopped while preparing data or starting Ray: no trial ran, nothing to resume
            print("\ninterrupted before the sweep's first trial; nothing to resume: run the same command again",
                  flush=True)
    return 130


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bound_http_retries()  # a tracking server that goes away costs seconds per call, not minutes
    try:
        overrides = list(args.overrides)
        # A dry run shows the plan on a machine without the data files (and says they are missing).
        check_files = not args.dry_run
        spec = load_spec(args.spec, overrides, check_files=check_files)
        if args.smoke_test:
            overrides = smoke_overrides(spec) + overrides
            spec = load_spec(args.spec, overrides, check_files=check_files)
        stages: list[str] = [s for s in STAGE_NAMES if s in spec.stages and args.stage in ("all", s)]
        if not stages:
            raise SpecError(f"{args.spec}: stages: no stage to run for --stage {args.stage}")
        if args.dry_run:
            dry_run(spec, stages)
            return 0
        sweep_dir = sweep_dir_for(spec, args.resume)
        if args.resume:
            spec, overrides = resumed_spec(args.spec, sweep_dir, overrides)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from sweep.orchestrate import run_sweep  # imports Ray: after validation, so errors stay fast

    try:
        code = run_sweep(spec, stages, sweep_dir, resume=args.resume is not None, address=args.address,
                         stage1_from=Path(args.stage1_from) if args.stage1_from else None, overrides=overrides,
                         storage_path=args.storage_path, resource_wait_s=args.resource_wait)
    except (SpecError, UserError) as err:
        return report_error(err)
    except TrackingError as err:  # the MLflow store went away during the sweep
        from sweep.orchestrate import resume_command

        code = report_error(SpecError(redact_text(str(err), os.environ.get("MLFLOW_TRACKING_URI", ""))))
        print(f"Once MLflow answers again, continue (and log what it missed) with:\n  "
              f"{resume_command(spec, sweep_dir.resolve(), overrides)}", flush=True)
        return code
    except KeyboardInterrupt:
        # Ctrl-C outside Tune's own handling (data preparation, between stages, MLflow writes).
        return interrupted(spec, sweep_dir, overrides)
    if code == 0 and args.export:
        from sweep.export.cli import main as export_main

        print(f"\n$ python -m sweep.export {sweep_dir} --onnx-exporter {args.onnx_exporter}", flush=True)
        code = export_main([str(sweep_dir), "--onnx-exporter", args.onnx_exporter])
    if code == 0 and args.report:
        from sweep.report.cli import main as report_main

        print(f"\n$ python -m sweep.report {sweep_dir}", flush=True)
        code = report_main([str(sweep_dir)])
    if code == 0 and (args.export or args.report):
        from sweep.summary import next_steps

        print("\n" + next_steps(sweep_dir, export=args.export, report=args.report))
    return code


if __name__ == "__main__":
    sys.exit(main())

