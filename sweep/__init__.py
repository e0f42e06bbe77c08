"""Hyperparameter sweeps over depthcore training configs (Ray Tune + Optuna + MLflow).

The only package that imports ray, optuna or mlflow; Ray itself only in ``sweep.tuner`` and
``sweep.trial``. Layout: ``spec/`` (YAML -> a resolved ``SweepSpec``), ``tuner`` and ``trial``
(Ray Tune), ``orchestrate`` (stages in order), ``select`` (winners), ``record`` (``sweep.json``),
``tracking/`` (MLflow), ``export/``, ``report/``, ``predict``; the CLI is ``sweep.run``.
"""
