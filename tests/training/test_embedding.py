"""The speaker-embedding head and its loss: the slot assignment of the diarization loss, unknown
speakers, a run without the head that is today's run exactly, and what a run with it saves."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from agencerdas.inference.model import load_model
from agencerdas.stores.errors import AgencerdasError
from agencerdas.training.checkpoint import load_checkpoint
from agencerdas.training.config import resolve
from agencerdas.training.embedding import speaker_loss
from agencerdas.training.loss import pit_bce
from agencerdas.training.model import build_model

FIXTURES = Path(__file__).parent / "fixtures"


def _two_speakers() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose slot 0 follows label column 1 and slot 1 column 0, over 6 frames."""
    labels = torch.tensor([[[1, 0]] * 3 + [[0, 1]] * 3], dtype=torch.float32)  # (1, 6, 2)
    logits = (labels.flip(-1) * 2 - 1) * 4
    return logits, labels


def test_the_embedding_loss_scores_each_slot_against_the_speaker_the_diarization_loss_gave_it():
    logits, labels = _two_speakers()
    perm = pit_bce(logits, labels).perm
    assert perm.tolist() == [[1, 0]]
    table = torch.eye(10, 4)[:, :4] + 0.01  # identity k points along axis k % 4
    speakers = torch.tensor([[2, 3]])  # column 0 is identity 2, column 1 identity 3
    following = F.normalize(table[[3, 2]], dim=-1)[None]  # slot 0 looks like column 1's speaker
    swapped = following.flip(1)
    assert speaker_loss(following, table, perm, speakers, 0.2) < 0.1
    assert speaker_loss(swapped, table, perm, speakers, 0.2) > 10 * speaker_loss(following, table, perm, speakers, 0.2)
    # Unpermuted (slot i scored as column i), the right embeddings would look wrong.
    identity = torch.tensor([[0, 1]])
    assert speaker_loss(following, table, identity, speakers, 0.2) > 1.0


def test_slots_without_a_known_speaker_add_nothing():
    logits, labels = _two_speakers()
    perm = pit_bce(logits, labels).perm
    table = torch.randn(5, 4, requires_grad=True)
    embeddings = F.normalize(torch.randn(1, 2, 4), dim=-1).requires_grad_()
    loss = speaker_loss(embeddings, table, perm, torch.tensor([[-1, -1]]), 0.2)
    loss.backward()
    assert loss.item() == 0.0 and not table.grad.any() and not embeddings.grad.any()
    known = speaker_loss(embeddings, table, perm, torch.tensor([[-1, 4]]), 0.2)  # only slot 0 (column 1) counts
    alone = speaker_loss(embeddings[:, :1], table, torch.zeros(1, 1, dtype=torch.long), torch.tensor([[4]]), 0.2)
    assert torch.allclose(known, alone)


def test_the_margin_asks_for_more_than_the_softmax():
    table = torch.eye(3)
    near = F.normalize(torch.tensor([[[1.0, 0.5, 0.0]]]), dim=-1)
    perm, speakers = torch.zeros(1, 1, dtype=torch.long), torch.tensor([[0]])
    assert speaker_loss(near, table, perm, speakers, 0.3) > speaker_loss(near, table, perm, speakers, 0.0)


#: Unit roundoff of float32 (2**-24).
UNIT_ROUNDOFF = 2.0**-24


