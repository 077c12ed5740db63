"""Behaviour of the permutation-invariant BCE loss and the frame error counts."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from agencerdas.training.loss import frame_error, pit_bce


def _random_batch(
    batch: int, frames: int, speakers: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, frames, speakers, generator=generator) * 3
    labels = (torch.rand(batch, frames, speakers, generator=generator) < 0.4).float()
    return logits, labels


def _brute_force_cost(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(S, S) summed BCE of output i against label column j for one sequence."""
    speakers = logits.shape[-1]
    return torch.tensor(
        [
            [
                F.binary_cross_entropy_with_logits(
                    logits[:, i], labels[:, j], reduction="sum"
                ).item()
                for j in range(speakers)
            ]
            for i in range(speakers)
        ]
    )


def test_loss_is_invariant_to_label_speaker_order() -> None:
    logits, labels = _random_batch(batch=4, frames=50, speakers=4)
    order = torch.randperm(4, generator=torch.Generator().manual_seed(1))

    reference = pit_bce(logits, labels)
    shuffled = pit_bce(logits, labels[..., order])

    torch.testing.assert_close(shuffled.loss, reference.loss)
    torch.testing.assert_close(shuffled.permuted_labels, reference.permuted_labels)


def test_recovers_known_permutation_per_sequence() -> None:
    _, labels = _random_batch(batch=3, frames=60, speakers=4, seed=2)
    expected = torch.stack(
        [torch.randperm(4, generator=torch.Generator().manual_seed(b)) for b in range(3)]
    )
    # Output i of sequence b confidently predicts label column expected[b, i].
    aligned = labels.gather(2, expected.unsqueeze(1).expand_as(labels))
    logits = 8.0 * (2.0 * aligned - 1.0)

    result = pit_bce(logits, labels)

    assert result.perm.dtype == torch.long
    assert torch.equal(result.perm, expected)
    assert torch.equal(result.permuted_labels, aligned)
    assert result.loss.item() < 1e-3


def test_masked_frames_do_not_affect_loss_or_permutation() -> None:
    logits, labels = _random_batch(batch=2, frames=40, speakers=3, seed=3)
    lengths = torch.tensor([40, 25])
    mask = torch.arange(40) < lengths.unsqueeze(1)

    reference = pit_bce(logits, labels, mask)
    noisy_logits, noisy_labels = logits.clone(), labels.clone()
    noisy_logits[1, 25:] = 100.0
    noisy_labels[1, 25:] = 1.0 - noisy_labels[1, 25:]
    noisy = pit_bce(noisy_logits, noisy_labels, mask)

    torch.testing.assert_close(noisy.loss, reference.loss)
    assert torch.equal(noisy.perm, reference.perm)
    # Mean over valid speaker-frames: the batch equals the two pieces pooled.
    pieces = [pit_bce(logits[:1], labels[:1]), pit_bce(logits[1:, :25], labels[1:, :25])]
    pooled = (pieces[0].loss * 40 + pieces[1].loss * 25) / 65
    torch.testing.assert_close(reference.loss, pooled)


def test_gradient_reaches_valid_frames_only() -> None:
    logits, labels = _random_batch(batch=2, frames=10, speakers=2, seed=4)
    logits.requires_grad_(True)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 6:] = False

    pit_bce(logits, labels, mask).loss.backward()

    assert logits.grad is not None
    assert torch.all(logits.grad[0, 6:] == 0)
    assert torch.all(logits.grad[mask] != 0)


def test_no_valid_frame_gives_zero_finite_loss() -> None:
    logits, labels = _random_batch(batch=2, frames=5, speakers=2)
    result = pit_bce(logits, labels, torch.zeros(2, 5, dtype=torch.bool))
    assert result.loss.item() == 0.0


@pytest.mark.parametrize("speakers", [3, 5])
def test_search_matches_optimal_assignment(speakers: int) -> None:
    """The exact search (S=3) and the Hungarian path (S=5) both find the optimum."""
    generator = torch.Generator().manual_seed(speakers)
    logits = torch.randn(6, 30, speakers, generator=generator) * 2
    labels = torch.rand(6, 30, speakers, generator=generator)  # soft labels: no ties

    result = pit_bce(logits, labels)

    total = 0.0
    for b in range(6):
        cost = _brute_force_cost(logits[b], labels[b])
        rows, cols = linear_sum_assignment(cost.numpy())
        assert result.perm[b].tolist() == cols.tolist()
        best = min(
            sum(cost[i, p[i]].item() for i in range(speakers))
            for p in itertools.permutations(range(speakers))
        )
        assert cost[rows, cols].sum().item() == pytest.approx(best, rel=1e-6)
        total += best
    assert result.loss.item() == pytest.approx(total / (6 * 30 * speakers), rel=1e-5)


def test_accepts_integer_labels_and_low_precision_logits() -> None:
    logits, labels = _random_batch(batch=2, frames=20, speakers=4, seed=5)
    reference = pit_bce(logits, labels)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = pit_bce(logits.bfloat16(), labels.to(torch.uint8))

    assert result.loss.dtype == torch.float32
    assert torch.equal(result.perm, reference.perm)
    torch.testing.assert_close(result.loss, reference.loss, rtol=2e-2, atol=0.0)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        pit_bce(torch.zeros(1, 5, 4), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="mask"):
        pit_bce(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2), torch.ones(1, 5))


def _logits_from(activity: list[list[int]]) -> torch.Tensor:
    return (torch.tensor([activity], dtype=torch.float32) * 2.0 - 1.0) * 5.0


def test_frame_error_counts_hand_made_example() -> None:
    reference = torch.tensor([[[1, 0], [1, 1], [0, 0], [0, 1], [1, 0]]], dtype=torch.float32)
    # frame 0 correct; 1 misses one speaker; 2 false alarm;
    # 3 detects the wrong speaker; 4 misses its only speaker.
    logits = _logits_from([[1, 0], [1, 0], [1, 0], [1, 0], [0, 0]])

    counts = frame_error(logits, reference)

    assert counts == {"miss": 2, "false_alarm": 1, "confusion": 1, "speech": 5}


def test_frame_error_overlap_and_mask() -> None:
    reference = torch.tensor([[[1, 1, 0], [0, 1, 0], [1, 0, 0]]], dtype=torch.float32)
    # frame 0: 3 hyp vs 2 ref, both right -> 1 false alarm;
    # frame 1: 2 hyp vs 1 ref, neither right -> 1 false alarm, 1 confusion;
    # frame 2 is padding and would otherwise add a miss.
    logits = _logits_from([[1, 1, 1], [1, 0, 1], [0, 0, 0]])
    mask = torch.tensor([[True, True, False]])

    counts = frame_error(logits, reference, mask)

    assert counts == {"miss": 0, "false_alarm": 2, "confusion": 1, "speech": 3}


def test_frame_error_threshold() -> None:
    reference = torch.tensor([[[1.0], [1.0]]])
    logits = torch.logit(torch.tensor([[[0.6], [0.8]]]))

    assert frame_error(logits, reference, threshold=0.5)["miss"] == 0
    assert frame_error(logits, reference, threshold=0.7)["miss"] == 1
