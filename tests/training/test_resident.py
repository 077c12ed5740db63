"""The device-resident train split: the same batches as the streaming loader, the budget that
sends it back to streaming, and training that does not depend on the path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agencerdas.stores.errors import AgencerdasError
from agencerdas.training.augment import Augment
from agencerdas.training.data import WindowDataset, WindowPlan
from agencerdas.training.identities import number_speakers
from agencerdas.training.inputs import load_data
from agencerdas.training.loop import Trainer
from agencerdas.training.resident import ResidentWindows, choose_resident, split_bytes
from agencerdas.training.runtime import Runtime
from agencerdas.training.windows import Normalizer, WindowFormat

AUGMENT = Augment(warp=0.1, gain_db=6.0, tilt_db=6.0, freq_masks=2, mask_bins=8)


@pytest.mark.parametrize("pooling, downsample, augment", [("stack", 10, None), ("stack", 15, AUGMENT),
                                                         ("mean", 20, AUGMENT)])
def test_both_data_paths_give_the_same_batches(toy, pooling, downsample, augment):
    recordings = toy.recordings("train")
    lengths = [min(r.frames, 1000 + 37 * i) for i, r in enumerate(recordings)]  # caps: padded, masked windows
    # A UEM on the second recording: its first 2 s are not scored.
    scored = [None, np.arange(recordings[1].frames) >= 200, None, None, None]
    normalizer = Normalizer.fit(toy.store, recordings)
    window = 30  # model frames
    identities, _ = number_speakers(recordings, "recording")
    stream = WindowDataset(toy.url, {}, recordings, lengths, downsample, window, pooling, 4, normalizer, 64,
                           pseudo_weight=1.0, augment=augment, scored=scored, identities=identities)
    fmt = WindowFormat(normalizer, downsample, pooling, 4, augment)
    resident = ResidentWindows(toy.store, recordings, lengths, scored, fmt, window * downsample, 1.0,
                               torch.device("cpu"), progress=False, identities=identities)
    plan = WindowPlan(lengths, window * downsample, 4, seed=3, shuffle_group=2, augment=augment is not None)
    batches, masked = 0, 0
    for epoch in range(2):
        plan.set_epoch(epoch)
        for windows in plan:
            items = [stream[w] for w in windows]
            expected = {k: torch.stack([item[k] for item in items])
                        for k in ("feats", "labels", "mask", "weight", "speakers")}
            got = resident.batch(windows)
            torch.testing.assert_close(got["feats"], expected["feats"], rtol=1e-5, atol=1e-5)
            for key in ("labels", "mask", "weight", "speakers"):
                assert torch.equal(got[key], expected[key]), key
            batches += 1
            masked += int((~expected["mask"]).sum())
    assert batches > 4 and masked > 0  # the caps, the padding and the UEM were exercised


def test_the_budget_sends_a_split_that_does_not_fit_back_to_streaming(toy, tmp_path):
    needed = split_bytes(toy.store, toy.recordings("train"), [r.frames for r in toy.recordings("train")], 4)
    assert needed == 5 * 1200 * (2 * 80 + 4 + 1)  # float16 features, uint8 labels, the UEM mask
    assert choose_resident("auto", needed, needed)[0]
    resident, why = choose_resident("auto", needed, needed - 1)
    assert not resident and why.startswith("streamed from the store") and "budget" in why
    assert not choose_resident("false", needed, 10 * needed)[0]
    with pytest.raises(AgencerdasError, match="DATA_ON_DEVICE=true"):
        choose_resident("true", needed, needed - 1)

    cfg = toy.config("EPOCHS=1", "DATA_BUDGET=1e-9")
    trainer = Trainer(cfg, load_data(cfg, toy.url, "default", {}), tmp_path / "run",
                      Runtime(torch.device("cpu"), None), resume=False, progress=False)
    assert isinstance(trainer.loader.loader, torch.utils.data.DataLoader) and trainer.data_path.startswith("streamed")


def test_training_is_the_same_on_both_paths(toy, tmp_path):
    runs = {path: toy.train(tmp_path / path, "EPOCHS=2", f"DATA_ON_DEVICE={path}", "AUG_WARP=0.1", "AUG_GAIN_DB=3")
            for path in ("true", "false")}
    assert runs["true"][0]["data_path"].startswith("on the device")
    assert runs["false"][0]["data_path"].startswith("streamed")
    for on_device, streamed in zip(runs["true"], runs["false"]):
        assert math.isclose(on_device["train_loss"], streamed["train_loss"], rel_tol=1e-4)
        assert math.isclose(on_device["val_loss"], streamed["val_loss"], rel_tol=1e-4)
