"""Train one stage from a YAML config: ``python -m depthcore.train CONFIG.yaml [--set key=value]``.

Prints a line per epoch, writes checkpoints under ``train.out_dir`` (``best/`` and the
newest epoch), and with ``--test`` evaluates the best checkpoint on the test split.
Every input is checked first (:mod:`depthcore.preflight`): a mistake is one line
``error: ...`` on stderr, exit code 2, and nothing written.
"""

from __future__ import annotations

import argparse
import sys

from depthcore.checkpoint import load_checkpoint
from depthcore.config import ExperimentConfig, add_set_argument
from depthcore.engine import fit
from depthcore.errors import UserError, report
from depthcore.evaluate import evaluate_checkpoint, format_table
from depthcore.preflight import check_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m depthcore.train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML file with model/data/optim/train sections")
    add_set_argument(parser, "optim.lr=3.0e-4")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint of this run")
    parser.add_argument("--test", action="store_true", help="evaluate the best checkpoint on the test split")
    args = parser.parse_args(argv)
    try:
        cfg = ExperimentConfig.from_file(args.config, args.overrides)
        check_run(cfg)
        if args.resume:
            load_checkpoint(args.resume)
        result = fit(cfg, resume_from=args.resume)
        print(f"best {result['best_metric']} {result['best_value']:.4f} at epoch {result['best_epoch']}; "
              f"checkpoint: {result['best_checkpoint']}")
        if args.test:
            print(format_table(evaluate_checkpoint(result["best_checkpoint"], "test")))
    except (UserError, FileNotFoundError) as err:
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
