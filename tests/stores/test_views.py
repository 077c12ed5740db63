"""Dataset views: deterministic splits, fingerprints, persistence and error messages."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import xxhash

from agencerdas.stores import DatasetView, Store, ViewRecording, content_key, load_view, save_view
from agencerdas.stores.errors import AgencerdasError


def recording(i: int, labelled: bool = True) -> ViewRecording:
    return ViewRecording(
        features=content_key("f", i),
        labels=content_key("l", i) if labelled else None,
        frames=100 + i,
        duration_s=1.0 + i / 100,
        speakers=["alice", "bob"][: 1 + i % 2],
        source=f"/audio/rec{i:03d}.wav",
    )


def view(ids, name: str = "default", **kwargs) -> DatasetView:
    return DatasetView(
        name=name,
        recordings={rec: recording(i) for i, rec in enumerate(ids)},
        feature_config={"n_mels": 80},
        label_config={"max_speakers": 4},
        **kwargs,
    )


IDS = [f"rec{i:03d}" for i in range(40)]


def test_split_is_disjoint_covers_all_and_sorted():
    v = view(IDS, validation_fraction=0.25)
    train, validation = v.split("train"), v.split("validation")
    assert set(train).isdisjoint(validation)
    assert sorted(train + validation) == v.split("all") == sorted(IDS)
    assert train == sorted(train) and validation == sorted(validation)
    assert len(validation) == 10


def test_split_is_deterministic_and_independent_of_insertion_order():
    a = view(IDS, split_seed=3)
    b = view(list(reversed(IDS)), split_seed=3)
    assert a.split("validation") == b.split("validation") == view(IDS, split_seed=3).split("validation")
    # the seed changes which recordings validate, not how many
    assert any(view(IDS, split_seed=s).split("validation") != a.split("validation") for s in range(4, 10))
    assert all(len(view(IDS, split_seed=s).split("validation")) == 4 for s in range(4, 10))


def test_removing_a_training_recording_does_not_reshuffle_validation():
    # Ranking is by a per-id hash, so dropping one training recording (same validation count)
    # leaves the validation set exactly as it was.
    full = view(IDS, validation_fraction=0.25)
    dropped = full.split("train")[0]
    fewer = view([rec for rec in IDS if rec != dropped], validation_fraction=0.25)
    assert round(0.25 * 39) == len(full.split("validation"))
    assert fewer.split("validation") == full.split("validation")


@pytest.mark.parametrize("n", [2, 3, 5])
def test_small_sets_get_at_least_one_validation_and_one_train(n):
    v = view(IDS[:n], validation_fraction=0.1)
    assert len(v.split("validation")) == 1
    assert len(v.split("train")) == n - 1


def test_zero_fraction_and_single_recording_have_no_validation():
    assert view(IDS[:5], validation_fraction=0.0).split("validation") == []
    assert view(IDS[:1], validation_fraction=0.5).split("validation") == []
    assert view(IDS[:1], validation_fraction=0.5).split("train") == IDS[:1]


@pytest.mark.parametrize("seed", range(6))
def test_only_labelled_recordings_are_ranked_for_validation(seed):
    """Recordings without labels (no RTTM, labels failed) or with pseudo labels cannot be scored:
    with 2 of 12 labelled, validation is one of those 2 for every seed, never an unlabelled one."""
    v = view(IDS[:12], validation_fraction=0.25, split_seed=seed)
    for i, rec in enumerate(IDS[:12]):
        if i >= 2:
            v.recordings[rec] = recording(i, labelled=False) if i % 2 else replace(recording(i), pseudo=True)
    assert len(v.split("validation")) == 1 and set(v.split("validation")) <= {IDS[0], IDS[1]}
    assert sorted(v.split("train") + v.split("validation")) == IDS[:12]


def test_unknown_split_is_an_error():
    with pytest.raises(AgencerdasError, match="unknown split 'test'"):
        view(IDS).split("test")


def test_fingerprint_follows_entry_keys_only():
    v = view(IDS[:3])
    base = v.fingerprint()
    same = view(IDS[:3])
    same.created_at += 100
    same.recordings["rec000"].frames += 1  # not an entry key
    assert same.fingerprint() == base

    changed = view(IDS[:3])
    changed.recordings["rec001"].features = content_key("other")
    assert changed.fingerprint() != base
    relabelled = view(IDS[:3])
    relabelled.recordings["rec002"].labels = None
    assert relabelled.fingerprint() != base
    fewer = view(IDS[:2])
    assert fewer.fingerprint() != base


def test_save_load_round_trip(tmp_path):
    store = Store(tmp_path / "store")
    v = view(IDS[:7], name="train-set", validation_fraction=0.3, split_seed=5)
    v.recordings["rec003"] = recording(3, labelled=False)
    save_view(store, v)
    loaded = load_view(Store(tmp_path / "store", create=False), "train-set")
    assert loaded == v
    assert loaded.split("validation") == v.split("validation")
    assert loaded.fingerprint() == v.fingerprint()
    payload = json.loads((tmp_path / "store" / "views" / "train-set.json").read_text())
    assert payload["splits"]["validation"] == v.split("validation")
    assert payload["fingerprint"] == v.fingerprint()
    # saving again replaces the view atomically, leaving no temporary files
    save_view(store, v)
    assert sorted(p.name for p in (tmp_path / "store" / "views").iterdir()) == ["train-set.json"]


def test_unknown_view_lists_existing_views(tmp_path):
    store = Store(tmp_path / "store")
    with pytest.raises(AgencerdasError, match=r"no view 'missing' \(views: none\)"):
        load_view(store, "missing")
    save_view(store, view(IDS[:2], name="alpha"))
    save_view(store, view(IDS[:2], name="beta"))
    with pytest.raises(AgencerdasError, match=r"no view 'missing' \(views: alpha, beta\)"):
        load_view(store, "missing")


def test_newer_view_version_is_refused(tmp_path):
    store = Store(tmp_path / "store")
    save_view(store, view(IDS[:2]))
    path = tmp_path / "store" / "views" / "default.json"
    payload = json.loads(path.read_text())
    path.write_text(json.dumps({**payload, "version": payload["version"] + 1}))
    with pytest.raises(AgencerdasError, match="newer than this agencerdas"):
        load_view(store, "default")


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden"])
def test_view_names_must_be_plain(tmp_path, name):
    with pytest.raises(AgencerdasError, match="not a plain file name"):
        save_view(Store(tmp_path / "store"), view(IDS[:2], name=name))


def test_a_view_written_before_labelled_only_ranking_keeps_its_split_and_fingerprint():
    """Reading an old view never moves a recording between train and validation; a view written now
    under the new rule has a fingerprint of its own, so a resume notices the rule changed."""
    v = view(IDS[:12], validation_fraction=0.25, split_seed=3)
    for i in range(2, 12, 2):
        v.recordings[IDS[i]] = recording(i, labelled=False)
    old = v.to_dict()
    old.pop("split_rule")
    old["fingerprint"] = content_key("view", {r: [e.features, e.labels or ""] for r, e in sorted(v.recordings.items())})
    loaded = DatasetView.from_dict(old)
    assert loaded.split_rule == 1 and loaded.fingerprint() == old["fingerprint"]
    ranked_all = sorted(IDS[:12], key=lambda rec: xxhash.xxh3_64_intdigest(f"3:{rec}".encode()))
    assert loaded.split("validation") == sorted(ranked_all[:3])  # every recording ranked, as then
    assert all(loaded.recordings[r].labels for r in v.split("validation"))  # the new rule: labelled only
    assert v.fingerprint() != loaded.fingerprint()


# --- the voices split ------------------------------------------------------------------------------------


def cast_view(casts: dict[str, list[str]], **kwargs) -> DatasetView:
    """A view whose recordings have the given speaker names (recording id -> speakers)."""
    v = view(sorted(casts), split_by="voices", **kwargs)
    for rec, names in casts.items():
        v.recordings[rec].speakers = list(names)
    return v


def global_casts(n: int, pool: list[str], seed: int) -> dict[str, list[str]]:
    """``n`` recordings of 2-4 speakers drawn at random from ``pool`` (a corpus naming voices globally)."""
    rng = np.random.default_rng(seed)
    return {f"rec{i:03d}": list(rng.choice(pool, size=int(rng.integers(2, 5)), replace=False)) for i in range(n)}


HELD_OUT = [f"held{i}" for i in range(6)]
OTHERS = [f"spk{i:02d}" for i in range(34)]


def heldout_casts(seed: int) -> dict[str, list[str]]:
    """The demo's shape: 115 recordings of 34 voices, and 20 (at random places) of 6 voices heard nowhere else."""
    rng = np.random.default_rng(seed)
    held_places = set(rng.choice(135, size=20, replace=False).tolist())
    casts = global_casts(135, OTHERS, seed)
    for i in held_places:
        casts[f"rec{i:03d}"] = list(rng.choice(HELD_OUT, size=int(rng.integers(2, 5)), replace=False))
    return casts


