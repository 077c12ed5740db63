"""Whole-recording inference in batches of chunks equals it chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agencerdas.training.model import EEND
from agencerdas.training.posteriors import predictor, recording_posteriors
from agencerdas.training.windows import Normalizer, WindowFormat


@pytest.mark.parametrize("frames", [95, 1200, 4321])  # shorter than a window, a few windows, many
def test_batched_inference_equals_chunk_by_chunk(frames):
    torch.manual_seed(0)
    model = EEND(in_features=5 * 8, dim=16, blocks=2, heads=2, max_speakers=3).eval()
    feats = np.random.default_rng(frames).standard_normal((frames, 8)).astype(np.float16)
    fmt = WindowFormat(Normalizer.identity(8), downsample=5)
    predict = predictor(model, torch.device("cpu"), torch.autocast("cpu", enabled=False))
    one = recording_posteriors(predict, feats, fmt, frames, window=60, batch=1)
    assert one.shape == (-(-frames // 5), 3)
    for batch in (2, 7, 64):
        np.testing.assert_allclose(recording_posteriors(predict, feats, fmt, frames, window=60, batch=batch), one,
                                   rtol=1e-5, atol=1e-6)
