"""``python -m bench``: see :mod:`bench.command`."""

import sys

from .command import main

sys.exit(main())
