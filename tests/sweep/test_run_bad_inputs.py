"""Bad inputs to ``python -m sweep.run`` and ``python -m sweep.export``: one line ``error: ...``
naming the file or key, exit 2, no traceback, and nothing written — no sweep folder, no MLflow
store, no cache, the inputs untouched.

The sweep cases run a spec on real-format data files (the tests' generated dataset, and one bad
file of each kind from ``tests/bad_files.py``) through the same ``main(argv)`` a user's command
calls; they all stop before Ray starts, so each takes a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from bad_files import make_bad_files
from sweep_fixtures import TINY_SPEC

from sweep.export.cli import main as export_main
from sweep.run import main as run_main


@pytest.fixture(scope="module")
def world(synthetic_root, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sweep_bad_inputs")
    diw = make_bad_files(synthetic_root, base)
    return {**synthetic_root, "base": base, "diw": diw}


def _spec(world: dict[str, Path], folder: Path) -> Path:
    """The tiny spec on the generated dataset's files (no synthetic section: real-data paths)."""
    spec = yaml.safe_load(TINY_SPEC)
    spec["study"]["name"] = "bad"
    spec["study"]["output_dir"] = str(folder / "out")
    spec["data"] = {"nyu_path": str(world["nyu_mat"]), "split_file": str(world["split_file"]),
                    "diw_root": str(world["diw_root"]), "diw_train_csv": str(world["diw_train_csv"]),
                    "diw_test_csv": str(world["diw_test_csv"])}
    path = folder / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _files(*folders: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in sorted(f.rglob("*"))}


def _diw(bad_key: str, bad_csv: str) -> list[str]:
    """DIW from the bad-files folder: ``bad_key`` names ``bad_csv``, the other CSV a good one."""
    other = "diw_test_csv" if bad_key == "diw_train_csv" else "diw_train_csv"
    return ["data.diw_root={diw}", f"data.{bad_key}={{diw}}/{bad_csv}", f"data.{other}={{diw}}/good.csv"]


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")

# (id, --set overrides, further arguments, what the line must name)
RUN_CASES = [
    ("mat-truncated", ["data.nyu_path={base}/truncated.mat"], [], ["truncated.mat", "HDF5"]),
    ("mat-not-hdf5", ["data.nyu_path={base}/text.mat"], [], ["text.mat", "HDF5"]),
    ("mat-no-depths", ["data.nyu_path={base}/no_depths.mat"], [], ["no_depths.mat", "'depths'"]),
    ("mat-no-images", ["data.nyu_path={base}/no_images.mat"], [], ["no_images.mat", "'images'"]),
    ("mat-missing", ["data.nyu_path={base}/nowhere.mat"], [], ["data.nyu_path", "nowhere.mat"]),
    ("split-garbage", ["data.split_file={base}/split_garbage.mat"], [], ["split_garbage.mat", "MATLAB v5"]),
    ("diw-csv-fields", _diw("diw_train_csv", "fields.csv"), [], ["fields.csv:4", "6 fields"]),
    ("diw-csv-integer", _diw("diw_train_csv", "integer.csv"), [], ["integer.csv:7", "integer"]),
    ("diw-csv-ordinal", _diw("diw_test_csv", "ordinal.csv"), [], ["ordinal.csv:4", "'='"]),
    ("diw-csv-binary", _diw("diw_train_csv", "binary.csv"), [], ["binary.csv:2", "UTF-8"]),
    ("diw-image-missing", _diw("diw_train_csv", "missing_image.csv"), [], ["nowhere.png", "missing_image.csv:3"]),
    ("diw-image-corrupt", _diw("diw_train_csv", "corrupt.csv"), [], ["corrupt.png", "corrupt.csv:3"]),
    ("diw-image-not-an-image", _diw("diw_test_csv", "garbage.csv"), [], ["garbage.jpg", "garbage.csv:1"]),
    ("diw-root-missing", ["data.diw_root={base}/no_such_folder"], [], ["data.diw_root", "no_such_folder"]),
    ("output-dir-is-a-file", ["study.output_dir={base}/a_file"], [], ["study.output_dir", "a_file"]),
    ("output-dir-under-a-file", ["study.output_dir={base}/a_file/runs"], [], ["study.output_dir", "a_file"]),
    ("storage-path-is-a-file", [], ["--storage-path", "{base}/a_file"], ["a_file"]),
    ("resume-not-a-sweep", [], ["--resume", "{base}/diw"], ["diw", "sweep.json"]),
    ("device-cuda", ["fixed.train/device=cuda"], [], ["train/device", "cuda"]),
]


