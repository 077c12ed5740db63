"""Weight files shipped inside installed packages, found without importing those packages.

Importing ``resemblyzer`` needs ``webrtcvad`` (a C extension that also needs setuptools'
``pkg_resources`` at import time), and importing ``silero_vad`` calls ``torch.set_num_threads(1)``
for the whole process. Neither import is needed to read their weights: ``find_spec`` of a
top-level name locates the package folder without executing its ``__init__``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from agencerdas.stores.errors import AgencerdasError


def package_file(package: str, relative: str, install: str) -> Path:
    """The path of ``relative`` inside the installed top-level ``package``, without importing it.

    ``install`` is the command that fixes a missing package; it ends the error message.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AgencerdasError(f"the Python package {package!r} is not installed; run `{install}`")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise AgencerdasError(f"{path}: missing from the installed {package!r} package; reinstall it with `{install}`")
    return path
