"""Exporting a sweep's winners: ``cli`` (``python -m sweep.export``: test once, write, register),
``files`` (TorchScript / ONNX / state dict, checked against eager), ``card`` (the model card),
``seeds`` (retraining with other seeds and the comparison), ``loaded`` (reading an export back)."""