@pytest.mark.parametrize(("sets", "extra", "named"), [
    pytest.param(*c[1:], id=c[0], marks=NO_GPU if "cuda" in c[0] else ()) for c in RUN_CASES])
def test_a_bad_input_to_sweep_run_is_one_line_exit_2_and_nothing_is_written(
        world, tmp_path, monkeypatch, capsys, sets, extra, named):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    spec = _spec(world, tmp_path)
    argv = [str(spec)] + [a for s in sets for a in ("--set", s.format(**world))] + [a.format(**world) for a in extra]
    before = _files(tmp_path, world["base"])
    code = run_main(argv)
    captured = capsys.readouterr()
    output = (captured.err + captured.out).strip()
    assert code == 2, output
    assert "\n" not in output and output.startswith("error: ") and "Traceback" not in output, output
    for part in named:
        assert part in output, (part, output)
    assert _files(tmp_path, world["base"]) == before  # no sweep folder, store, cache or log
    assert not (tmp_path / "out").exists()


def test_a_synthetic_dataset_folder_under_a_file_is_one_line_exit_2(world, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    (tmp_path / "a_file").write_text("a file where a folder should be\n")
    code = run_main(["tiny.yaml", "--set", "data.synthetic.out=a_file/data"])
    output = capsys.readouterr()
    assert code == 2 and output.err.startswith(f"error: {tmp_path / 'tiny.yaml'}: data.synthetic.out: expected a folder"), output
    assert "\n" not in output.err.strip() and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "tiny.yaml"]


def _sweep_record(folder: Path, record: dict | str) -> Path:
    sweep_dir = folder / "a_sweep"
    sweep_dir.mkdir()
    (sweep_dir / "sweep.json").write_text(record if isinstance(record, str) else json.dumps(record))
    return sweep_dir


# (id, how the sweep folder is broken, further arguments, what the line must name)
EXPORT_CASES = [
    ("no-folder", lambda f: f / "nowhere", [], ["nowhere"]),
    ("folder-is-a-file", lambda f: f / "a_file", [], ["a_file"]),
    ("no-record", lambda f: f, [], ["sweep.json"]),
    ("record-truncated", lambda f: _sweep_record(f, '{"name": "a_sweep", "mlflow_tr'), [], ["sweep.json"]),
    ("record-not-an-object", lambda f: _sweep_record(f, "[1, 2]"), [], ["sweep.json"]),
    ("mlflow-store-gone", lambda f: _sweep_record(f, {"name": "a_sweep",
                                                       "mlflow_tracking_uri": f"sqlite:///{f}/gone/mlflow.db"}),
     [], ["mlflow.db"]),
]


@pytest.mark.parametrize(("broken", "extra", "named"), [pytest.param(*c[1:], id=c[0]) for c in EXPORT_CASES])
def test_a_bad_sweep_folder_to_sweep_export_is_one_line_exit_2_and_nothing_is_written(
        tmp_path, monkeypatch, capsys, broken, extra, named):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "a_file").write_text("a file where a folder should be\n")
    target = broken(tmp_path)
    before = _files(tmp_path)
    code = export_main([str(target), "--no-register", *extra])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if line.startswith("error: ")]
    assert code == 2, captured.err + captured.out
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for part in named:
        assert part in lines[0], (part, lines[0])
    assert _files(tmp_path) == before


def test_asking_whether_a_study_exists_writes_nothing(tmp_path):
    from sweep.study import study_exists

    url = f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    assert not study_exists(url, "tiny-nyu")
    assert not (tmp_path / "sweep").exists()  # asked before the sweep writes anything: no folder, no file