@pytest.mark.parametrize("seed", range(4))
def test_voices_split_validates_only_voices_train_never_has(seed):
    v = cast_view(heldout_casts(seed), split_seed=seed)
    train, validation = v.split("train"), v.split("validation")
    assert validation and set(train).isdisjoint(validation)
    assert sorted(train + validation) == sorted(v.recordings)
    assert not v.split_voices("validation") & v.split_voices("train")
    assert 10 <= len(validation) <= 2 * round(0.1 * 135)  # about validation_fraction, in whole groups
    assert v.describe_split().startswith("by voices")
    assert f"validation {len(validation)} recordings, {len(v.split_voices('validation'))} voices" in v.describe_split()


def test_voices_split_is_deterministic_and_follows_the_seed():
    casts = {f"rec{i:03d}": [f"solo{i}"] for i in range(40)}  # every recording its own voices
    a, b = cast_view(casts, split_seed=3), cast_view(dict(reversed(list(casts.items()))), split_seed=3)
    assert a.split("validation") == b.split("validation") == cast_view(casts, split_seed=3).split("validation")
    assert any(cast_view(casts, split_seed=s).split("validation") != a.split("validation") for s in range(4, 10))
    # groups of one recording rank as the recording split ranks them: the same validation set
    assert a.split("validation") == view(IDS, split_seed=3).split("validation")


