"""Model selection measures what inference does: the validation DER that chooses best.pt is the DER that
`evaluate` gives on the same recordings with the cluster threshold validation chose."""

from __future__ import annotations

import json

import pytest

from agencerdas.inference.evaluate import EvalRequest, evaluate
from agencerdas.inference.model import load_model
from agencerdas.stores import hash_file


def test_the_validation_der_is_evaluates_der_with_the_cluster_threshold_it_tuned(toy, tmp_path):
    import torch

    run = tmp_path / "run"
    history = toy.train(run, "EPOCHS=1", "DER_EVERY=1")
    record = history[-1]
    assert record["val_cluster_threshold"] in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    model = run / "best.pt"
    configured = load_model(model, torch.device("cpu")).inference
    # The settings validation ran, written as evaluate --tune would write them.
    tuned = {**configured.tuned_record(), "cluster_threshold": record["val_cluster_threshold"], "der": None,
             "checkpoint": "best.pt", "checkpoint_xxh3": hash_file(model), "tuned_on_scored": True,
             "data": {"view": "default", "split": "validation", "audio_dir": None, "recordings": 1, "features": []}}
    del tuned["der"]
    (run / "tuned.json").write_text(json.dumps(tuned))
    report = evaluate(EvalRequest(model=model, store=toy.url, split="validation", timelines=0, device="cpu"))
    assert report["inference"]["cluster_threshold"] == record["val_cluster_threshold"]
    # validation clips turns at the recording's feature frames, evaluate at its audio duration: a few ms apart
    assert report["der"]["overall"]["der"] == pytest.approx(record["val_der"], abs=2e-3)
