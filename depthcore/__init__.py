"""depthcore: single-image depth estimation models, data, losses, metrics and training.

This package is the science half of depthsweep and never imports Ray, Optuna or MLflow.
"""

__version__ = "0.1.0"
