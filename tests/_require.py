"""Skip a test when a system tool is missing, or fail it when ``DEPTHSWEEP_REQUIRE_ALL=1`` (CI).

Import it as ``from _require import require_tool`` (``tests/`` is on ``sys.path`` because the
top-level ``conftest.py`` lives there and ``tests`` is not a package).
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ALL = "DEPTHSWEEP_REQUIRE_ALL"


def require_tool(name: str, hint: str) -> str:
    """Absolute path of executable ``name``; else skip (or fail under ``DEPTHSWEEP_REQUIRE_ALL=1``) saying ``hint``."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} not found on PATH; install it with: {hint}"
    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{message} ({REQUIRE_ALL}=1 turns this skip into a failure)", pytrace=False)
    pytest.skip(message)
