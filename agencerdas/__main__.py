"""``python -m agencerdas``: the console script (torchrun starts it this way)."""

import sys

from .cli import main

sys.exit(main())
