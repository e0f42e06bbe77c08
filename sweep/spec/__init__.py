"""Sweep specs, in one direction: ``read`` (YAML, ``--set``, sections) -> ``check`` -> a resolved
``SweepSpec`` (``model``: dataclasses, Optuna samplers, trial configs; ``load``: the entry point)."""

from __future__ import annotations

from sweep.spec.check import SpecError
from sweep.spec.load import load_spec
from sweep.spec.model import StageSpec, SweepSpec, family

__all__ = ["SpecError", "StageSpec", "SweepSpec", "family", "load_spec"]
