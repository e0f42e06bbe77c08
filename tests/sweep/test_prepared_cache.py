"""The README's manual preparation writes the very cache a real-data sweep then reads."""

from __future__ import annotations

import yaml

from depthcore.data.prepare import main as prepare_main
from sweep.orchestrate import prepare_data
from sweep.spec import load_spec


def test_prepare_with_the_sweeps_cache_dir_is_reused_by_the_sweep(synthetic_root, tmp_path, capsys):
    # A real-data spec (no data.synthetic) on files in the real NYU / DIW formats.
    spec_path = tmp_path / "real.yaml"
    spec_path.write_text(yaml.safe_dump({
        "study": {"name": "real", "output_dir": "runs/sweeps", "timestamp": False},
        "data": {"nyu_path": str(synthetic_root["nyu_mat"]), "split_file": str(synthetic_root["split_file"]),
                 "diw_root": str(synthetic_root["diw_root"]), "diw_train_csv": str(synthetic_root["diw_train_csv"]),
                 "diw_test_csv": str(synthetic_root["diw_test_csv"])},
        "fixed": {"data/size": [16, 16], "train/epochs": 1},
        "stages": {"nyu": {"num_samples": 1}},
    }))
    spec = load_spec(spec_path)
    cache_dir = tmp_path / "runs" / "sweeps" / "cache"  # <study.output_dir>/cache, as the README says
    assert prepare_main(["nyu", "--src", str(synthetic_root["nyu_mat"]), "--cache-dir", str(cache_dir),
                         "--size", "16", "16", "--split-file", str(synthetic_root["split_file"]), "--quiet"]) == 0
    (prepared,) = cache_dir.iterdir()
    mtime = prepared.stat().st_mtime_ns
    capsys.readouterr()

    paths = prepare_data(spec, ["nyu"])
    assert paths["data/nyu_path"] == str(prepared)
    assert prepared.stat().st_mtime_ns == mtime and list(cache_dir.iterdir()) == [prepared]
