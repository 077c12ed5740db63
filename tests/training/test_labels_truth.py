"""Training on what the labels say: frames outside the UEM are masked, validation scores against the
annotation's own turns, and the normaliser survives bands that never vary in training."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from agencerdas.pipeline.rttm import write_rttm
from agencerdas.pipeline.runner import FeaturesRequest, build_features
from agencerdas.scoring.reference import FROM_FRAMES, FROM_TURNS, load_reference
from agencerdas.stores import Segment, Store, load_view
from tests.builders import make_corpus, render
from agencerdas.training.data import WindowDataset
from agencerdas.training.windows import Normalizer, scored_frames

SECONDS = 8.0
UEM = (2.0, 6.0)  # seconds: only the middle of every recording was annotated


@pytest.fixture(scope="module")
def uem_store(tmp_path_factory):
    """Four tone recordings whose UEM covers [2 s, 6 s) of their 8 s; the audio outside is loud noise."""
    root = tmp_path_factory.mktemp("uem")
    audio, rttm = make_corpus(root / "corpus", n=4, seconds=SECONDS, formats=("wav",), rates=(16000,))
    rng = np.random.default_rng(0)
    for path in sorted(audio.glob("*.wav")):
        signal, rate = sf.read(path, dtype="float32")
        outside = np.ones(len(signal), dtype=bool)
        outside[int(UEM[0] * rate) : int(UEM[1] * rate)] = False
        signal[outside] = 0.5 * rng.standard_normal(int(outside.sum())).astype(np.float32)
        sf.write(path, signal, rate)
        (audio / f"{path.stem}.uem").write_text(f"{path.stem} 1 {UEM[0]} {UEM[1]}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENCERDAS_CACHE_DIR", str(root / "cache"))
        summary = build_features(FeaturesRequest(audio, str(root / "store"), rttm_dir=rttm, jobs=1, progress=False,
                                                 validation_fraction=0.0))
    assert summary.ok, summary.format()
    store = Store(root / "store", create=False)
    return store, load_view(store, "default")


def test_frames_outside_the_uem_are_masked_in_training_windows(uem_store):
    store, view = uem_store
    recordings = [view.recordings[r] for r in view.split("train")]
    lengths = [r.frames for r in recordings]
    scored = [scored_frames(store, r, r.frames) for r in recordings]
    centres = (np.arange(lengths[0]) + 0.5) * 0.01
    np.testing.assert_array_equal(scored[0], (centres >= UEM[0]) & (centres < UEM[1]))

    normalizer = Normalizer.fit(store, recordings, scored)
    dataset = WindowDataset(store.url, {}, recordings, lengths, 10, 80, "stack", 4, normalizer, 64, scored=scored)
    window = dataset[(0, 0)]  # base frames [0, 800): the whole recording
    model_centres = (np.arange(80) + 0.5) * 0.1
    np.testing.assert_array_equal(window["mask"].numpy(), (model_centres >= UEM[0]) & (model_centres < UEM[1]))
    unmasked = WindowDataset(store.url, {}, recordings, lengths, 10, 80, "stack", 4, normalizer, 64)[(0, 0)]
    assert unmasked["mask"].all()  # the difference is the UEM alone
    np.testing.assert_array_equal(window["feats"].numpy(), unmasked["feats"].numpy())


def test_normaliser_statistics_come_from_inside_the_uem(uem_store):
    store, view = uem_store
    recordings = [view.recordings[r] for r in view.split("train")]
    scored = [scored_frames(store, r, r.frames) for r in recordings]
    inside = np.concatenate([np.asarray(store.open("features", r.features)["feats"][:], np.float64)[s]
                             for r, s in zip(recordings, scored)])
    fitted = Normalizer.fit(store, recordings, scored)
    np.testing.assert_allclose(fitted.mean, inside.mean(axis=0), rtol=1e-4, atol=1e-4)
    everything = Normalizer.fit(store, recordings)
    # The loud noise outside the UEM moves the statistics a lot when it is (wrongly) counted.
    assert np.abs(everything.mean - fitted.mean).max() > 1.0


def test_a_capped_run_trains_on_recordings_with_a_uem(toy, uem_store, tmp_path):
    """An audio cap shorter than the entries (ultra-fast's 60 s, here 3 s) with UEMs: the normaliser
    reads past the cap, so the UEM frames must cover the whole entry, not only the capped part."""
    from agencerdas.training.loop import train

    store, _ = uem_store
    history = train(toy.config("EPOCHS=1", "WINDOW=20", "AUDIO_CAP_S=3"), store.url, "default", tmp_path / "run",
                    progress=False)
    assert history[-1]["epoch"] == 1 and np.isfinite(history[-1]["train_loss"])


def test_validation_reference_is_the_annotation_itself(tmp_path, monkeypatch):
    """Three speakers: the reference is every turn to the millisecond, not the 10 ms frame labels."""
    monkeypatch.setenv("AGENCERDAS_CACHE_DIR", str(tmp_path / "cache"))
    audio, rttm = make_corpus(tmp_path / "corpus", n=2, seconds=6.0, formats=("wav",), rates=(16000,))
    turns = [Segment(0.2, 1.234, "alice"), Segment(1.5, 1.0, "bob"), Segment(2.0, 0.617, "carol")]
    sf.write(audio / "rec00.wav", render(turns, 6.0, 16000, 0), 16000)
    write_rttm(rttm / "rec00.rttm", "rec00", turns)
    summary = build_features(FeaturesRequest(audio, str(tmp_path / "store"), rttm_dir=rttm, jobs=1, progress=False))
    assert summary.ok
    store = Store(tmp_path / "store", create=False)
    rec = load_view(store, "default").recordings["rec00"]
    reference = load_reference(store, rec, rec.frames)
    assert reference.source == FROM_TURNS
    assert reference.segments == sorted(turns)  # every speaker, to the millisecond
    assert reference.uem == [(0.0, rec.frames * 0.01)]
    assert store.attrs("labels", rec.labels)["speakers"] == ["alice", "bob", "carol"]

    capped = load_reference(store, rec, 300)  # a cap of 3 s: scored only where the model heard it
    assert capped.uem == [(0.0, 3.0)]


def test_an_entry_without_stored_turns_falls_back_to_frame_labels_and_says_so(toy):
    rec = toy.recordings("validation")[0]
    store = toy.store
    attrs = store.attrs("labels", rec.labels)
    assert attrs["turns"]  # new entries keep them

    class OldEntry:  # the labels group of an entry written before turns were stored
        def __init__(self, group):
            self.group = group
            self.attrs = type("Attrs", (), {"asdict": lambda _: {k: v for k, v in attrs.items() if k != "turns"}})()

        def __getitem__(self, name):
            return self.group[name]

    real_open = store.open
    store.open = lambda kind, key: OldEntry(real_open(kind, key)) if kind == "labels" else real_open(kind, key)
    reference = load_reference(store, rec, rec.frames)
    assert reference.source == FROM_FRAMES
    assert {s.speaker for s in reference.segments} == set(attrs["speakers"])


def test_a_band_constant_in_training_is_not_blown_up_on_wideband_input(tmp_path, monkeypatch):
    """An 8 kHz recording in a 16 kHz store has nothing above 4 kHz; wideband input must stay bounded there."""
    monkeypatch.setenv("AGENCERDAS_CACHE_DIR", str(tmp_path / "cache"))
    audio, rttm = make_corpus(tmp_path / "corpus", n=2, seconds=6.0, formats=("wav",), rates=(8000, 16000))
    build_features(FeaturesRequest(audio, str(tmp_path / "store"), rttm_dir=rttm, jobs=1, progress=False,
                                   validation_fraction=0.0))
    store = Store(tmp_path / "store", create=False)
    view = load_view(store, "default")
    narrow, wide = view.recordings["rec00"], view.recordings["rec01"]
    normalizer = Normalizer.fit(store, [narrow])
    raw = np.asarray(store.open("features", narrow.features)["feats"][:], np.float64).std(axis=0)
    floor = 0.1 * np.median(normalizer.std)
    assert (raw < floor).sum() >= 10  # the bands above 4 kHz barely vary in this training set ...
    np.testing.assert_allclose(normalizer.std[raw < floor], floor, rtol=1e-5)  # ... so their scale is floored
    wideband = np.asarray(store.open("features", wide.features)["feats"][:], np.float32)
    out = normalizer(wideband)
    # With the old 1e-4 floor the same input reached ~170 standard deviations here (and ~1e4 on
    # digitally band-limited audio); floored, no band is scaled more than 10x the median band.
    assert np.isfinite(out).all() and np.abs(out).max() < 100, np.abs(out).max()
