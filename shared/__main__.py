"""``python -m shared``: the CLI (see :mod:`shared.cli`)."""

import sys

from .cli import main

sys.exit(main())
