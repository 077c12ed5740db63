"""Training on a mix of annotated and pseudo-labelled recordings: include, exclude, weight; flags in reports."""

from __future__ import annotations

import pytest

from agencerdas.pipeline.runner import FeaturesRequest, build_features
from agencerdas.stores import Store, load_view
from agencerdas.stores.errors import AgencerdasError
from tests.builders import make_corpus
from agencerdas.training.config import resolve
from agencerdas.inference.evaluate import EvalRequest, evaluate
from agencerdas.training.loop import train
from agencerdas.training.loss import pit_bce, weighted_bce

TINY = ["DIM=16", "BLOCKS=1", "HEADS=2", "WINDOW=40", "BATCH=4", "NUM_WORKERS=0", "DER_EVERY=0", "DEVICE=cpu", "EPOCHS=1"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Six recordings; the RTTMs of two are withheld, so they get pseudo labels."""
    root = tmp_path_factory.mktemp("mixed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENCERDAS_CACHE_DIR", str(root / "cache"))
        audio, rttm = make_corpus(root / "corpus", n=6, seconds=12.0)
        for rec in ("rec04", "rec05"):
            (rttm / f"{rec}.rttm").unlink()
        summary = build_features(FeaturesRequest(audio, str(root / "store"), rttm_dir=rttm, pseudo_labels=True,
                                                 progress=False))
    assert summary.ok, summary.format()
    return root


def test_view_marks_pseudo_recordings_and_keeps_them_out_of_validation(mixed):
    view = load_view(Store(mixed / "store", create=False), "default")
    assert {rec for rec, r in view.recordings.items() if r.pseudo} == {"rec04", "rec05"}
    assert not {"rec04", "rec05"} & set(view.split("validation"))


@pytest.mark.parametrize("mode, expected", [("include", 2), ("weight=0.5", 2), ("exclude", 0)])
def test_training_summary_counts_pseudo_recordings(mixed, tmp_path, mode, expected):
    history = train(resolve("optimized", [*TINY, f"PSEUDO={mode}"]), str(mixed / "store"), "default", tmp_path / mode,
                    progress=False)
    assert history[-1]["pseudo_recordings"] == expected
    assert history[-1]["pseudo"] == mode
    assert history[-1]["train_loss"] > 0


def test_evaluation_report_never_scores_pseudo_labels(mixed, tmp_path):
    train(resolve("optimized", TINY), str(mixed / "store"), "default", tmp_path / "run", progress=False)
    report = evaluate(EvalRequest(model=tmp_path / "run" / "best.pt", store=str(mixed / "store"), split="all",
                                  timelines=0))
    assert report["pseudo_labels_scored"] is False
    assert set(report["pseudo_recordings_in_view"]) == {"rec04", "rec05"}
    assert not {"rec04", "rec05"} & set(report["der"]["per_recording"])
    assert {"rec04", "rec05"} <= set(report["skipped_unscored"])
    assert report["pseudo_recordings_in_training"] == 2


def test_weighted_bce_equals_pit_loss_with_unit_weights_and_ignores_zero_weights():
    import torch

    torch.manual_seed(0)
    logits, labels = torch.randn(3, 20, 4), (torch.rand(3, 20, 4) > 0.6).float()
    result = pit_bce(logits, labels)
    ones = weighted_bce(logits, result.permuted_labels, None, torch.ones(3))
    assert torch.allclose(ones, result.loss, rtol=1e-6, atol=1e-7)
    # a window of weight 0 adds nothing, and the others keep their absolute weight (1 of 3 windows)
    only_first = weighted_bce(logits, result.permuted_labels, None, torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(only_first, pit_bce(logits[:1], labels[:1]).loss / 3, rtol=1e-6, atol=1e-7)


def _losses():
    """(name, loss(logits, labels, mask, weights) -> scalar, logit classes): the PIT BCE and the powerset loss,
    as the trainer weighs pseudo windows (:func:`training.objective.diarization_loss`)."""
    import torch

    from agencerdas.scoring.powerset import powerset_sets
    from agencerdas.training.powerset import powerset_ce

    mapping = torch.from_numpy(powerset_sets(3, 2)).float()

    def bce(logits, labels, mask, weights):
        return weighted_bce(logits, pit_bce(logits, labels, mask).permuted_labels, mask, weights)

    def powerset(logits, labels, mask, weights):
        return powerset_ce(logits, labels, mapping, mask, weights).loss

    return {"pit": (bce, 3), "powerset": (powerset, len(mapping))}


def _batch(classes: int, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    logits, labels = torch.randn(4, 30, classes), (torch.rand(4, 30, 3) > 0.7).float()
    mask = torch.ones(4, 30, dtype=torch.bool)
    mask[1, 20:] = False  # a padded window
    return logits, labels, mask


@pytest.mark.parametrize("name", ["pit", "powerset"])
def test_a_batch_of_pseudo_windows_at_half_weight_pulls_half_as_hard(name):
    """PSEUDO=weight=0.5 halves a window's gradient whatever else its batch holds, also in a batch of pseudo
    windows only (a loss normalised by the sum of the weights trained such a batch at full strength)."""
    import torch

    loss, classes = _losses()[name]
    logits, labels, mask = _batch(classes)
    grads = {}
    for weight in (1.0, 0.5):
        x = logits.clone().requires_grad_(True)
        loss(x, labels, mask, torch.full((4,), weight)).backward()
        grads[weight] = x.grad
    assert grads[1.0].abs().sum() > 0
    assert torch.allclose(grads[0.5], 0.5 * grads[1.0], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", ["pit", "powerset"])
def test_a_pseudo_windows_pull_does_not_depend_on_the_rest_of_its_batch(name):
    import torch

    loss, classes = _losses()[name]
    logits, labels, mask = _batch(classes, seed=1)
    grads = []
    for others in (1.0, 0.25):  # the same half-weight window beside labelled windows, then beside pseudo ones
        x = logits.clone().requires_grad_(True)
        loss(x, labels, mask, torch.tensor([0.5, others, others, others])).backward()
        grads.append(x.grad[0])
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", ["pit", "powerset"])
def test_unit_weights_leave_the_loss_as_it_is_without_weights(name):
    import torch

    from agencerdas.scoring.powerset import powerset_sets
    from agencerdas.training.powerset import powerset_ce

    loss, classes = _losses()[name]
    logits, labels, mask = _batch(classes, seed=2)
    unweighted = (pit_bce(logits, labels, mask).loss if name == "pit" else
                  powerset_ce(logits, labels, torch.from_numpy(powerset_sets(3, 2)).float(), mask).loss)
    assert torch.allclose(loss(logits, labels, mask, torch.ones(4)), unweighted, rtol=1e-6, atol=1e-7)


def test_bad_pseudo_mode_is_rejected():
    with pytest.raises(AgencerdasError, match="pseudo must be"):
        resolve("optimized", ["PSEUDO=sometimes"])


def test_pseudo_labelled_recordings_give_simulation_neither_voices_nor_background(mixed):
    """Their all-silent label columns would lay a whole recording of speech under simulated windows as nobody."""
    from agencerdas.training.inputs import load_data, segment_bank

    cfg = resolve("optimized", [*TINY, "SIM_PROB=0.5"])
    data = load_data(cfg, str(mixed / "store"), "default", {})
    pseudo = {i for i, rec in enumerate(data.train) if rec.pseudo}
    assert pseudo
    bank = segment_bank(cfg, data)
    assert all(not bank.silence[i] for i in pseudo)
    assert not {rec for segments in bank.identities for rec, _, _ in segments} & pseudo
    for seed in range(200):
        recipe = bank.recipe(seed, cfg.window_base_frames)
        used = {rec for _, rec, _, _ in recipe.background} | {rec for slot in recipe.slots for _, rec, _, _ in slot}
        assert not used & pseudo


def test_the_loss_reported_is_the_loss_optimized_with_pseudo_weights(mixed, tmp_path):
    import torch

    from agencerdas.training.inputs import load_data
    from agencerdas.training.loop import Trainer
    from agencerdas.training.runtime import Runtime

    cfg = resolve("optimized", [*TINY, "PSEUDO=weight=0.25", "DROPOUT=0", "SIM_PROB=0", "AUG_WARP=0", "AUG_GAIN_DB=0",
                                "AUG_TILT_DB=0", "AUG_FREQ_MASKS=0", "EMBED_LOSS_WEIGHT=0"])  # the diarization loss alone
    trainer = Trainer(cfg, load_data(cfg, str(mixed / "store"), "default", {}), tmp_path / "run",
                      Runtime(torch.device("cpu"), None), resume=False, progress=False)
    batch = next(b for b in trainer.loader if (b["weight"] < 1).any() and (b["weight"] == 1).any())
    with torch.no_grad():
        logits = trainer.model(batch["feats"], batch["valid"] if batch["padded"] else None).logits
        pit = pit_bce(logits, batch["labels"], batch["mask"])
        weighted = weighted_bce(logits, pit.permuted_labels, batch["mask"], batch["weight"])
    reported = trainer._train_step(batch, 0, 1)
    assert torch.allclose(reported, weighted) and not torch.allclose(weighted, pit.loss)
