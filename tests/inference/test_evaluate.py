"""`agencerdas evaluate --tune`: the chosen post-processing is saved with the run and used afterwards."""

from __future__ import annotations

import json

import torch

from inference.evaluate import TUNE_MEDIANS, TUNE_THRESHOLDS, EvalRequest, evaluate
from inference.model import load_model


def test_tune_saves_its_choice_with_the_run_and_later_inference_uses_it(toy, tmp_path):
    run = tmp_path / "run"
    toy.train(run, "EPOCHS=2", "FILL_SPEECH=false")
    report = evaluate(EvalRequest(model=run / "best.pt", store=toy.url, split="validation", tune=True, timelines=0,
                                  device="cpu"))
    tuned = json.loads((run / "tuned.json").read_text())
    assert tuned["threshold"] in TUNE_THRESHOLDS and tuned["median_frames"] in TUNE_MEDIANS
    assert tuned["fill_speech"] is False  # tuned with the run's own decision rule, and recorded with it
    assert report["tuned"] == tuned
    assert {k: report["inference"][k] for k in ("threshold", "median_frames", "fill_speech")} == {
        k: tuned[k] for k in ("threshold", "median_frames", "fill_speech")}
    inference = load_model(run / "best.pt", torch.device("cpu")).inference  # what diarize and --pseudo-model use
    assert (inference.threshold, inference.median_frames, inference.fill_speech) == (
        tuned["threshold"], tuned["median_frames"], False)
