"""Hostile and careless inputs through the real `agencerdas` CLI, one table row each.

Every row must exit 2 with a message that names the input, print no traceback, touch nothing on
disk (the store, the runs, the corpus and every other file stay byte for byte and mtime for mtime),
and leave `store verify` clean. A new option is covered by adding a row.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from agencerdas.pipeline.runner import FeaturesRequest, build_features
from agencerdas.stores import Store, hash_file
from tests.builders import make_corpus
from tests.conftest import TINY
from tests.corpora import hostile_descriptions, write_kaldi
from tests.reliability.helpers import Zygote, assert_no_traceback

#: (id, argv with {root} for the world's directory, a text the error message must contain)
ROWS = [
    # checkpoints: never executed, never trusted
    ("evaluate-crafted", ["evaluate", "--model", "{root}/crafted.pt", "--store", "{root}/store"], "could run code"),
    ("diarize-crafted", ["diarize", "{root}/corpus/audio/rec00.wav", "--model", "{root}/crafted.pt", "--out",
                         "{root}/new-out"], "could run code"),
    ("resume-crafted", ["train", "--store", "{root}/store", "--out", "{root}/crafted-run", "--resume", *TINY],
     "could run code"),
    ("pseudo-model-crafted", ["features", "{root}/corpus/audio", "--store", "{root}/store", "--rttm-dir",
                              "{root}/corpus/rttm", "--pseudo-model", "{root}/crafted.pt"], "could run code"),
    ("legacy-format", ["evaluate", "--model", "{root}/legacy.pt", "--store", "{root}/store"], "legacy"),
    ("no-model-entry", ["evaluate", "--model", "{root}/no-model.pt", "--store", "{root}/store"], "no 'model' entry"),
    ("config-of-wrong-type", ["evaluate", "--model", "{root}/bad-config.pt", "--store", "{root}/store"],
     "dim must be int"),
    ("nan-weights", ["evaluate", "--model", "{root}/nan.pt", "--store", "{root}/store"], "non-finite"),
    ("missing-checkpoint", ["diarize", "{root}/corpus/audio/rec00.wav", "--model", "{root}/none.pt", "--out",
                            "{root}/new-out"], "none.pt does not exist"),
    ("checkpoint-is-a-directory", ["evaluate", "--model", "{root}/run", "--store", "{root}/store"], "is a directory"),
    ("checkpoint-zip-not-torch", ["evaluate", "--model", "{root}/not-torch.zip", "--store", "{root}/store"],
     "not-torch.zip: not a readable agencerdas checkpoint"),
    # numbers
    ("lr-nan", ["train", "--store", "{root}/store", "--out", "{root}/new-run", *TINY, "LR=nan"], "lr must be a finite"),
    ("lr-inf", ["train", "--store", "{root}/store", "--out", "{root}/new-run", *TINY, "LR=inf"], "lr must be a finite"),
    ("seed-negative", ["train", "--store", "{root}/store", "--out", "{root}/new-run", *TINY, "SEED=-1"], "seed must be"),
    ("batch-not-a-number", ["train", "--store", "{root}/store", "--out", "{root}/new-run", *TINY, "BATCH=abc"],
     "batch='abc'"),
    ("unknown-override", ["train", "--store", "{root}/store", "--out", "{root}/new-run", "EPOCS=3"], "valid names"),
    # training settings (issue 29): overrides anywhere, bounded before any work, a run never its own source
    ("unknown-override-after-an-option", ["train", "--store", "{root}/store", *TINY, "--out", "{root}/new-run",
                                          "EPOCS=3"], "valid names"),
    ("powerset-of-8-million-classes", ["train", "--store", "{root}/store", "--out", "{root}/new-run", *TINY,
                                       "LOSS=powerset", "MAX_SPEAKERS=64", "MAX_OVERLAP=5"], "8303633 classes"),
    ("embed-margin-1e38", ["train", "--store", "{root}/store", "--out", "{root}/new-run", *TINY, "EMBED_MARGIN=1e38"],
     "embed_margin must be in [0.0, 1.0]"),
    ("init-from-the-run-it-overwrites", ["train", "--store", "{root}/store", "--out", "{root}/run", "--overwrite",
                                         *TINY, "INIT_FROM={root}/run/best.pt"], "lies inside --out"),
    ("resume-with-an-init-from-it-never-reads", ["train", "--store", "{root}/store", "--out", "{root}/run", "--resume",
                                                 *TINY, "--init-from", "{root}/run/best.pt"], "never reads INIT_FROM"),
    ("validation-fraction-nan", ["features", "{root}/corpus/audio", "--store", "{root}/store",
                                 "--validation-fraction", "nan"], "--validation-fraction"),
    ("n-mels-0", ["features", "{root}/corpus/audio", "--store", "{root}/store", "--n-mels", "0"], "--n-mels"),
    ("n-mels-5000", ["features", "{root}/corpus/audio", "--store", "{root}/store", "--n-mels", "5000"], "n_mels"),
    ("split-seed-negative", ["features", "{root}/corpus/audio", "--store", "{root}/store", "--split-seed", "-1"],
     "--split-seed"),
    ("jobs-0", ["features", "{root}/corpus/audio", "--store", "{root}/store", "--jobs", "0"], "--jobs"),
    ("validation-fraction-1", ["features", "{root}/corpus/audio", "--store", "{root}/store",
                               "--validation-fraction", "1"], "--validation-fraction"),
    ("collar-nan", ["evaluate", "--model", "{root}/run/best.pt", "--store", "{root}/store", "--collar", "nan"],
     "--collar"),
    ("evaluate-jobs-0", ["evaluate", "--model", "{root}/run/best.pt", "--store", "{root}/store", "--jobs", "0"],
     "--jobs"),
    ("gc-min-age-nan", ["store", "gc", "--store", "{root}/store", "--min-age", "nan"], "--min-age"),
    ("simulate-n-0", ["simulate", "{root}/new-corpus", "--n", "0"], "--n"),
    ("simulate-rate-text", ["simulate", "{root}/new-corpus", "--rates", "abc"], "'abc'"),
    ("simulate-duration-negative", ["simulate", "{root}/new-corpus", "--min-duration", "-5"], "--min-duration"),
    # where things are written
    ("train-out-is-a-file", ["train", "--store", "{root}/store", "--out", "{root}/a-file", *TINY], "a-file is a file"),
    ("train-out-below-a-file", ["train", "--store", "{root}/store", "--out", "{root}/a-file/run", *TINY],
     "a-file is a file"),
    ("evaluate-out-is-a-file", ["evaluate", "--model", "{root}/run/best.pt", "--store", "{root}/store", "--out",
                                "{root}/a-file"], "a-file is a file"),
    ("diarize-out-is-a-file", ["diarize", "{root}/corpus/audio/rec00.wav", "--model", "{root}/run/best.pt", "--out",
                               "{root}/a-file"], "a-file is a file"),
    ("summary-json-is-a-directory", ["features", "{root}/corpus/audio", "--store", "{root}/store", "--summary-json",
                                     "{root}/run"], "is a directory"),
    ("plot-out-is-a-directory", ["plot", "{root}/run", "--out", "{root}/run"], "is a directory"),
    ("simulate-out-is-a-file", ["simulate", "{root}/a-file"], "a-file is a file"),
    ("train-over-a-finished-run", ["train", "--store", "{root}/store", "--out", "{root}/run", *TINY],
     "already holds a run"),
    ("resume-and-overwrite", ["train", "--store", "{root}/store", "--out", "{root}/run", "--resume", "--overwrite",
                              *TINY], "give one of them"),
    ("train-out-inside-the-store", ["train", "--store", "{root}/store", "--out", "{root}/store/features/run", *TINY],
     "inside the feature store"),
    ("diarize-out-inside-the-store", ["diarize", "{root}/corpus/audio/rec00.wav", "--model", "{root}/run/best.pt",
                                      "--out", "{root}/store/rttm"], "inside the feature store"),
    ("evaluate-replacing-the-training-view", ["evaluate", "--model", "{root}/run/best.pt", "--store", "{root}/store",
                                              "--audio-dir", "{root}/corpus/audio", "--rttm-dir", "{root}/corpus/rttm",
                                              "--view", "default"], "never replaces it"),
    ("rttm-dir-typo", ["features", "{root}/corpus/audio", "--store", "{root}/store", "--rttm-dir",
                       "{root}/corpus/rtm"], "rtm"),
    ("uem-dir-typo", ["features", "{root}/corpus/audio", "--store", "{root}/store", "--rttm-dir", "{root}/corpus/rttm",
                      "--uem-dir", "{root}/corpus/uem-typo"], "uem-typo"),
    # inference inputs (issue 29): what a path is, the chunks, tuned.json, evaluate's outputs, simulate's weights
    ("diarize-a-fifo", ["diarize", "{root}/pipe.wav", "--model", "{root}/run/best.pt", "--out", "{root}/new-out"],
     "pipe.wav is a pipe or FIFO"),
    ("diarize-a-directory", ["diarize", "{root}/corpus/audio", "--model", "{root}/run/best.pt", "--out",
                             "{root}/new-out"], "audio is a directory"),
    ("model-a-fifo", ["diarize", "{root}/corpus/audio/rec00.wav", "--model", "{root}/pipe.wav", "--out",
                      "{root}/new-out"], "pipe.wav is not a regular file"),
    ("chunk-hop-above-chunk", ["diarize", "{root}/corpus/audio/rec00.wav", "--model", "{root}/run/best.pt", "--out",
                               "{root}/new-out", "--chunk-s", "10", "--chunk-hop-s", "20"], "(--chunk-hop-s) = 20 s"),
    ("chunk-of-a-few-frames", ["diarize", "{root}/corpus/audio/rec00.wav", "--model", "{root}/run/best.pt", "--out",
                               "{root}/new-out", "--chunk-s", "0.01"], "(--chunk-s) = 0.01 s"),
    ("chunks-every-frame", ["evaluate", "--model", "{root}/run/best.pt", "--store", "{root}/store", "--out",
                            "{root}/new-out", "--chunk-s", "0.2", "--chunk-hop-s", "0.2"], "(--chunk-s) = 0.2 s"),
    ("chunk-s-when-stitching", ["diarize", "{root}/corpus/audio/rec00.wav", "--model", "{root}/run/best.pt", "--out",
                                "{root}/new-out", "--clustering", "off", "--chunk-s", "5"], "stitches"),
    *[(f"tuned-json-{name}", ["diarize", "{root}/corpus/audio/rec00.wav", "--model", f"{{root}}/tuned-{name}/best.pt",
                               "--out", "{root}/new-out"], f"tuned-{name}/tuned.json: {says}")
      for name, says in (("not-json", "not JSON"), ("list", "holds a JSON list"),
                         ("threshold-text", "field 'threshold'"), ("threshold-nan", "field 'threshold'"),
                         ("median-fraction", "field 'median_frames'"), ("median-huge", "field 'median_frames'"),
                         ("median-negative", "field 'median_frames'"),
                         ("cluster-threshold-nan", "field 'cluster_threshold'"),
                         ("fill-speech-text", "field 'fill_speech'"))],
    ("evaluate-default-out-is-a-file", ["evaluate", "--model", "{root}/eval-blocked/best.pt", "--store",
                                        "{root}/store"], "eval-blocked/eval is a file"),
    ("tune-json-is-a-directory", ["evaluate", "--model", "{root}/tune-blocked/best.pt", "--store", "{root}/store",
                                  "--tune"], "tuned.json is a directory"),
    ("simulate-weights-overflow", ["simulate", "{root}/new-corpus", "--speakers", "2:1e308,3:1e308"], "--speakers"),
    ("simulate-duplicate-count", ["simulate", "{root}/new-corpus", "--speakers", "2:1,2:0"], "already has a weight"),
    ("simulate-rate-1-hz", ["simulate", "{root}/new-corpus", "--rates", "1"], "sample rate 1 (--rates)"),
    ("simulate-endless-recording", ["simulate", "{root}/new-corpus", "--min-duration", "1e299", "--max-duration",
                                    "1e300"], "--max-duration"),
    # corpus descriptions (issue 32): each error stops the run by name before anything is written
    ("protocol-unknown", ["features", "--protocol", "Tones.SpeakerDiarization.Nope", "--database-yml",
                          "{root}/described/protocol/database.yml", "--store", "{root}/store"],
     "no pyannote.database protocol 'Tones.SpeakerDiarization.Nope'"),
    ("evaluate-protocol-unknown", ["evaluate", "--model", "{root}/run/best.pt", "--store", "{root}/store", "--protocol",
                                   "Tones.SpeakerDiarization.Nope", "--database-yml",
                                   "{root}/described/protocol/database.yml"], "no pyannote.database protocol"),
    ("protocol-splits-overlap", ["features", "--protocol", "Tones.SpeakerDiarization.Tiny", "--database-yml",
                                 "{root}/described/overlap/database.yml", "--store", "{root}/store"],
     "splits overlap: recording 'rec00' is declared in train"),
    ("supervision-negative-duration", ["features", "--store", "{root}/store", "--manifest",
                                       "{root}/described/negative/tones_recordings.jsonl", "--manifest",
                                       "{root}/described/negative/tones_supervisions.jsonl"],
     "tones_supervisions.jsonl:2: supervision duration -0.5 is negative"),
    ("kaldi-command-entry", ["features", "--store", "{root}/store", "--kaldi-dir", "{root}/described/kaldi-command"],
     "wav.scp:1: recording 'rec00' is a shell command"),
    # issue 29: a speaker name of two words is refused by file:line, not cut to its first word and merged
    ("rttm-speaker-name-of-two-words", ["features", "--store", "{root}/store", "--kaldi-dir",
                                        "{root}/described/kaldi-spaced-names"], "kaldi-spaced-names/rttm:2: 11 fields"),
    ("recording-id-twice", ["features", "--store", "{root}/store", "--manifest", "{root}/described/twice.json"],
     "recording id 'rec00' is declared twice"),
    ("manifest-missing", ["features", "--store", "{root}/store", "--manifest", "{root}/described/none.jsonl"],
     "none.jsonl does not exist"),
    ("audio-dir-and-manifest", ["features", "{root}/corpus/audio", "--store", "{root}/store", "--manifest",
                                "{root}/described/twice.json"], "give the recordings once"),
    ("export-missing-view", ["export", "--store", "{root}/store", "--view", "nope", "--format", "rttm", "--out",
                             "{root}/new-out"], "has no view 'nope'"),
    ("export-out-is-a-file", ["export", "--store", "{root}/store", "--format", "lhotse", "--out", "{root}/a-file"],
     "a-file is a file"),
]

#: tuned.json beside a copy of the good checkpoint, bound to it, with one field broken (name -> file text or fields).
BAD_TUNED = {"not-json": "{threshold: 0.5", "list": "[0.5, 11]", "threshold-text": {"threshold": "0.5"},
             "threshold-nan": {"threshold": float("nan")}, "median-fraction": {"median_frames": 3.5},
             "median-huge": {"median_frames": 100000001}, "median-negative": {"median_frames": -3},
             "cluster-threshold-nan": {"cluster_threshold": float("nan")}, "fill-speech-text": {"fill_speech": "no"}}


class _Payload:
    """Unpickling this creates the marker file: the shape of any code-execution payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _write_checkpoints(root: Path) -> None:
    """The hostile and broken checkpoints of the table, all derived from the world's good run."""
    good = torch.load(root / "run" / "best.pt", weights_only=True)
    torch.save({**good, "model": _Payload(root / "pwned")}, root / "crafted.pt")
    (root / "crafted-run").mkdir()
    shutil.copy(root / "crafted.pt", root / "crafted-run" / "last.pt")
    torch.save(good, root / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({k: v for k, v in good.items() if k != "model"}, root / "no-model.pt")
    torch.save({**good, "config": {**good["config"], "dim": "abc"}}, root / "bad-config.pt")
    torch.save({**good, "model": {k: v * float("nan") if v.is_floating_point() else v
                                  for k, v in good["model"].items()}}, root / "nan.pt")
    digest = hash_file(root / "run" / "best.pt")
    for name, broken in BAD_TUNED.items():
        (root / f"tuned-{name}").mkdir()
        shutil.copy(root / "run" / "best.pt", root / f"tuned-{name}" / "best.pt")
        fields = {"threshold": 0.5, "median_frames": 11, "fill_speech": True, "clustering": True,
                  "cluster_threshold": 0.6, "der": 0.2, "checkpoint": "best.pt", "checkpoint_xxh3": digest,
                  "data": {"view": "default", "split": "validation", "audio_dir": None, "recordings": 1,
                           "features": []}}
        text = broken if isinstance(broken, str) else json.dumps({**fields, **broken})
        (root / f"tuned-{name}" / "tuned.json").write_text(text)
    for blocked in ("eval-blocked", "tune-blocked"):
        (root / blocked).mkdir()
        shutil.copy(root / "run" / "best.pt", root / blocked / "best.pt")
    (root / "eval-blocked" / "eval").write_text("someone's notes\n")  # where evaluate's report would go
    (root / "tune-blocked" / "tuned.json").mkdir()  # where --tune would write
    os.mkfifo(root / "pipe.wav")  # opening it for reading waits for a writer forever


def _spaced_names(directory: Path, corpus: Path) -> None:
    """A Kaldi data dir of the corpus whose rttm names two speakers 'Alice Smith' and 'Alice Jones' (line 2 on)."""
    from agencerdas.pipeline.discover import discover

    recs = discover(corpus / "audio", corpus / "rttm").recordings
    write_kaldi(directory, recs)
    rec = recs[0].rec_id
    (directory / "rttm").write_text(f";; two speakers who share a first name\n"
                                    f"SPEAKER {rec} 1 0.0 1.0 <NA> <NA> Alice Smith <NA> <NA>\n"
                                    f"SPEAKER {rec} 1 2.0 1.0 <NA> <NA> Alice Jones <NA> <NA>\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory, toy) -> Path:
    """A corpus, its store, a finished run, hostile checkpoints and a plain file, under one directory."""
    root = tmp_path_factory.mktemp("hostile")
    audio, rttm = make_corpus(root / "corpus", n=3, seconds=6.0)
    hostile_descriptions(root / "described", root / "corpus")
    _spaced_names(root / "described" / "kaldi-spaced-names", root / "corpus")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENCERDAS_CACHE_DIR", str(tmp_path_factory.mktemp("hostile-cache")))
        assert build_features(FeaturesRequest(audio, str(root / "store"), rttm_dir=rttm, jobs=1, progress=False,
                                              validation_fraction=0.34)).ok
    from agencerdas.training.config import resolve
    from agencerdas.training.loop import train

    train(resolve("optimized", [*TINY, "EPOCHS=1"]), str(root / "store"), "default", root / "run", progress=False)
    _write_checkpoints(root)
    (root / "a-file").write_text("someone's notes\n")
    with zipfile.ZipFile(root / "not-torch.zip", "w") as archive:
        archive.writestr("notes.txt", "a zip, not a checkpoint")
    return root


@pytest.fixture(scope="module")
def zygote():
    server = Zygote(torch=True)
    yield server
    server.close()


def _disk(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time (ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


@pytest.mark.parametrize("argv, names", [pytest.param(argv, names, id=row) for row, argv, names in ROWS])
def test_a_hostile_input_is_refused_by_name_and_touches_nothing(world, zygote, tmp_path, argv, names):
    before = _disk(world)
    status, out, err = zygote.run([arg.format(root=world) for arg in argv], tmp_path / "logs", timeout=120)

    assert status == 2, (status, out, err)
    assert names in err, err
    assert_no_traceback(out, err)
    assert not (world / "pwned").exists(), "a checkpoint ran code"
    assert _disk(world) == before, "an error left the disk changed"
    report = Store(world / "store", create=False).verify()
    assert report.ok, report.problems
