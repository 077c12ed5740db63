"""The one pipeline from model outputs to turns: clustering with a count rule, the assignment of briefly
active slots, the speech gate, and tuning that records exactly what the pipeline then does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agencerdas.scoring.binarize import activity_to_segments
from agencerdas.scoring.count import eigengap_count
from agencerdas.scoring.der import DERSettings
from agencerdas.scoring.pipeline import Chunks, cluster_speakers, decide, turns
from agencerdas.scoring.settings import PipelineSettings
from agencerdas.scoring.tuning import TuningSet, der_scorer, tune
from agencerdas.stores.errors import AgencerdasError

SHIFT = 0.1  # seconds per model frame


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _conversation(n_speakers: int, n_chunks: int = 12, length: int = 40, seed: int = 0):
    """Chunks of a recording where each chunk holds two of ``n_speakers`` well-separated voices, each speaking
    half the chunk in a random slot of 3: (Chunks, true speaker per frame (frames,) of the first slot's)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(n_speakers, 16)))
    hop = length // 2
    starts = np.arange(n_chunks) * hop
    frames = int(starts[-1] + length)
    activity = np.zeros((n_chunks, length, 3), dtype=np.float32)
    embeddings = _unit(rng.normal(size=(n_chunks, 3, 16))).astype(np.float32)
    for c in range(n_chunks):
        pair = rng.choice(n_speakers, size=2, replace=False)
        slots = rng.choice(3, size=2, replace=False)
        activity[c, : length // 2, slots[0]] = 0.9
        activity[c, length // 2 :, slots[1]] = 0.9
        embeddings[c, slots] = _unit(centres[pair] + 0.02 * rng.normal(size=(2, 16)))
    return Chunks(starts, activity, embeddings, frames)


def test_the_eigengap_finds_the_number_of_well_separated_voices_without_a_threshold():
    for n_speakers in (2, 3, 5):
        chunks = _conversation(n_speakers, n_chunks=30, seed=n_speakers)
        chunk_of, slot_of = np.nonzero((chunks.activity > 0.5).any(axis=1))
        assert eigengap_count(chunks.embeddings[chunk_of, slot_of], chunk_of) == n_speakers
        settings = PipelineSettings(window=40, clustering=True, count="eigengap", cluster_threshold=0.0)
        # cluster threshold 0: with the threshold rule every slot would stay its own speaker
        assert cluster_speakers(chunks, settings, SHIFT).shape[1] == n_speakers
    bounded = eigengap_count(chunks.embeddings[chunk_of, slot_of], chunk_of, fewest=1, most=3)
    assert bounded <= 3


def test_a_slot_that_never_speaks_takes_no_speaker_from_a_briefly_active_one():
    # Two chunks; speaker A speaks long in chunk 0 slot 0 and briefly (0.5 s, below the clustering minimum) in
    # chunk 1 slot 1; chunk 1's silent slot 0 has an embedding nearer A than the brief slot's.
    a, b = _unit(np.array([1.0, 0.0, 0.0])), _unit(np.array([0.0, 1.0, 0.0]))
    activity = np.zeros((2, 40, 2), dtype=np.float32)
    activity[0, :, 0] = 0.9
    activity[1, :, 1] = 0.0
    activity[1, 10:15, 1] = 0.9  # 5 frames = 0.5 s
    activity[0, :20, 1] = 0.9  # B in chunk 0, long
    embeddings = np.stack([np.stack([a, b]), np.stack([a, _unit(a + 0.6 * b)])]).astype(np.float32)
    chunks = Chunks(np.array([0, 20]), activity, embeddings, 60)
    settings = PipelineSettings(window=40, clustering=True, cluster_threshold=0.5, median_frames=1)
    posteriors = cluster_speakers(chunks, settings, SHIFT)
    # A's brief turn in chunk 1 (frames 30-34) reaches the posteriors of speaker A (the first found).
    assert posteriors[30:35, 0].min() > 0.4
    assert decide(chunks, settings, SHIFT).activity[30:35].any(axis=1).all()


def test_a_slot_without_an_embedding_is_neither_clustered_nor_assigned_at_any_threshold():
    # An encoder embeds a slot only where it heard it (inference/voices.py): a weak slot, active only at a low
    # decision threshold that tuning tries, has zeros, and must not break the clustering or take a speaker.
    chunks = _conversation(2, n_chunks=6, seed=1)
    chunks.activity[2, :, 2] = 0.35  # above a 0.3 threshold everywhere in chunk 2, never embedded
    chunks.embeddings[2, 2] = 0.0
    without = replace(chunks, activity=chunks.activity.copy())
    without.activity[2, :, 2] = 0.0
    for threshold in (0.3, 0.5):
        settings = PipelineSettings(window=40, clustering=True, cluster_threshold=0.5, threshold=threshold)
        np.testing.assert_array_equal(cluster_speakers(chunks, settings, SHIFT), cluster_speakers(without, settings, SHIFT))


def test_the_speech_gate_keeps_decisions_only_where_the_vad_hears_speech():
    posteriors = np.full((50, 2), 0.1, dtype=np.float32)
    posteriors[:, 0] = 0.9
    speech = np.zeros(40, dtype=bool)  # shorter than the posteriors: the rest is not speech
    speech[10:30] = True
    settings = PipelineSettings(median_frames=1)
    gated = decide(posteriors, settings, SHIFT, speech).activity
    assert gated[:, 0].tolist() == [10 <= t < 30 for t in range(50)]
    assert not gated[:, 1].any()
    assert decide(posteriors, settings, SHIFT).activity[:, 0].all()


def test_tuning_records_the_der_that_the_tuned_pipeline_then_gives():
    rng = np.random.default_rng(3)
    outputs, references, durations = {}, {}, {}
    for index in range(3):
        chunks = _conversation(3, seed=10 + index)
        chunks.activity[:] = np.clip(chunks.activity + 0.35 * rng.random(chunks.activity.shape), 0, 1)
        rec = f"r{index}"
        outputs[rec], durations[rec] = chunks, chunks.frames * SHIFT
        # the reference: the chunks' own slots clustered perfectly (a strict threshold keeps voices apart)
        truth = decide(chunks, PipelineSettings(window=40, clustering=True, cluster_threshold=0.2, threshold=0.85,
                                                median_frames=1), SHIFT).activity
        references[rec] = activity_to_segments(truth, SHIFT)
    data = TuningSet(outputs, references, None, durations)
    configured = PipelineSettings(window=40, clustering=True, cluster_threshold=0.9, threshold=0.3)
    scorer = der_scorer(DERSettings(collar_s=0.0))
    chosen, der = tune(data, configured, SHIFT, scorer)
    assert (chosen.window, chosen.clustering, chosen.count) == (40, True, "threshold")
    hypotheses = {rec: turns(out, chosen, SHIFT, durations[rec])[0] for rec, out in outputs.items()}
    assert scorer(references, hypotheses, None) == pytest.approx(der, abs=1e-12)
    untuned = {rec: turns(out, configured, SHIFT, durations[rec])[0] for rec, out in outputs.items()}
    assert der <= scorer(references, untuned, None)
    # the decision threshold picks the slots that are clustered: tuned jointly, a noisy slot is no speaker
    assert chosen.threshold > 0.5


def test_settings_tuned_for_another_pipeline_are_named_and_a_wrong_setting_is_refused():
    here = PipelineSettings(window=150, overlap=0.5, clustering=True)
    record = replace(here, threshold=0.4).tuned_record()
    assert here.mismatch(record) == []
    assert here.with_tuned(record).threshold == 0.4
    assert here.mismatch({**record, "window": 300, "embeddings": "ge2e"}) == [
        "window: tuned 300, here 150", "embeddings: tuned 'ge2e', here 'head'"]
    for bad in ({"count": "kmeans"}, {"vad": "webrtc"}, {"cluster_threshold": float("nan")},
                {"embeddings": "ge2e", "clustering": False}):
        with pytest.raises(AgencerdasError):
            PipelineSettings(**{"clustering": True, **bad})
