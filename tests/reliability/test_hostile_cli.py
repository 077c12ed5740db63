"""Hostile and careless inputs through the real `agencerdas` CLI, one table row each.

Every row must exit 2 with a message that names the input, print no traceback, touch nothing on
disk (the store, the runs, the corpus and every other file stay byte for byte and mtime for mtime),
and leave `store verify` clean. A new option is covered by adding a row.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from agencerdas.pipeline.runner import FeaturesRequest, build_features
from agencerdas.stores import Store
from tests.builders import make_corpus
from tests.conftest import TINY
from tests.corpora import hostile_descriptions
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


@pytest.fixture(scope="module")
def world(tmp_path_factory, toy) -> Path:
    """A corpus, its store, a finished run, hostile checkpoints and a plain file, under one directory."""
    root = tmp_path_factory.mktemp("hostile")
    audio, rttm = make_corpus(root / "corpus", n=3, seconds=6.0)
    hostile_descriptions(root / "described", root / "corpus")
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
