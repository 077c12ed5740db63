"""The one window reader (``training.windows.cut_window``): base-rate rows with read-time
downsampling, padding and masks, here with an identity normaliser so values pass unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from agencerdas.stores import ArraySpec, EntryReader, Store, content_key, downsample_labels, read_rows
from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores import default_codec
from agencerdas.training.windows import Normalizer, WindowFormat, cut_window

FRAMES, MELS, SPEAKERS = 317, 6, 3


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    """A features entry (float16, chunks of 50 frames) and its labels, written block by block."""
    store = Store(tmp_path_factory.mktemp("windows") / "store")
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((FRAMES, MELS)).astype(np.float16)
    labels = (rng.random((FRAMES, SPEAKERS)) < 0.4).astype(np.uint8)
    fkey, lkey = content_key("f"), content_key("l")
    with store.write("features", fkey, {}) as writer:
        writer.create("feats", ArraySpec(MELS, "float16", 50, default_codec()))
        for start in range(0, FRAMES, 77):
            writer.append("feats", feats[start : start + 77])
    with store.write("labels", lkey, {}) as writer:
        writer.create("labels", ArraySpec(SPEAKERS, "uint8", 50, None))
        writer.append("labels", labels)
    return store, fkey, lkey


def read(reader: EntryReader, start: int, frames: int, downsample: int = 1, pooling: str = "stack"):
    """``(features, labels, mask)`` of base frames [start, start + frames) through :func:`cut_window`."""
    fmt = WindowFormat(Normalizer.identity(reader.features.shape[1]), downsample, pooling)
    return cut_window(fmt, reader.features, reader.labels, start, frames, reader.frames)[:3]


def direct(store: Store, fkey: str, lkey: str) -> tuple[np.ndarray, np.ndarray]:
    return store.open("features", fkey)["feats"][:].astype(np.float32), store.open("labels", lkey)["labels"][:]


@pytest.mark.parametrize("factor", [1, 10, 15])
@pytest.mark.parametrize("start", [0, 37, 150])
def test_downsampled_window_equals_slicing_the_full_array(entry, factor, start):
    store, fkey, lkey = entry
    full_x, full_y = direct(store, fkey, lkey)
    reader = EntryReader(store, fkey, lkey)
    frames = 150  # a multiple of 10 and 15, inside the entry for every start
    n = frames // factor
    window_x = full_x[start : start + frames].reshape(n, factor, MELS)
    window_y = full_y[start : start + frames].reshape(n, factor, SPEAKERS)

    x, y, mask = read(reader, start, frames, downsample=factor, pooling="stack")
    assert x.dtype == np.float32 and x.shape == (n, factor * MELS)
    np.testing.assert_array_equal(x, window_x.reshape(n, factor * MELS))
    np.testing.assert_array_equal(y, (window_y.sum(axis=1) * 2 >= factor).astype(np.uint8))
    assert mask.shape == (n,) and mask.all()

    x_mean, y_mean, _ = read(reader, start, frames, downsample=factor, pooling="mean")
    assert x_mean.shape == (n, MELS)
    np.testing.assert_allclose(x_mean, window_x.mean(axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y_mean, y)

    # frame-major stacking: model frame i holds base frames i*factor .. i*factor+factor-1 in order
    np.testing.assert_array_equal(x[1, :MELS], full_x[start + factor])


def test_window_past_the_end_is_zero_padded_and_masked(entry):
    store, fkey, lkey = entry
    full_x, full_y = direct(store, fkey, lkey)
    reader = EntryReader(store, fkey, lkey)
    assert reader.frames == FRAMES

    start = 297  # 20 real frames, then 40 past the end
    x, y, mask = read(reader, start, 60)
    np.testing.assert_array_equal(x[:20], full_x[297:])
    np.testing.assert_array_equal(y[:20], full_y[297:])
    assert not x[20:].any() and not y[20:].any()
    np.testing.assert_array_equal(mask, np.arange(60) < 20)

    x, y, mask = read(reader, start, 60, downsample=10)
    assert x.shape == (6, 10 * MELS)
    np.testing.assert_array_equal(mask, [True, True, False, False, False, False])
    np.testing.assert_array_equal(x[:2], full_x[297:].reshape(2, 10 * MELS))
    assert not x[2:].any() and not y[2:].any()

    x, y, mask = read(reader, FRAMES + 5, 30, downsample=15, pooling="mean")  # entirely past the end
    assert x.shape == (2, MELS) and not x.any() and not y.any() and not mask.any()


def test_features_only_reader(entry):
    store, fkey, _ = entry
    x, y, mask = read(EntryReader(store, fkey), 0, 30, downsample=15)
    assert y is None and x.shape == (2, 15 * MELS) and mask.all()


def test_negative_start_is_an_error(entry):
    store, fkey, lkey = entry
    with pytest.raises(AgencerdasError, match="starts before the entry"):
        read(EntryReader(store, fkey, lkey), -1, 10)
    with pytest.raises(AgencerdasError):
        read_rows(store.open("features", fkey)["feats"], -5, 3)


def test_label_majority_downsampling_by_hand():
    y = np.array(
        # speaker 0: 2/4 active → on (a half counts); speaker 1: 1/4 → off; then 3/4 and 4/4
        [[1, 0], [1, 0], [0, 1], [0, 0],
         [1, 1], [1, 1], [1, 1], [0, 1],
         [1, 1], [1, 1]],  # a trailing partial group is dropped
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(downsample_labels(y, 4), [[1, 0], [1, 1]])
    odd = np.array([[1], [1], [0], [1], [0], [0]], dtype=np.uint8)
    np.testing.assert_array_equal(downsample_labels(odd, 3), [[1], [0]])  # 2/3 on, 1/3 off


def test_unknown_pooling_and_bad_factor_are_errors(entry):
    store, fkey, lkey = entry
    reader = EntryReader(store, fkey, lkey)
    with pytest.raises(AgencerdasError, match="unknown pooling"):
        read(reader, 0, 20, downsample=10, pooling="max")
    with pytest.raises(AgencerdasError, match="factor"):
        read(reader, 0, 20, downsample=0)