def test_groups_linked_through_a_chain_of_voices_stay_together():
    casts = {"a1": ["x", "y"], "a2": ["y", "z"], "a3": ["z", "w"], "b1": ["p", "q"], "b2": ["q", "r"],
             **{f"c{i}": [f"c{i}", f"d{i}"] for i in range(7)}}
    for seed in range(8):
        v = cast_view(casts, split_seed=seed, validation_fraction=0.25)
        validation = set(v.split("validation"))
        assert validation and not v.split_voices("validation") & v.split_voices("train")
        assert {"a1", "a2", "a3"} <= validation or not {"a1", "a2", "a3"} & validation
        assert {"b1", "b2"} <= validation or not {"b1", "b2"} & validation


@pytest.mark.parametrize("casts", [
    {f"rec{i:03d}": ["A", "B"] for i in range(20)},  # speakers named per recording
    global_casts(60, OTHERS, 0),  # voices drawn at random across recordings
], ids=["per-recording-names", "random-global-voices"])
def test_one_giant_group_falls_back_to_the_recording_split_and_says_so(casts):
    v = cast_view(casts, split_seed=2)
    recordings = replace(v, split_by="recordings")
    assert v.split("validation") == recordings.split("validation") and v.split("validation")
    assert v.describe_split().startswith("by recordings (--split-by voices fell back: all ")
    assert "linked by shared speaker names" in v.to_dict()["split_description"]
    assert recordings.describe_split().startswith("by recordings: ")


def test_voices_split_never_validates_everything_nor_pseudo_or_unlabelled_recordings():
    casts = {"r1": ["x"], "r2": ["y"], "r3": ["x"], "r4": ["y"]}  # two groups of two
    for seed in range(6):
        v = cast_view(casts, split_seed=seed, validation_fraction=0.5)
        v.recordings["r5"] = replace(recording(5), speakers=["z"], pseudo=True)
        v.recordings["r6"] = replace(recording(6, labelled=False), speakers=[])
        assert v.split("validation") in (["r1", "r3"], ["r2", "r4"])
        assert {"r5", "r6"} <= set(v.split("train"))


def test_voices_view_round_trips_and_has_a_fingerprint_of_its_own(tmp_path):
    store = Store(tmp_path / "store")
    v = cast_view(heldout_casts(1), name="voices")
    save_view(store, v)
    loaded = load_view(store, "voices")
    assert loaded.split_by == "voices" and loaded.split("validation") == v.split("validation")
    assert loaded.fingerprint() == v.fingerprint() != replace(v, split_by="recordings").fingerprint()


def test_a_view_written_before_split_by_keeps_its_recording_split_and_fingerprint():
    v = cast_view(heldout_casts(0), split_seed=1)
    old = replace(v, split_by="recordings").to_dict()
    old.pop("split_by")
    loaded = DatasetView.from_dict(old)
    assert loaded.split_by == "recordings"
    assert loaded.split("validation") == old["splits"]["validation"] and loaded.fingerprint() == old["fingerprint"]
    assert loaded.split("validation") != v.split("validation")


def test_unknown_split_by_is_refused_with_the_field_named():
    with pytest.raises(AgencerdasError, match=r"split_by \(--split-by\) must be one of recordings, voices"):
        view(IDS[:3], split_by="speakers")
