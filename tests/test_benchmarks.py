"""The benchmark scripts keep working: each one's --quick mode (the GPU check's CPU rehearsal) runs
and ends with its verdict line; the shared helpers order and report as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _verdict import interleaved, verdict  # noqa: E402

# bench name -> whether a higher ratio is better
DIRECTION = {"engine_overhead": "higher", "data_throughput": "higher", "inference_latency": "higher",
             "gpu_throughput": "higher", "sweep_overhead": "lower", "search_efficiency": "lower",
             "cluster_sweep": "lower"}


def run_script(command: list[str], tmp_path: Path, timeout: int = 900) -> dict:
    # TMPDIR stays as it is: Ray puts its sockets under it, and a pytest folder makes their paths
    # longer than a Unix socket path may be. The scripts remove their own temporary folders.
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHON": sys.executable}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    line = json.loads(lines[-1])  # the very last line of output, as documented
    assert set(line) >= {"bench", "ratio", "target", "pass"}, line
    assert isinstance(line["pass"], bool)
    if line["pass"]:  # a pass must be what the headline figures say (a second target may still fail it)
        higher = DIRECTION[line["bench"]] == "higher"
        assert line["ratio"] >= line["target"] if higher else line["ratio"] <= line["target"], line
    assert "|---" in done.stdout, "each script prints its table"
    return line


@pytest.mark.slow
@pytest.mark.parametrize("script", ["engine_overhead", "data_throughput", "inference_latency", "sweep_overhead"])
def test_quick_mode_ends_with_its_verdict(script, tmp_path):
    line = run_script([sys.executable, str(BENCHMARKS / f"{script}.py"), "--quick"], tmp_path)
    assert line["bench"] == script
    assert line["ratio"] > 0


@pytest.mark.slow
def test_cluster_sweep_quick_mode(tmp_path):
    from services import require_postgres

    require_postgres()  # the benchmark starts its own server
    line = run_script([sys.executable, str(BENCHMARKS / "cluster_sweep.py"), "--quick"], tmp_path, timeout=1500)
    assert line["bench"] == "cluster_sweep" and line["repeats"] == 1
    assert line["ratio"] > 0


@pytest.mark.slow
def test_search_efficiency_quick_mode(tmp_path):
    png = tmp_path / "curves.png"
    line = run_script([sys.executable, str(BENCHMARKS / "search_efficiency.py"), "--quick", "--png", str(png)],
                      tmp_path, timeout=1500)
    assert line["bench"] == "search_efficiency"
    assert png.stat().st_size > 0


@pytest.mark.slow
def test_gpu_check_rehearses_on_the_cpu(tmp_path):
    line = run_script(["bash", str(BENCHMARKS / "gpu_check.sh"), "--rehearsal"], tmp_path)
    assert line["bench"] == "gpu_throughput" and line["rehearsal"] is True


def test_verdict_is_one_json_line_with_both_figures(capsys):
    verdict("demo", 1.23456, 1.2, False, marginal=1.05, marginal_target=1.1)
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[-1]) == {"bench": "demo", "ratio": 1.2346, "target": 1.2, "pass": False,
                                   "marginal": 1.05, "marginal_target": 1.1}


def test_interleaved_alternates_the_set_ups():
    order: list[str] = []
    runs = interleaved({"a": lambda: order.append("a") or 1.0, "b": lambda: order.append("b") or 2.0}, 3)
    assert order == ["a", "b"] * 3
    assert runs == {"a": [1.0] * 3, "b": [2.0] * 3}
