"""Shared fixtures: every test gets its own stat cache directory (the pipeline writes one there)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache_dir(tmp_path_factory, monkeypatch):
    """Point ``AGENCERDAS_CACHE_DIR`` at a fresh tmp dir so no test reads or writes ~/.cache."""
    monkeypatch.setenv("AGENCERDAS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
