"""Run a sweep: ``python -m sweep.run SPEC.yaml [--set key=value] [--smoke-test] [--dry-run] [--resume] [--address ADDR]``.

Stage ``nyu`` sweeps depth training; stage ``diw`` then fine-tunes the top-k stage-1
checkpoints. Everything is written under ``<study.output_dir>/<study name>/``: Ray's
results and checkpoints (``ray/``), the Optuna study (``optuna.db``) and ``sweep.json``.
Trials are recorded in MLflow (``MLFLOW_TRACKING_URI``, default ``<output_dir>/mlflow.db``).
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
from depthcore.stages import STAGE_NAMES
from sweep.record import RECORD_FILE, RecordError, is_sweep_dir, read_record
from sweep.spec import SpecError, SweepSpec, load_spec


def smoke_overrides(spec: SweepSpec) -> list[str]:
    """Two trials per stage, one epoch each (a stage's own fixed epochs included); ASHA's grace
    period follows the single epoch."""
    out = ["fixed.train/epochs=1", "scheduler.grace_period=1"]
    for name, stage in spec.stages.items():
        out.append(f"stages.{name}.num_samples=2")
        if "train/epochs" in stage.fixed:
            out.append(f"stages.{name}.fixed.train/epochs=1")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sweep.run", description=__doc__.splitlines()[0])
    p.add_argument("spec", help="search-space YAML, e.g. search_spaces/quickstart.yaml")
    add_set_argument(p, "study.max_concurrent=1 or fixed.train/epochs=2")
    p.add_argument("--smoke-test", action="store_true", help="two trials per stage, one epoch each")
    p.add_argument("--dry-run", action="store_true", help="validate, print the resolved spec and sampled configs, no compute")
    p.add_argument("--resume", nargs="?", const="latest", metavar="SWEEP_DIR",
                   help="continue an interrupted sweep (default: the newest sweep of this spec)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster address (default: $RAY_ADDRESS, else a local runtime)")
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
    print(yaml.safe_dump(spec.to_dict(), sort_keys=False).rstrip())
    for stage in stages:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=spec.study.seed))
        print(f"\n# first {n} sampled configurations of stage {stage}")
        for _ in range(n):
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides = list(args.overrides)
        spec = load_spec(args.spec, overrides)
        if args.smoke_test:
            overrides = smoke_overrides(spec) + overrides
            spec = load_spec(args.spec, overrides)
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
                         stage1_from=Path(args.stage1_from) if args.stage1_from else None, overrides=overrides)
    except (SpecError, UserError) as err:
        return report_error(err)
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

