"""``python -m training.bench``: see :mod:`training.bench.command`."""

import sys

from .command import main

sys.exit(main())
