"""sweep.record (the one reader and writer of sweep.json) and what a resume takes from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_fixtures import TINY_SPEC

from sweep.record import RecordError, SweepRecord, read_record, write_record
from sweep.run import main, resumed_spec
from sweep.spec import SpecError, load_spec


def _recorded(tmp_path: Path, overrides: list[str]) -> tuple[Path, Path]:
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(TINY_SPEC)
    spec = load_spec(spec_path, overrides)
    sweep_dir = tmp_path / "out" / "tiny"
    write_record(SweepRecord(dir=sweep_dir, name="tiny", spec_path=str(spec_path), stages=list(spec.stages),
                             optuna_storage="sqlite:///x.db", tracking_uri="sqlite:///m.db", spec=spec.to_dict(),
                             overrides=overrides))
    return spec_path, sweep_dir


def test_record_round_trip_and_environment_precedence(tmp_path, monkeypatch):
    _, sweep_dir = _recorded(tmp_path, ["fixed.train/epochs=3"])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    record = read_record(sweep_dir)
    assert (record.name, record.optuna_storage, record.tracking_uri) == ("tiny", "sqlite:///x.db", "sqlite:///m.db")
    assert record.overrides == ["fixed.train/epochs=3"] and record.spec["fixed"]["train/epochs"] == 3
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert read_record(sweep_dir).tracking_uri == "http://127.0.0.1:5000"
    assert not list(sweep_dir.glob(".sweep-*"))  # written through a temporary file, renamed


def test_unreadable_records_are_one_line_errors(tmp_path):
    with pytest.raises(RecordError, match="no such sweep folder"):
        read_record(tmp_path / "nowhere")
    with pytest.raises(RecordError, match="not a sweep folder"):
        read_record(tmp_path)
    (tmp_path / "sweep.json").write_text('{"name": ')
    with pytest.raises(RecordError, match=r"sweep.json: not a sweep record \(JSONDecodeError"):
        read_record(tmp_path)


def test_resume_uses_the_recorded_overrides_and_refuses_a_changed_spec(tmp_path, capsys):
    spec_path, sweep_dir = _recorded(tmp_path, ["fixed.train/epochs=3"])
    spec, overrides = resumed_spec(str(spec_path), sweep_dir, [])
    assert overrides == ["fixed.train/epochs=3"] and spec.fixed["train/epochs"] == 3
    with pytest.raises(SpecError, match=r"fixed/train/epochs: expected '3' as recorded in .*sweep.json, found '4'"):
        resumed_spec(str(spec_path), sweep_dir, ["fixed.train/epochs=4"])
    spec_path.write_text(TINY_SPEC.replace("num_samples: 4", "num_samples: 5"))
    assert main([str(spec_path), "--resume", str(sweep_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stages/nyu/num_samples: expected '4'" in err
