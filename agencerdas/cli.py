"""The `agencerdas` command line: one table of arguments per subcommand, dispatched to
:mod:`agencerdas.commands`. Subcommands import their packages lazily, so `agencerdas features`
and `agencerdas store` never load torch."""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Callable

from agencerdas.stores.errors import AgencerdasError

from . import commands

#: One argument: the names given to ``add_argument`` and its keyword arguments.
Arg = tuple[tuple[str, ...], dict[str, Any]]


def _a(*names: str, **kwargs: Any) -> Arg:
    return names, kwargs


STORAGE: list[Arg] = [
    _a("--storage-option", action="append", metavar="KEY=VALUE",
       help="fsspec option for a store URL (JSON values allowed); never credentials"),
    _a("--storage-options-file", metavar="JSON", help="fsspec options for a store URL from a JSON file"),
]


def _number(kind: type, low: float | None = None, high: float | None = None, *, above: bool = False,
            below: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` (int or float) >= ``low`` (> with ``above``) and <= ``high``
    (< with ``below``); anything else is a usage error that says the allowed range."""
    noun = "an integer" if kind is int else "a number"
    bounds = " and ".join(part for part in (
        f"{'>' if above else '>='} {low}" if low is not None else "",
        f"{'<' if below else '<='} {high}" if high is not None else "") if part)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        outside = ((low is not None and (value <= low if above else value < low))
                   or (high is not None and (value >= high if below else value > high)))
        if not math.isfinite(value) or outside:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {noun}{' ' + bounds if bounds else ' (finite)'}")
        return value

    parse.__name__ = kind.__name__
    return parse


COUNT = _number(int, 1)  # processes, recordings, speakers, mel bands


def _speaker_mix(text: str) -> dict[int, float]:
    """``2:0.5,3:0.3,4:0.2`` -> {2: 0.5, 3: 0.3, 4: 0.2}: speakers per recording and their weights."""
    mix: dict[int, float] = {}
    for item in text.split(","):
        count, sep, weight = item.partition(":")
        try:
            if int(count) in mix:
                raise argparse.ArgumentTypeError(f"{item!r}: {int(count)} speakers already has a weight; give each "
                                                 "speaker count once")
            mix[int(count)] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not SPEAKERS:WEIGHT (e.g. 2:0.5,3:0.3,4:0.2)") from None
        if not sep or mix[int(count)] < 0 or not math.isfinite(mix[int(count)]) or int(count) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: need a speaker count >= 1 and a finite weight >= 0")
    return mix
SEED = _number(int, 0, 2**32 - 1)


def _all_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: A corpus as practitioners describe it, instead of an audio directory (agencerdas.pipeline.corpora).
CORPUS: list[Arg] = [
    _a("--protocol", metavar="NAME", help="a pyannote.database protocol (Database.SpeakerDiarization.Protocol)"),
    _a("--database-yml", metavar="FILE",
       help="pyannote.database config for --protocol (default: PYANNOTE_DATABASE_CONFIG, ./database.yml)"),
    _a("--manifest", action="append", metavar="[SPLIT=]FILE",
       help="Lhotse RecordingSet + SupervisionSet or CutSet, or a NeMo manifest (jsonl, jsonl.gz); repeatable; "
            "SPLIT (train, dev, test) declares the file's split"),
    _a("--manifest-format", default="auto", choices=("auto", "lhotse", "nemo"),
       help="what --manifest files are (default: told by their first line)"),
    _a("--kaldi-dir", action="append", metavar="[SPLIT=]DIR",
       help="Kaldi data dir (wav.scp of plain paths, rttm or segments + utt2spk, reco2num_spk); repeatable"),
]

FEATURES: list[Arg] = [
    _a("audio_dir", nargs="?", help="audio directory (RTTM/UEM matched by name), or give a corpus description"),
    *CORPUS,
    _a("--store", required=True, help="store directory or fsspec URL"),
    _a("--rttm-dir", help="where RTTM files are (default: AUDIO_DIR)"),
    _a("--uem-dir", help="where UEM files are (default: AUDIO_DIR)"),
    _a("--jobs", type=COUNT, default=None, help="worker processes (default: every core this process may use)"),
    _a("--scheduler", metavar="tcp://HOST:PORT|local",
       help="run the tasks on this Dask cluster ('local': a LocalCluster of --jobs workers here)"),
    _a("--view", default="default", help="name of the dataset view to write"),
    _a("--validation-fraction", type=_number(float, 0.0, 1.0, below=True), default=0.1,
       help="share of the labelled recordings held out for validation, in [0, 1) (default 0.1)"),
    _a("--split-seed", type=SEED, default=0),
    _a("--split-by", default="recordings", choices=("recordings", "voices"),
       help="voices: validation gets whole groups of recordings whose speakers the train split never has (speaker "
            "names global across recordings; falls back to recordings, and says so, when no group fits); "
            "default recordings"),
    _a("--n-mels", type=COUNT, default=80, help="mel bands (the FFT size bounds it: no band may be empty)"),
    _a("--dtype", default="float16", choices=("float16", "float32")),
    *STORAGE,
    _a("--quiet", action="store_true", help="no progress bar"),
    _a("--pseudo-labels", action="store_true",
       help="label recordings without RTTM by energy VAD + clustering (flagged pseudo)"),
    _a("--pseudo-model", metavar="CHECKPOINT|pretrained",
       help="label recordings without RTTM with this trained model instead, or with the pipeline that needs no "
            "trained model (pretrained: Silero VAD, GE2E, clustering on the audio); flagged pseudo"),
    _a("--summary-json", help="also write the run summary as JSON here"),
]

STORE: list[Arg] = [
    _a("action", choices=("ls", "verify", "gc")),
    _a("--store", required=True),
    *STORAGE,
    _a("--fast", action="store_true", help="verify: skip re-reading arrays for checksums"),
    _a("--dry-run", action="store_true", help="gc: list what would be removed"),
    _a("--keep-unreferenced", action="store_true", help="gc: remove only leftovers of crashes"),
    _a("--min-age", type=_number(float, 0.0), default=60.0, metavar="MINUTES",
       help="gc: remove temporary files (_tmp/ orphans, view temp files) and unreferenced entries only when "
            "unchanged this long, since younger ones may belong to a features run still in progress in another "
            "process (default 60)"),
    _a("--all", action="store_true",
       help="gc: remove them whatever their age (only when no other process writes the store)"),
]

TRAIN: list[Arg] = [
    _a("--store", required=True),
    _a("--view", default="default"),
    _a("--preset", default="optimized"),
    _a("--out", help="run directory (default runs/PRESET)"),
    _a("--resume", action="store_true", help="continue from OUT/last.pt"),
    _a("--overwrite", action="store_true", help="replace the run already in OUT (refused without it)"),
    _a("--init-from", metavar="CHECKPOINT",
       help="fine-tune: start from this checkpoint's weights with a fresh optimizer and schedule (INIT_FROM=...)"),
    _a("--resume-on-changed-view", action="store_true",
       help="with --resume: continue even though the view's entries changed since the checkpoint"),
    *STORAGE,
    _a("--quiet", action="store_true"),
    _a("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. EPOCHS=3 lr=5e-4"),
]

#: How a recording's speakers are found: the options of evaluate and diarize (pyannote's pipeline takes the same).
SPEAKERS: list[Arg] = [
    _a("--clustering", default="auto", choices=("auto", "on", "off"),
       help="on: cluster the speakers of every chunk across the recording by their embeddings (any number of "
            "speakers; a model trained with the embedding head); off: stitch chunks (at most the model's slots); "
            "auto (default): on when the model has the head"),
    _a("--num-speakers", type=COUNT, help="the number of speakers, when known (clustering)"),
    _a("--min-speakers", type=COUNT, help="at least this many speakers (clustering)"),
    _a("--max-speakers", type=COUNT, help="at most this many speakers (clustering)"),
    _a("--chunk-s", type=_number(float, 0.0, above=True), metavar="SECONDS",
       help="clustering: chunk length (default: the run's CHUNK_S)"),
    _a("--chunk-hop-s", type=_number(float, 0.0, above=True), metavar="SECONDS",
       help="clustering: hop between chunk starts (default: the run's CHUNK_HOP_S)"),
    _a("--embeddings", metavar="head|ge2e|PATH",
       help="where the chunks' speaker embeddings come from: the model's head, ge2e (resemblyzer's pretrained "
            "speaker encoder on the audio where each speaker speaks alone), or a TorchScript encoder file "
            "(docs/pretrained.md); default: the run's EMBEDDINGS (ge2e; head for runs trained before it)"),
    _a("--count", choices=("threshold", "eigengap"),
       help="how clustering finds the number of speakers: the cosine threshold (default) or the eigengap (NME-SC)"),
    _a("--vad", default="none", choices=("none", "silero"),
       help="silero: speech only where Silero VAD also hears it (for audio unlike the training corpus)"),
]

EVALUATE: list[Arg] = [
    _a("--model", help="runs/NAME/best.pt or last.pt"),
    _a("--pretrained", action="store_true",
       help="instead of --model: the pipeline with no trained model (Silero VAD, GE2E on 1.5-s windows, "
            "clustering); needs --out"),
    _a("--store", default="store"),
    _a("--view", help="view to score (default: 'default'; 'test' with --audio-dir)"),
    _a("--split", default="validation", choices=("validation", "train", "all")),
    _a("--audio-dir", help="score these recordings (features go through the store)"),
    *CORPUS,
    _a("--subset", default="test", choices=("train", "development", "dev", "test"),
       help="with a corpus description that declares splits: the subset to score (default test)"),
    _a("--rttm-dir"),
    _a("--uem-dir"),
    _a("--out", help="default: the run's eval/ directory"),
    _a("--collar", type=_number(float, 0.0), default=0.25, help="seconds on EACH side of a boundary (default 0.25)"),
    _a("--skip-overlap", action="store_true", help="do not score overlapped speech"),
    _a("--tune", action="store_true",
       help="search threshold and median width (and the clustering threshold) on the validation split of the "
            "model's training view, then score; saved in tuned.json for this checkpoint (diarize, later evaluate runs)"),
    _a("--tune-on-scored", action="store_true",
       help="with --tune: tune on the scored recordings themselves (the report flags the DER as optimistic)"),
    _a("--attention", action="store_true", help="save an attention map of one window"),
    *SPEAKERS,
    _a("--device", default="auto"),
    _a("--jobs", type=COUNT, default=1),
]

DIARIZE: list[Arg] = [
    _a("audio", nargs="+"),
    _a("--model", help="runs/NAME/best.pt or last.pt"),
    _a("--pretrained", action="store_true",
       help="instead of --model: the pipeline with no trained model (Silero VAD, GE2E on 1.5-s windows, clustering)"),
    _a("--out", required=True),
    _a("--store", help="feature store to reuse (default: a temporary one)"),
    *SPEAKERS,
    _a("--device", default="auto"),
]

SIMULATE: list[Arg] = [
    _a("out"),
    _a("--n", type=COUNT, default=10, help="number of recordings"),
    _a("--pool", default="train", choices=("train", "test"), help="speaker pool (disjoint)"),
    _a("--speakers", type=_speaker_mix, metavar="N:W,...",
       help="speakers per recording and their weights (default 2:0.5,3:0.3,4:0.2; the test pool has 12 voices)"),
    _a("--seed", type=SEED, default=0),
    _a("--heldout-voices", type=_number(int, 0), default=0, metavar="K",
       help="the pool's last K voices speak only in their own recordings (a share K / pool size of them), so a "
            "validation split can hold voices training never hears (features --split-by voices); default 0"),
    _a("--min-duration", type=_number(float, 0.0, above=True), default=60.0, help="seconds"),
    _a("--max-duration", type=_number(float, 0.0, above=True), default=240.0, help="seconds"),
    _a("--formats", default="wav", help="comma-separated: wav,flac,ogg,mp3"),
    _a("--rates", default="16000", help="comma-separated sample rates in Hz"),
    _a("--stereo", action="store_true"),
    _a("--noise-snr", type=_number(float), help="background noise at this SNR in dB"),
    _a("--reverb", action="store_true", help="synthetic room response"),
    _a("--jobs", type=COUNT, default=1),
    _a("--quiet", action="store_true"),
]

PLOT: list[Arg] = [
    _a("runs", nargs="+"),
    _a("--out", help="default: RUN/plots/loss.png of the first run"),
]

EXPORT: list[Arg] = [
    _a("--store", required=True),
    _a("--view", default="default"),
    _a("--format", required=True, choices=("lhotse", "rttm")),
    _a("--out", required=True, help="directory for the files (one set per split of the view)"),
    *STORAGE,
]

DEMO_SUMMARY: list[Arg] = [
    _a("--data", required=True),
    _a("--store", required=True),
    _a("--run", required=True),
    _a("--stage-seconds"),
]

#: name -> (help, arguments, handler); help None hides the subcommand from the listing.
COMMANDS: dict[str, tuple[str | None, list[Arg], Callable[[argparse.Namespace], int]]] = {
    "features": ("build or update the feature store from an audio directory or a corpus description", FEATURES,
                 commands.features_command),
    "store": ("inspect and maintain a store", STORE, commands.store_command),
    "train": ("train SA-EEND on windows streamed from a store", TRAIN, commands.train_command),
    "evaluate": ("DER of a checkpoint (pyannote.metrics), RTTMs, plots", EVALUATE, commands.evaluate_command),
    "diarize": ("write one RTTM per audio file", DIARIZE, commands.diarize_command),
    "simulate": ("generate a simulated conversation corpus (eSpeak NG voices)", SIMULATE, commands.simulate_command),
    "demo-summary": (None, DEMO_SUMMARY, commands.demo_summary_command),
    "plot": ("loss curves of one or several runs on one figure", PLOT, commands.plot_command),
    "export": ("write a view's recordings and supervisions as Lhotse manifests or RTTM", EXPORT,
               commands.export_command),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agencerdas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, arguments, handler) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text if help_text else argparse.SUPPRESS)
        for names, kwargs in arguments:
            command.add_argument(*names, **kwargs)
        command.set_defaults(func=handler)
    from agencerdas.bench.command import add_arguments, run_command  # the bench declares its own flags

    bench = sub.add_parser("bench", help="speed and memory ratios against baselines run in the same invocation")
    add_arguments(bench)
    bench.set_defaults(func=run_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # argparse fills a positional list once: train's KEY=VALUE overrides given after an option come back here
    if rest and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in rest):
        args.overrides += rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if getattr(args, "jobs", 0) is None:
        args.jobs = _all_cores()
    try:
        return args.func(args)
    except AgencerdasError as exc:
        print(f"agencerdas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("agencerdas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
