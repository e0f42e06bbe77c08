"""The same two-stage sweep on a two-node Ray cluster and on one node with the same CPUs in all.

    python benchmarks/cluster_sweep.py [--quick] [--repeats 3]

Both set-ups use what a cluster sweep uses: the Optuna study and the MLflow store on PostgreSQL,
MLflow through ``mlflow server --serve-artifacts``, Ray's results in a shared folder
(``--storage-path``), the driver joining with ``--address``. One cluster has a head and a second
node on loopback addresses with 1 CPU each, the other a single node with 2 CPUs; both are started
before the clock, as a cluster is before a user's sweep. The sweep is the tests' tiny spec
(``tests/sweep/sweep_fixtures.py``: 4 stage-1 and 2 stage-2 trials, 2 at a time). Measured:
the sweep process's wall time, launch to exit, set-ups interleaved, median of ``--repeats``.
Headline: two-node over one-node wall time; target (ours): at most 1.1, i.e. spreading the
same trials over two machines costs under 10 % in orchestration. The services come from the
tests' helpers (``tests/services.py``): PostgreSQL's server binaries and the ``postgres`` user
must be there (``.ci/run`` installs them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "sweep"), str(ROOT / "benchmarks")]

from _verdict import interleaved, median, table, verdict  # noqa: E402
from services import mlflow_server, postgres, ray_cluster  # noqa: E402
from sweep_fixtures import TINY_SPEC  # noqa: E402

TARGET = 1.1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition (the test's mode)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    root = Path(tempfile.mkdtemp(prefix="depthsweep-cluster-bench-"))
    runs = {"n": 0}
    try:
        times = _measure(root, repeats, runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {name: median(values) for name, values in times.items()}
    ratio = medians["two nodes, 1 CPU each"] / medians["one node, 2 CPUs"]
    print(table(["set-up", "wall s (median)", "each run, s"],
                [[name, medians[name], ", ".join(f"{v:.1f}" for v in values)] for name, values in times.items()]))
    print(f"\ntwo-node / one-node wall time: {ratio:.3f} (target <= {TARGET})")
    verdict("cluster_sweep", ratio, TARGET, ratio <= TARGET, repeats=repeats)
    return 0


def _measure(root: Path, repeats: int, runs: dict[str, int]) -> dict[str, list[float]]:
    with postgres() as pg, mlflow_server(pg.url("mlflow"), pg.env) as uri, \
            ray_cluster(("127.0.0.1", "127.0.0.2"), cpus_per_node=1) as two, \
            ray_cluster(("127.0.0.3",), cpus_per_node=2) as one:
        from sweep.orchestrate import prepare_data
        from sweep.spec import load_spec

        spec_text = TINY_SPEC.replace("study: {name: tiny, seed: 3, max_concurrent: 1,",
                                      f"study: {{name: tiny, seed: 3, max_concurrent: 2, storage: '{pg.url('optuna')}',")
        (root / "base.yaml").write_text(spec_text)
        os.chdir(root)
        prepare_data(load_spec(root / "base.yaml"), ["nyu", "diw"])  # the sweep's input, before the clock

        def sweep(cluster) -> None:
            runs["n"] += 1
            name = f"bench{runs['n']}"
            spec = root / f"{name}.yaml"
            spec.write_text(spec_text.replace("name: tiny,", f"name: {name},"))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MLFLOW_", "RAY_"))}
            env.update(cluster.env, MLFLOW_TRACKING_URI=uri, PGPASSFILE=str(pg.passfile))
            done = subprocess.run([sys.executable, "-m", "sweep.run", str(spec), "--address", cluster.address,
                                   "--storage-path", str(root / "shared")], env=env, cwd=root, capture_output=True,
                                  text=True, timeout=1800)
            if done.returncode != 0:
                raise SystemExit(f"sweep {name} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

        return interleaved({"two nodes, 1 CPU each": lambda: sweep(two),
                            "one node, 2 CPUs": lambda: sweep(one)}, repeats)


if __name__ == "__main__":
    sys.exit(main())
