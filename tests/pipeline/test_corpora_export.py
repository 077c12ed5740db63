"""`agencerdas export`: what a view trained on, written so that Lhotse (and RTTM readers) read back exactly it."""

from __future__ import annotations

import lhotse  # the test extra installs it: the reader that must read the export back
import numpy as np
import pytest

from agencerdas.cli import main
from agencerdas.pipeline.corpora import CorpusSource
from agencerdas.pipeline.rttm import read_rttm
from agencerdas.pipeline.runner import FeaturesRequest, build_features
from agencerdas.stores import Store, load_view
from tests.corpora import long_file, tone_corpus, write_jsonl


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store whose view holds whole files and two regions of one long file, split train / validation."""
    root = tmp_path_factory.mktemp("export")
    recs = tone_corpus(root / "tones", n=4)
    path, starts = long_file(root, recs)
    rttm = root / "long.rttm"
    rttm.write_text("".join(f"SPEAKER long 1 {s.start + start:.3f} {s.duration:.3f} <NA> <NA> {s.speaker} <NA> <NA>\n"
                            for r, start in zip([r for r in recs if r.path.suffix == ".wav"], starts)
                            for s in r.segments))
    uems = {r.rec_id: root / "tones" / "uem" / f"{r.rec_id}.uem" for r in recs}
    manifest = write_jsonl(root / "nemo.json", [
        *({"audio_filepath": str(r.path), "rttm_filepath": str(root / "tones" / "rttm" / f"{r.rec_id}.rttm"),
           "uem_filepath": str(uems[r.rec_id])} for r in recs),
        *({"audio_filepath": str(path), "offset": start, "duration": 6.0, "rttm_filepath": str(rttm)}
          for start in starts)])
    assert build_features(FeaturesRequest(None, str(root / "store"), progress=False, jobs=1, validation_fraction=0.34,
                                          corpus=CorpusSource(manifests=[str(manifest)]))).ok
    return root


def _close(turns) -> list[tuple]:
    """(start, duration, speaker) turns, sorted, compared within a microsecond."""
    return [(pytest.approx(a, abs=1e-6), pytest.approx(b, abs=1e-6), c) for a, b, c in sorted(turns)]


def _view_turns(store: Store, view, part: str) -> dict[str, list[tuple]]:
    """The view's turns per recording of ``part``, from its labels entries."""
    return {rec: _close(tuple(t) for t in store.attrs("labels", view.recordings[rec].labels)["turns"])
            for rec in view.split(part)}


def test_a_lhotse_export_read_back_by_lhotse_gives_the_views_supervisions(world, tmp_path):
    out = tmp_path / "lhotse"
    assert main(["export", "--store", str(world / "store"), "--format", "lhotse", "--out", str(out)]) == 0

    store = Store(world / "store", create=False)
    view = load_view(store, "default")
    for part in ("train", "validation"):
        supervisions = lhotse.load_manifest(out / f"default_supervisions_{part}.jsonl.gz")
        recordings = lhotse.load_manifest(out / f"default_recordings_{part}.jsonl.gz")
        cuts = lhotse.load_manifest(out / f"default_cuts_{part}.jsonl.gz")
        assert sorted(recordings.ids) == sorted(cuts.ids) == view.split(part)
        expected = _view_turns(store, view, part)
        for cut in cuts:
            rec = view.recordings[cut.id]
            assert (cut.start, cut.duration) == pytest.approx((rec.offset_s or 0.0, rec.duration_s))
            assert sorted((s.start, s.duration, s.speaker) for s in cut.supervisions) == expected[cut.id]
            # The supervision set holds the same turns in the file's time.
            in_file = sorted((s.start - (rec.offset_s or 0.0), s.duration, s.speaker)
                             for s in supervisions.find(recording_id=cut.id))
            assert in_file == expected[cut.id]
            if rec.offset_s:  # lhotse reads exactly the region the view trained on
                samples = cut.load_audio()
                assert samples.shape[-1] == pytest.approx(rec.duration_s * cut.sampling_rate, abs=1)
                whole = recordings[cut.id].load_audio()[:, round(rec.offset_s * 16000):][:, :samples.shape[-1]]
                np.testing.assert_allclose(samples, whole, atol=1e-6)
    assert any(view.recordings[r].offset_s for r in view.split("all"))  # regions were exported too


def test_an_rttm_export_holds_the_views_turns_uems_and_ids(world, tmp_path):
    out = tmp_path / "rttm"
    assert main(["export", "--store", str(world / "store"), "--format", "rttm", "--out", str(out)]) == 0

    store = Store(world / "store", create=False)
    view = load_view(store, "default")
    for part in ("train", "validation"):
        turns = read_rttm(out / f"default_{part}.rttm").turns
        assert {r: sorted((s.start, s.duration, s.speaker) for s in t) for r, t in turns.items()} == _view_turns(
            store, view, part)
        assert (out / f"default_{part}.lst").read_text().split() == view.split(part)
    uem_lines = (out / "default_train.uem").read_text().splitlines() + (out / "default_validation.uem").read_text(
    ).splitlines()
    assert sorted(line.split()[0] for line in uem_lines) == ["rec00", "rec01", "rec02", "rec03"]


def test_an_export_of_a_missing_view_writes_nothing(world, tmp_path, capsys):
    assert main(["export", "--store", str(world / "store"), "--view", "nope", "--format", "rttm", "--out",
                 str(tmp_path / "out")]) == 2
    assert "has no view 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
