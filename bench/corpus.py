"""The benchmark's inputs: run sizes, the corpus (generated once and cached, or given),
a disposable working copy of it, and the edits that the rerun measurements apply.

Generated corpora live under ``<work_dir>/corpora/`` and are reused while their
parameters are unchanged; every run works on a fresh copy (audio hard-linked when
possible, annotations copied) so renaming files and editing an RTTM never touch
the cached or user-given originals.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from agencerdas.pipeline.audio import AUDIO_EXTENSIONS, probe
from agencerdas.stores.errors import AgencerdasError

ANNOTATION_SUFFIXES = (".rttm", ".uem")
#: Appended to every audio file's name (and recording id) by :func:`rename_all`.
RENAMED_SUFFIX = "-renamed"
_MARKER = "bench-corpus.json"


@dataclass(frozen=True)
class SizeSpec:
    """How big one benchmark run is.

    The corpus has ``recordings`` of ``min_duration_s``..``max_duration_s`` seconds
    (``generator`` ``simulate``: the eSpeak demo corpus; ``tones``: the test suite's
    tone builder). ``window`` replaces every preset's window (model frames) when the
    recordings are too short for the presets' own. Budgets are seconds of steady-state
    timing per measurement; ``memory_minutes`` are the short and long synthetic
    recordings of the feature-stage memory probe, ``voices_minutes`` those of the pretrained-voices
    pipelines' (:mod:`.voices`); ``matrix_frames`` caps the base
    frames written per codec setting, each read for ``matrix_budget_s``. With
    ``isolate_training`` off (tiny only, to stay within a test's time) the training
    steps run in the bench's own process, so their RSS includes the bench's.
    """

    name: str
    recordings: int
    min_duration_s: float
    max_duration_s: float
    generator: str
    formats: tuple[str, ...] = ("wav", "flac", "ogg", "mp3")
    rates: tuple[int, ...] = (16000, 22050, 44100)
    window: int | None = None
    read_budget_s: float = 2.0
    step_budget_s: float = 3.0
    notebook_items: int = 4
    memory_minutes: tuple[float, float] = (1.0, 60.0)
    matrix_frames: int = 100_000
    matrix_budget_s: float = 0.3
    gpu_steps: int = 20
    isolate_training: bool = True
    voices_minutes: tuple[float, float] = (10.0, 120.0)


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec("tiny", 4, 20.0, 20.0, "tones", ("wav", "flac", "ogg"), (16000, 22050, 8000), window=40,
                     read_budget_s=0.2, step_budget_s=0.3, notebook_items=1, memory_minutes=(0.25, 2.0),
                     matrix_frames=4000, matrix_budget_s=0.03, gpu_steps=3, isolate_training=False,
                     voices_minutes=(0.5, 2.0)),
    "small": SizeSpec("small", 6, 100.0, 130.0, "simulate"),
    "full": SizeSpec("full", 100, 60.0, 240.0, "simulate", read_budget_s=4.0, step_budget_s=6.0, notebook_items=6,
                     matrix_frames=300_000, matrix_budget_s=0.6),
}


@dataclass
class Corpus:
    """Audio and annotation directories of one corpus, with what it holds."""

    audio_dir: Path
    rttm_dir: Path | None
    source: str
    recordings: int = 0
    audio_s: float = 0.0
    formats: dict[str, int] = field(default_factory=dict)
    rates_hz: dict[str, int] = field(default_factory=dict)

    def audio_files(self) -> list[Path]:
        """Every audio file of the corpus, sorted."""
        return sorted(p for p in self.audio_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)

    def annotation_dir(self) -> Path:
        return self.rttm_dir or self.audio_dir

    def describe(self) -> "Corpus":
        """Fill in the counts from the files' headers; returns self."""
        files = self.audio_files()
        infos = [probe(p) for p in files]
        self.recordings = len(files)
        self.audio_s = float(sum(info.duration_s for info in infos))
        self.formats = dict(sorted(Counter(p.suffix.lower().lstrip(".") for p in files).items()))
        self.rates_hz = {str(k): v for k, v in sorted(Counter(info.sample_rate for info in infos).items())}
        return self

    def to_dict(self) -> dict:
        return {"audio_dir": str(self.audio_dir), "rttm_dir": str(self.rttm_dir) if self.rttm_dir else None,
                "source": self.source, "recordings": self.recordings, "audio_s": self.audio_s,
                "formats": self.formats, "rates_hz": self.rates_hz}


def _cached(root: Path, params: dict) -> bool:
    """Whether ``root`` holds a complete corpus generated with ``params``."""
    try:
        return json.loads((root / _MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


def generated_corpus(spec: SizeSpec, corpora_dir: Path, jobs: int, progress: bool) -> Corpus:
    """The corpus of ``spec``, generated under ``corpora_dir/<size>`` unless already there."""
    root = Path(corpora_dir) / spec.name
    params = {"size": spec.name, "generator": spec.generator, "recordings": spec.recordings,
              "min_duration_s": spec.min_duration_s, "max_duration_s": spec.max_duration_s,
              "formats": list(spec.formats), "rates": list(spec.rates), "seed": 1}
    if not _cached(root, params):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        if spec.generator == "simulate":
            from agencerdas.pipeline.simulate import SimulationConfig, simulate_corpus

            config = SimulationConfig(n_recordings=spec.recordings, pool="train", seed=1, formats=spec.formats,
                                      rates=spec.rates, min_duration_s=spec.min_duration_s,
                                      max_duration_s=spec.max_duration_s, jobs=jobs)
            simulate_corpus(root, config, progress=progress)
        else:
            _tone_corpus(root, spec)
        (root / _MARKER).write_text(json.dumps(params))
    source = "demo corpus (eSpeak simulation)" if spec.generator == "simulate" else "synthetic tones (pipeline/simulate/tones.py)"
    return Corpus(root / "audio", root / "rttm", source)


def _tone_corpus(root: Path, spec: SizeSpec) -> None:
    from agencerdas.pipeline.simulate.tones import make_corpus

    make_corpus(root, n=spec.recordings, seconds=spec.max_duration_s, formats=spec.formats, rates=spec.rates)


def working_copy(corpus: Corpus, dest: Path) -> Corpus:
    """A private copy of ``corpus`` under ``dest``: audio hard-linked (copied across
    filesystems), annotations copied so that editing them never reaches the original."""
    dest = Path(dest)
    audio = dest / "audio"
    for path in corpus.audio_files():
        target = audio / path.relative_to(corpus.audio_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    rttm = dest / "rttm"
    for path in sorted(corpus.annotation_dir().rglob("*")):
        if path.suffix.lower() in ANNOTATION_SUFFIXES:
            target = rttm / path.relative_to(corpus.annotation_dir())
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return Corpus(audio, rttm, corpus.source, corpus.recordings, corpus.audio_s, corpus.formats, corpus.rates_hz)


def _rewrite_ids(path: Path, mapping: dict[str, str]) -> None:
    """Replace recording ids in an RTTM (second field) or UEM (first field) file, keeping all else verbatim."""
    column = 1 if path.suffix.lower() == ".rttm" else 0
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) > column and fields[column] in mapping and not fields[0].startswith(";;"):
            fields[column] = mapping[fields[column]]
            line = " ".join(fields)
        lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def rename_all(corpus: Corpus) -> int:
    """Rename every audio file (``<id>`` → ``<id>-renamed``) and rename its id in the annotations.

    Content is unchanged, so the store's entries stay valid; only the stat cache
    misses. Returns the number of files renamed.
    """
    mapping = {}
    for path in corpus.audio_files():
        new_id = path.stem + RENAMED_SUFFIX
        path.rename(path.with_name(new_id + path.suffix))
        mapping[path.stem] = new_id
    for path in sorted(corpus.annotation_dir().rglob("*")):
        if path.suffix.lower() in ANNOTATION_SUFFIXES:
            _rewrite_ids(path, mapping)
    return len(mapping)


def edit_one_rttm(corpus: Corpus, extend_s: float = 0.1) -> str:
    """Lengthen the first turn of the first RTTM file by ``extend_s`` seconds; returns the recording id edited."""
    for path in sorted(corpus.annotation_dir().rglob("*.rttm")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            fields = line.split()
            if len(fields) >= 8 and fields[0] == "SPEAKER":
                fields[4] = f"{float(fields[4]) + extend_s:.3f}"
                lines[number] = " ".join(fields)
                path.write_text("\n".join(lines) + "\n", encoding="utf-8")
                return fields[1]
    raise AgencerdasError(f"no RTTM turn to edit under {corpus.annotation_dir()}")


def noise_and_tones(path: Path, minutes: float, sample_rate: int = 16000, block_s: float = 60.0, seed: int = 0) -> Path:
    """Write a mono 16-bit WAV of ``minutes`` of noise plus drifting tones, one ``block_s`` block at a time.

    Cheap to make at any length and never held in memory whole; reused when it exists.
    """
    path = Path(path)
    frames = int(round(minutes * 60 * sample_rate))
    if path.exists() and sf.info(str(path)).frames == frames:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp.wav")
    with sf.SoundFile(str(tmp), "w", sample_rate, 1, subtype="PCM_16", format="WAV") as sink:
        for offset in range(0, frames, int(block_s * sample_rate)):
            t = np.arange(offset, min(frames, offset + int(block_s * sample_rate))) / sample_rate
            tones = sum(np.sin(2 * np.pi * f0 * (1 + 0.05 * np.sin(0.1 * t + k)) * t) for k, f0 in enumerate((150, 420, 1100)))
            sink.write((0.1 * tones + 0.02 * rng.standard_normal(len(t))).astype(np.float32))
    tmp.replace(path)
    return path
