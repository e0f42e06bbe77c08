"""``python -m sweep.export``."""

import sys

from sweep.export.cli import main

sys.exit(main())
