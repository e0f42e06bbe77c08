"""Hyperparameter sweeps over depthcore training configs (Ray Tune + Optuna + MLflow).

The only package that imports ray, optuna or mlflow. ``sweep.space`` turns a YAML spec into
validated dataclasses, Optuna define-by-run samplers and depthcore configs.
"""

from __future__ import annotations

from sweep.space import SpecError, SweepSpec, family, load_spec

__all__ = ["SpecError", "SweepSpec", "family", "load_spec"]
