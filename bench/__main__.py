"""``python -m agencerdas.bench``: see :mod:`agencerdas.bench.command`."""

import sys

from .command import main

sys.exit(main())
