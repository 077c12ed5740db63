"""Assert that two stores hold the same entries and views, wherever and however they were written."""

from __future__ import annotations

import numpy as np

from agencerdas.stores import Store, load_view

#: Attributes that differ between two writes of the same content.
VOLATILE_ATTRS = {"created_at"}
#: The array of each entry kind.
ARRAYS = {"features": "feats", "labels": "labels"}


def stable_attrs(store: Store, kind: str, key: str) -> dict:
    return {k: v for k, v in store.attrs(kind, key).items() if k not in VOLATILE_ATTRS}


def assert_same_entries(left: Store, right: Store, view: str = "default") -> None:
    """Same committed keys, arrays (bit for bit, same dtype), attributes and view recordings."""
    for kind in ARRAYS:
        keys = left.keys(kind)
        assert keys == right.keys(kind), kind
        for key in keys:
            a, b = left.open(kind, key)[ARRAYS[kind]], right.open(kind, key)[ARRAYS[kind]]
            assert a.dtype == b.dtype and a.chunks == b.chunks
            np.testing.assert_array_equal(a[:], b[:])
            assert stable_attrs(left, kind, key) == stable_attrs(right, kind, key)
    assert load_view(left, view).recordings == load_view(right, view).recordings
