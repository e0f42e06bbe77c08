"""Credentials stay out of specs and records, and a service that was asked for is never replaced by a local file.

The sweeps here stop at the checks that run before any compute; the services they name are
addresses where nothing listens (a free port), so each check meets a real refused connection.
"""

from __future__ import annotations

import socket

import pytest
from services import free_port
from sweep_fixtures import TINY_SPEC

from sweep.redact import redact, redact_text, secret_in
from sweep.run import main

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(("url", "expected"), [
    (f"postgresql+psycopg://optuna:{SECRET}@db:5432/optuna", "postgresql+psycopg://optuna:***@db:5432/optuna"),
    (f"postgresql://u@db/optuna?password={SECRET}&sslmode=require", None),
    (f"http://admin:{SECRET}@mlflow:5000", "http://admin:***@mlflow:5000"),
    (f"https://mlflow.example.org/?token={SECRET}", "https://mlflow.example.org/?token=***"),
])
def test_redact_hides_passwords_and_secret_query_values(url, expected):
    assert secret_in(url) is not None
    shown = redact(url)
    assert SECRET not in shown
    if expected is not None:
        assert shown == expected
    assert SECRET not in redact_text(f"could not connect to {url}: password {SECRET} refused", url)


@pytest.mark.parametrize("url", ["postgresql+psycopg://optuna@db:5432/optuna", "sqlite:////tmp/optuna.db",
                                 "http://127.0.0.1:5000", "file:///tmp/mlruns", ""])
def test_urls_without_a_secret_are_left_alone(url):
    assert secret_in(url) is None if url else True
    assert redact(url) == url


def _spec(tmp_path, storage: str | None = None):
    text = TINY_SPEC
    if storage is not None:
        text = text.replace("timestamp: false,", f"timestamp: false, storage: '{storage}',")
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def _one_line_error(capsys) -> str:
    """The sweep's error line (libraries may log other lines on stderr before it)."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.endswith(errors[0]), err
    return errors[0]


def test_a_password_in_the_spec_is_refused_without_repeating_it(tmp_path, capsys):
    spec = _spec(tmp_path, f"postgresql+psycopg://optuna:{SECRET}@127.0.0.1:5432/optuna")
    assert main([str(spec)]) == 2
    err = _one_line_error(capsys)
    assert "study.storage" in err and "password" in err and SECRET not in err
    assert not (tmp_path / "out").exists()


def test_a_password_given_with_set_is_refused_too(tmp_path, capsys):
    spec = _spec(tmp_path)
    assert main([str(spec), "--set", f"study.storage=postgresql://u@127.0.0.1/db?password={SECRET}"]) == 2
    err = _one_line_error(capsys)
    assert "study.storage" in err and SECRET not in err


def test_an_unreachable_mlflow_server_stops_the_sweep_before_anything_is_written(tmp_path, capsys, monkeypatch):
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:{SECRET}@127.0.0.1:{port}")
    assert main([str(_spec(tmp_path))]) == 2
    err = _one_line_error(capsys)
    assert f"127.0.0.1:{port}" in err and SECRET not in err
    out = tmp_path / "out"
    assert not (out / "mlflow.db").exists() and not (out / "tiny").exists()


def test_an_unreachable_optuna_database_is_an_error_not_a_local_sqlite_study(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PGPASSWORD", SECRET)
    port = free_port()
    spec = _spec(tmp_path, f"postgresql+psycopg://optuna@127.0.0.1:{port}/optuna")
    assert main([str(spec)]) == 2
    err = _one_line_error(capsys)
    assert "study.storage" in err and f"127.0.0.1:{port}" in err and SECRET not in err
    sweep_dir = tmp_path / "out" / "tiny"
    assert not (sweep_dir / "optuna.db").exists() and not (sweep_dir / "sweep.json").exists()


def test_a_cluster_sweep_needs_an_mlflow_server(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as listening:  # the address answers, as a cluster's would
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        assert main([str(_spec(tmp_path)), "--address", address]) == 2
    err = _one_line_error(capsys)
    assert "MLflow tracking server" in err and "MLFLOW_TRACKING_URI=http://" in err
    assert not (tmp_path / "out" / "tiny" / "sweep.json").exists()
