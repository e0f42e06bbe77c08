"""Bad inputs to depthcore's command lines: one line ``error: ...`` naming the file, exit 2, nothing written.

Each case runs ``python -m depthcore.train`` / ``depthcore.evaluate`` / ``depthcore.data.prepare``
as a user would (a subprocess, in a folder of its own) and compares every file under the
case's folders before and after. A fresh interpreter costs seconds (torch's import), so the
subprocess run of most cases is marked ``slow`` (CI runs it); every case also runs in process,
through the same ``main(argv)``, in ``make test``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from bad_files import make_bad_files

from depthcore.config import ExperimentConfig
from depthcore.engine import fit

REPO = Path(__file__).resolve().parents[2]


def _tiny(paths: dict[str, Path], out_dir: Path) -> dict:
    return {
        "model": {"name": "lraspp", "args": {"size": "small"}},
        "data": {"nyu_path": str(paths["nyu_mat"]), "split_file": str(paths["split_file"]),
                 "size": [32, 32], "batch_size": 4, "diw_root": str(paths["diw_root"]),
                 "diw_train_csv": str(paths["diw_train_csv"]), "diw_test_csv": str(paths["diw_test_csv"])},
        "train": {"epochs": 1, "threads": 1, "out_dir": str(out_dir), "verbose": False,
                  "max_batches_per_epoch": 1, "device": "cpu"},
    }


@pytest.fixture(scope="module")
def world(synthetic_root, tmp_path_factory) -> dict[str, Path]:
    """Good inputs (a config, a checkpoint) and one bad file of each kind."""
    w: dict[str, Path] = dict(synthetic_root)
    base = tmp_path_factory.mktemp("bad_inputs")
    diw = make_bad_files(synthetic_root, base)
    (base / "not_a_checkpoint.pt").write_bytes(b"PK\x03\x04 truncated zip")
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump(_tiny(synthetic_root, base / "unused_out")))
    run = fit(ExperimentConfig.from_dict(_tiny(synthetic_root, base / "trained")))
    cache = base / "cache.h5"
    from depthcore.data import prepare_nyu_cache

    prepare_nyu_cache(synthetic_root["nyu_mat"], cache, size=(16, 16), split_file=synthetic_root["split_file"],
                      progress=False)
    w.update(base=base, diw=diw, config=config, checkpoint=Path(run["best_checkpoint"]), cache=cache)
    return w


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            stat = path.stat()
            out[str(path)] = (stat.st_size if path.is_file() else -1, stat.st_mtime_ns)
    return out


Args = Callable[[dict[str, Path], Path], list[str]]


def _train(*sets: str) -> Args:
    """``depthcore.train tiny.yaml --set train.out_dir=<case>/out --set ...`` (``{name}`` from the world)."""
    def argv(w: dict[str, Path], out: Path) -> list[str]:
        items = [f"train.out_dir={out / 'out'}", *(s.format(**w, out=out) for s in sets)]
        return ["depthcore.train", str(w["config"])] + [a for s in items for a in ("--set", s)]
    return argv


def _diw(bad_key: str, bad_csv: str, *sets: str) -> Args:
    """``_train`` with DIW from the bad-files folder: ``bad_key`` names ``bad_csv``, the other CSV a good one."""
    other = "diw_test_csv" if bad_key == "diw_train_csv" else "diw_train_csv"
    return _train("data.diw_root={diw}", f"data.{bad_key}={{diw}}/{bad_csv}", f"data.{other}={{diw}}/good.csv", *sets)


def _evaluate(*args: str) -> Args:
    def argv(w: dict[str, Path], out: Path) -> list[str]:
        return ["depthcore.evaluate", *(a.format(**w, out=out) for a in args)]
    return argv


def _prepare(*args: str) -> Args:
    def argv(w: dict[str, Path], out: Path) -> list[str]:
        return ["depthcore.data.prepare", "nyu", *(a.format(**w, out=out) for a in args)]
    return argv


CUDA = torch.cuda.is_available()
no_gpu = pytest.mark.skipif(CUDA, reason="this machine has a CUDA device: 'cuda' is a valid choice here")

# (id, command, what stderr must name)
CASES: list[tuple[str, Args, list[str]]] = [
    # NYU data files
    ("mat-truncated", _train("data.nyu_path={base}/truncated.mat"), ["truncated.mat", "HDF5"]),
    ("mat-not-hdf5", _train("data.nyu_path={base}/text.mat"), ["text.mat", "HDF5"]),
    ("mat-no-depths", _train("data.nyu_path={base}/no_depths.mat"), ["no_depths.mat", "'depths'"]),
    ("mat-no-images", _train("data.nyu_path={base}/no_images.mat"), ["no_images.mat", "'images'"]),
    ("mat-missing", _train("data.nyu_path={base}/nowhere.mat"), ["data.nyu_path", "nowhere.mat"]),
    ("cache-wrong-size", _train("data.nyu_path={cache}", "data.split_file=null"), ["cache.h5", "data.size"]),
    ("split-garbage", _train("data.split_file={base}/split_garbage.mat"), ["split_garbage.mat", "MATLAB v5"]),
    # DIW content
    ("diw-csv-fields", _diw("diw_train_csv", "fields.csv"), ["fields.csv:4", "6 fields"]),
    ("diw-csv-integer", _diw("diw_train_csv", "integer.csv"), ["integer.csv:7", "integer"]),
    ("diw-csv-ordinal", _diw("diw_test_csv", "ordinal.csv"), ["ordinal.csv:4", "'='"]),
    ("diw-csv-binary", _diw("diw_train_csv", "binary.csv"), ["binary.csv:2", "UTF-8"]),
    ("diw-image-missing", _diw("diw_train_csv", "missing_image.csv"), ["nowhere.png", "missing_image.csv:3"]),
    ("diw-image-corrupt", _diw("diw_train_csv", "corrupt.csv"), ["corrupt.png", "corrupt.csv:3"]),
    ("diw-image-not-an-image", _diw("diw_test_csv", "garbage.csv"), ["garbage.jpg", "garbage.csv:1"]),
    ("diw-root-missing", _train("data.diw_root={base}/no_such_folder"), ["data.diw_root", "no_such_folder"]),
    ("diw-init-checkpoint-garbage",
     _train("train.stage=diw", "train.init_checkpoint={base}/not_a_checkpoint.pt"), ["not_a_checkpoint.pt"]),
    # paths
    ("out-dir-is-a-file", _train("train.out_dir={base}/a_file"), ["train.out_dir", "a_file"]),
    ("out-dir-under-a-file", _train("train.out_dir={base}/a_file/run"), ["train.out_dir", "a_file"]),
    ("resume-missing", lambda w, out: _train()(w, out) + ["--resume", str(out / "nowhere")], ["nowhere"]),
    ("evaluate-checkpoint-missing", _evaluate("--checkpoint", "{out}/no_run/best"), ["no_run"]),
    ("evaluate-checkpoint-garbage", _evaluate("--checkpoint", "{base}/not_a_checkpoint.pt"),
     ["not_a_checkpoint.pt"]),
    ("evaluate-json-is-a-folder", _evaluate("--checkpoint", "{checkpoint}", "--json", "{base}"), ["--json"]),
    ("evaluate-json-under-a-file", _evaluate("--checkpoint", "{checkpoint}", "--json", "{base}/a_file/m.json"),
     ["--json", "a_file"]),
    ("evaluate-mat-truncated", _evaluate("--checkpoint", "{checkpoint}", "--set", "data.nyu_path={base}/truncated.mat"),
     ["truncated.mat"]),
    ("evaluate-diw-corrupt",
     _evaluate("--checkpoint", "{checkpoint}", "--set", "data.diw_test_csv={diw}/corrupt.csv",
               "--set", "data.diw_train_csv={diw}/good.csv", "--set", "data.diw_root={diw}"),
     ["corrupt.png", "corrupt.csv:3"]),
    ("prepare-mat-truncated", _prepare("--src", "{base}/truncated.mat", "--out", "{out}/c.h5"), ["truncated.mat"]),
    ("prepare-mat-no-depths", _prepare("--src", "{base}/no_depths.mat", "--out", "{out}/c.h5"),
     ["no_depths.mat", "'depths'"]),
    ("prepare-src-is-a-cache", _prepare("--src", "{cache}", "--out", "{out}/c.h5"), ["cache.h5", "labeled .mat"]),
    ("prepare-split-garbage",
     _prepare("--src", "{nyu_mat}", "--split-file", "{base}/split_garbage.mat", "--out", "{out}/c.h5"),
     ["split_garbage.mat"]),
    ("prepare-out-is-a-folder", _prepare("--src", "{nyu_mat}", "--out", "{out}"), ["--out"]),
    ("prepare-out-under-a-file", _prepare("--src", "{nyu_mat}", "--out", "{base}/a_file/c.h5"), ["--out", "a_file"]),
    ("prepare-cache-dir-is-a-file", _prepare("--src", "{nyu_mat}", "--cache-dir", "{base}/a_file"),
     ["--cache-dir", "a_file"]),
]
DEVICE_CASES: list[tuple[str, Args, list[str]]] = [
    ("train-device-cuda", _train("train.device=cuda"), ["train.device", "cuda"]),
    ("evaluate-device-cuda", _evaluate("--checkpoint", "{checkpoint}", "--device", "cuda"), ["--device", "cuda"]),
]


def _outcome_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = importlib.import_module(argv[0]).main(argv[1:])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _outcome_as_subprocess(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def _check_case(world: dict[str, Path], tmp_path: Path, args: Args, named: list[str], run: Callable) -> None:
    argv = args(world, tmp_path)
    before = _snapshot(world["base"], tmp_path, world["nyu_mat"].parent)
    code, stdout, stderr = run(argv)
    assert code == 2, f"exit {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: "), stderr
    for text in named:
        assert text in stderr, f"{text!r} not in {stderr!r}"
    assert _snapshot(world["base"], tmp_path, world["nyu_mat"].parent) == before, "something was written"


def _params(cases: list[tuple[str, Args, list[str]]], fast: set[str]) -> list:
    """Each case once; the subprocess run is ``slow`` except for the ``fast`` few (one per command line)."""
    return [pytest.param(args, named, marks=() if name in fast else pytest.mark.slow, id=name)
            for name, args, named in cases]


# In process: every case, quickly (the command's main() with the same argv).
@pytest.mark.parametrize(("args", "named"), [pytest.param(a, n, id=i) for i, a, n in CASES]
                         + [pytest.param(a, n, id=i, marks=no_gpu) for i, a, n in DEVICE_CASES])
def test_bad_input_in_process(world, tmp_path, monkeypatch, capsys, args, named):
    monkeypatch.chdir(tmp_path)
    _check_case(world, tmp_path, args, named, lambda argv: _outcome_in_process(argv, capsys))


# As a user runs it: a fresh interpreter, so nothing else (a warning at import) reaches stderr.
@pytest.mark.parametrize(("args", "named"),
                         _params(CASES, {"mat-no-depths", "evaluate-diw-corrupt", "prepare-mat-truncated"}))
def test_bad_input_as_subprocess(world, tmp_path, args, named):
    _check_case(world, tmp_path, args, named, lambda argv: _outcome_as_subprocess(argv, tmp_path))


@no_gpu
@pytest.mark.parametrize(("args", "named"), _params(DEVICE_CASES, {"train-device-cuda"}))
def test_missing_device_as_subprocess(world, tmp_path, args, named):
    _check_case(world, tmp_path, args, named, lambda argv: _outcome_as_subprocess(argv, tmp_path))


def test_the_good_inputs_pass(world, tmp_path, monkeypatch, capsys):
    """The table's base command succeeds, so each case fails for its one bad input."""
    monkeypatch.chdir(tmp_path)
    code, _, stderr = _outcome_in_process(_train()(world, tmp_path), capsys)
    assert code == 0, stderr
    assert (tmp_path / "out" / "best" / "checkpoint.pt").is_file()


def test_an_error_in_a_loader_worker_prints_as_its_own_line(world):
    """A corrupt image found during training (outside the checked sample) surfaces through a worker."""
    from torch.utils.data import DataLoader

    from depthcore.data import DepthInTheWild
    from depthcore.errors import DataError, one_line

    pairs = DepthInTheWild(world["diw"] / "corrupt.csv", world["diw"], size=(16, 16))
    with pytest.raises(DataError) as err:
        next(iter(DataLoader(pairs, batch_size=2, num_workers=1)))
    assert "Original Traceback" in str(err.value)  # what torch re-raises: the worker's traceback appended
    line = one_line(err.value)
    assert line.startswith(str(world["diw"] / "img" / "corrupt.png")) and "corrupt.csv:3" in line
    assert "\n" not in line