@pytest.mark.parametrize("path", ["true", "false"])
def test_without_the_embedding_loss_a_run_is_the_run_before_the_head_existed(toy, tmp_path, path):
    """``EMBED_LOSS_WEIGHT=0`` trains today's model: the same weights and losses as a run of the code before the
    head existed (fixtures/make_pre_embedding_run.py wrote them, on the same toy corpus, on another CPU).

    Another CPU sums in another order (SIMD width, BLAS kernel), so the runs agree to float32 rounding, not bit
    for bit: a sum of n terms differs by about sqrt(n) units of roundoff relative (n = 1200, the input
    projection's fan-in: 2e-6); Adam's step is invariant to the gradient's scale, so a relative gradient error
    moves a step by that much of the step, and over T steps the errors add at most T-fold: T * sqrt(n) * u of a
    tensor's largest value, 1.2e-5 for these T = 6 steps. Measured on an AMD EPYC against the fixture (written
    on another CPU): 1.5e-6. A change of what is trained moves the weights far more: LR 1% higher, 1.6e-2;
    DROPOUT 0.11 for 0.1 (other masks), 8e-2.

    The one exception is the attention's key bias: softmax over keys ignores a vector added to every key, so its
    gradient is zero in exact arithmetic, and Adam, dividing by that gradient's own RMS, turns pure rounding noise
    into steps of up to LR. It changes nothing the model computes, which the outputs on one input check instead.
    """
    history = toy.train(tmp_path / "run", "EPOCHS=2", "SEED=3", "THREADS=1", f"DATA_ON_DEVICE={path}",
                        "EMBED_LOSS_WEIGHT=0")
    before = torch.load(FIXTURES / "pre-embedding-run.pt", weights_only=True)[path]
    weights = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert weights.keys() == before["model"].keys()
    tolerance = history[-1]["step"] * math.sqrt(weights["input_proj.0.weight"].shape[1]) * UNIT_ROUNDOFF
    dim = weights["blocks.0.attn.proj.weight"].shape[0]
    for name, value in before["model"].items():
        got, expected = weights[name], value
        if name.endswith("attn.qkv.bias"):  # queries and values; the key bias is checked through the outputs
            got, expected = torch.cat([got[:dim], got[2 * dim:]]), torch.cat([value[:dim], value[2 * dim:]])
        torch.testing.assert_close(got, expected, rtol=0, atol=tolerance * float(expected.abs().max()), msg=name)
    cfg = toy.config("EMBED_LOSS_WEIGHT=0")
    models = [build_model(cfg, toy.view.feature_config["n_mels"]).eval() for _ in range(2)]
    models[0].load_state_dict(weights), models[1].load_state_dict(before["model"])
    x = torch.randn(2, cfg.window, models[0].in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(models[0](x).logits, models[1](x).logits, rtol=tolerance, atol=tolerance)
    for key in ("train_loss", "val_loss"):
        assert [r[key] for r in history] == pytest.approx(before[key], rel=tolerance, abs=0), key


def test_a_run_with_the_head_saves_a_table_of_the_train_split_s_speakers_that_inference_leaves_out(toy, tmp_path):
    toy.train(tmp_path / "run", "EPOCHS=1", "EMBED_DIM=8")
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    # toy: five train recordings, each (recording, speaker) one identity
    speakers = sum(len(set(s for s in toy.store.open("labels", r.labels).attrs.asdict()["speakers"]))
                   for r in toy.recordings("train"))
    assert ckpt["model"]["speaker_table"].shape == (speakers, 8)
    lm = load_model(tmp_path / "run" / "best.pt", torch.device("cpu"))
    assert lm.inference.clustering and lm.model.speaker_table is None and lm.model.embed is not None


def test_a_model_embeds_each_slot_as_a_unit_vector_whatever_the_padding():
    cfg = resolve("optimized", ["DIM=16", "HEADS=2", "BLOCKS=1", "EMBED_DIM=8"])
    model = build_model(cfg, 4).eval()
    x = torch.randn(2, 30, model.in_features)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    output = model(x, mask)
    assert output.embeddings.shape == (2, cfg.max_speakers, 8)
    assert torch.allclose(output.embeddings.norm(dim=-1), torch.ones(2, cfg.max_speakers))
    changed = x.clone()
    changed[1, 20:] = 100.0  # padding never reaches a valid frame's embedding
    assert torch.allclose(model(changed, mask).embeddings[1], output.embeddings[1], atol=1e-5)


def test_old_checkpoints_still_stitch_and_cannot_be_asked_to_cluster():
    lm = load_model(FIXTURES / "checkpoint-v1.pt", torch.device("cpu"))
    assert not lm.inference.clustering and lm.model.embed is None
    with pytest.raises(AgencerdasError, match="no speaker-embedding head"):
        load_model(FIXTURES / "checkpoint-v1.pt", torch.device("cpu"), clustering="on")
    with pytest.raises(AgencerdasError, match="needs clustering"):
        load_model(FIXTURES / "checkpoint-v1.pt", torch.device("cpu"), num_speakers=3)
