"""Behaviour of the SA-EEND model."""

from __future__ import annotations

import pytest
import torch

from agencerdas.training.loss import pit_bce
from agencerdas.training.model import EEND


def _model(**overrides: int | float) -> EEND:
    torch.manual_seed(0)
    config: dict[str, int | float] = dict(
        in_features=10, dim=32, blocks=2, heads=4, max_speakers=3, ff_mult=2, dropout=0.0
    )
    config.update(overrides)
    return EEND(**config).eval()  # type: ignore[arg-type]


def _padding_mask(lengths: list[int], frames: int) -> torch.Tensor:
    return torch.arange(frames) < torch.tensor(lengths).unsqueeze(1)


def test_output_shapes() -> None:
    model = _model()
    x = torch.randn(2, 15, 10)

    logits, maps, _ = model(x)
    assert logits.shape == (2, 15, 3)
    assert maps is None

    logits, maps, _ = model(x, return_attention=True)
    assert logits.shape == (2, 15, 3)
    assert maps is not None and len(maps) == 2
    assert all(m.shape == (2, 4, 15, 15) for m in maps)


def test_padded_frames_do_not_influence_valid_frames() -> None:
    model = _model()
    x = torch.randn(2, 12, 10)
    mask = _padding_mask([12, 7], 12)

    logits, _, _ = model(x, mask)
    altered = x.clone()
    altered[1, 7:] = 50.0 * torch.randn(5, 10)
    altered_logits, maps, _ = model(altered, mask, return_attention=True)

    torch.testing.assert_close(altered_logits[:, :7], logits[:, :7])
    torch.testing.assert_close(altered_logits[0], logits[0])
    assert maps is not None
    assert all(torch.all(m[1, :, :, 7:] == 0) for m in maps)


def test_explicit_attention_path_matches_fused_path() -> None:
    model = _model()
    x = torch.randn(3, 20, 10)
    mask = _padding_mask([20, 13, 1], 20)

    fused, _, _ = model(x, mask)
    explicit, maps, _ = model(x, mask, return_attention=True)

    torch.testing.assert_close(explicit, fused, rtol=1e-5, atol=1e-5)
    assert maps is not None
    for weights in maps:
        assert weights.dtype == torch.float32
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3, 4, 20))


def test_fully_padded_sequence_gives_finite_outputs() -> None:
    model = _model()
    x = torch.randn(2, 8, 10)
    mask = _padding_mask([8, 0], 8)

    for return_attention in (False, True):
        logits, _, _ = model(x, mask, return_attention=return_attention)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_runs_under_autocast_without_overflow(dtype: torch.dtype) -> None:
    model = _model().train()
    # Large inputs and weights push attention scores far beyond fp16's range
    # if they were computed in low precision.
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.mul_(150.0)
    x = 100.0 * torch.randn(2, 16, 10)
    mask = _padding_mask([16, 9], 16)
    labels = (torch.rand(2, 16, 3) < 0.5).float()

    for return_attention in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            logits, maps, _ = model(x, mask, return_attention=return_attention)
            loss = pit_bce(logits, labels, mask).loss
        loss.backward()
        assert torch.isfinite(logits).all()
        assert maps is None or all(torch.isfinite(m).all() for m in maps)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="divisible"):
        EEND(in_features=10, dim=30, heads=4)
    model = _model()
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(2, 5, 9))
    with pytest.raises(ValueError, match="mask"):
        model(torch.randn(2, 5, 10), torch.ones(2, 5))


def test_learns_toy_two_speaker_task() -> None:
    """Speaker k speaks exactly when input feature band k carries energy."""
    torch.manual_seed(0)
    model = EEND(in_features=8, dim=32, blocks=1, heads=2, max_speakers=2, ff_mult=2, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        activity = (torch.rand(16, 24, 2) < 0.4).float()
        bands = activity.repeat_interleave(4, dim=-1)  # (16, 24, 8)
        return bands + 0.3 * torch.randn(16, 24, 8), activity

    losses = []
    for _ in range(100):
        x, labels = batch()
        logits, _, _ = model(x)
        loss = pit_bce(logits, labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    # Chance level is about ln 2 = 0.69; a learned mapping is near zero.
    assert losses[0] > 0.5
    assert sum(losses[-10:]) / 10 < 0.05
