"""The `agencerdas` command. Subcommands import their packages lazily, so `agencerdas features`
and `agencerdas store` never load torch."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from stores.errors import AgencerdasError


def _storage_options(args: argparse.Namespace) -> dict:
    from stores import parse_storage_options

    return parse_storage_options(args.storage_option, args.storage_options_file)


def _add_storage_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                        help="fsspec option for a store URL (JSON values allowed); never credentials")
    parser.add_argument("--storage-options-file", metavar="JSON", help="fsspec options for a store URL from a JSON file")


def _features(args: argparse.Namespace) -> int:
    from pipeline import FeatureConfig, FeaturesRequest, LabelConfig, build_features

    feature_config = FeatureConfig(n_mels=args.n_mels, dtype=args.dtype)
    labeler = None
    if args.pseudo_model and args.pseudo_labels:
        raise AgencerdasError("give --pseudo-labels (energy VAD + clustering) or --pseudo-model CHECKPOINT, not both")
    if args.pseudo_model:
        from .pseudo_model import ModelLabeler

        labeler = ModelLabeler(Path(args.pseudo_model), feature_config.to_dict())
    request = FeaturesRequest(
        audio_dir=Path(args.audio_dir),
        store=args.store,
        rttm_dir=Path(args.rttm_dir) if args.rttm_dir else None,
        uem_dir=Path(args.uem_dir) if args.uem_dir else None,
        jobs=args.jobs,
        pseudo_labels=args.pseudo_labels,
        pseudo_labeler=labeler,
        view=args.view,
        validation_fraction=args.validation_fraction,
        split_seed=args.split_seed,
        feature_config=feature_config,
        label_config=LabelConfig(max_speakers=args.max_speakers),
        storage_options=_storage_options(args),
        progress=not args.quiet,
        scheduler=args.scheduler,
    )
    summary = build_features(request)
    print(summary.format())
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps(dataclasses.asdict(summary), indent=1))
    return 0 if summary.ok else 1


def _store(args: argparse.Namespace) -> int:
    from stores import Store, referenced_keys

    store = Store(args.store, _storage_options(args), create=False)
    if args.action == "ls":
        for kind in ("features", "labels"):
            print(f"{kind}: {len(store.keys(kind))} entries")
        for name in store.view_names():
            print(f"view {name}")
        return 0
    if args.action == "verify":
        report = store.verify(checksums=not args.fast)
        print(f"verified {report.checked} committed entries in {store.url}: {len(report.problems)} problem(s)")
        for path, reason in report.problems:
            print(f"  {path}: {reason}")
        return 0 if report.ok else 1
    removed = store.gc(keep=None if args.keep_unreferenced else referenced_keys(store), dry_run=args.dry_run,
                       min_age_s=0.0 if args.all else 60.0 * args.min_age)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(removed)} path(s) from {store.url}")
    for path in removed:
        print(f"  {path}")
    return 0


def train_summary(cfg, out: Path, history: list[dict]) -> str:
    """The end-of-training report: what ran, how fast, how good, where the outputs are."""
    last = history[-1]
    seconds = sum(r["seconds"] for r in history)
    ders = [r["val_der"] for r in history if r.get("val_der") is not None]
    lines = [
        f"agencerdas train: preset {cfg.preset}, {len(history)} epoch(s) this run, {last['step']} optimizer steps "
        f"in all, {seconds:.0f} s of training ({sum(r['windows'] for r in history) / max(seconds, 1e-9):.0f} windows/s, "
        f"{last['precision']}, peak memory {last['peak_mem_mb']:.0f} MB)",
        f"  train recordings {last['train_recordings']} (pseudo-labelled {last['pseudo_recordings']}, pseudo={cfg.pseudo}); "
        f"final train loss {last['train_loss']:.4f}"
        + (f", validation loss {last['val_loss']:.4f}" if last.get("val_loss") is not None else ""),
    ]
    if ders:
        lines.append(f"  validation DER last {100 * ders[-1]:.1f}%, best {100 * min(ders):.1f}% (pyannote.metrics, "
                     f"collar {cfg.collar_s} s each side, overlap scored)")
    lines.append(f"  checkpoints {out}/last.pt, {out}/best.pt; metrics {out}/metrics.jsonl")
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    from .config import resolve
    from .loop import train

    cfg = resolve(args.preset, args.overrides)
    out = Path(args.out or f"runs/{args.preset}")
    history = train(cfg, args.store, args.view, out, resume=args.resume,
                    storage_options=_storage_options(args), progress=not args.quiet)
    if history and int(os.environ.get("RANK", 0)) == 0:
        print(train_summary(cfg, out, history))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import EvalRequest, evaluate

    report = evaluate(EvalRequest(
        model=Path(args.model), store=args.store, view=args.view, split=args.split,
        audio_dir=Path(args.audio_dir) if args.audio_dir else None,
        rttm_dir=Path(args.rttm_dir) if args.rttm_dir else None, uem_dir=Path(args.uem_dir) if args.uem_dir else None,
        out=Path(args.out) if args.out else None, collar_s=args.collar, skip_overlap=args.skip_overlap,
        tune=args.tune, attention=args.attention, device=args.device, jobs=args.jobs))
    print(report["table"])
    t = report["timing"]
    print(f"inference: {t['audio_s'] / 60:.1f} min of audio, {t['x_real_time']:.0f}x real time "
          f"(model {t['model_s']:.1f} s, read+stitch {t['read_and_stitch_s']:.1f} s, post {t['postprocess_s']:.1f} s)")
    if report["tuned"]:
        print(f"tuned: threshold {report['tuned']['threshold']}, median {report['tuned']['median_frames']} frames")
    print(f"report, RTTMs and plots in {Path(report['checkpoint']).parent / 'eval' if not args.out else args.out}")
    return 0


def _diarize(args: argparse.Namespace) -> int:
    from .diarize import diarize

    summary = diarize([Path(p) for p in args.audio], Path(args.model), Path(args.out), args.store, args.device)
    print(summary.format())
    return 0 if not summary.failures else 1


def _plot(args: argparse.Namespace) -> int:
    from .plots import plot_losses

    out = Path(args.out or Path(args.runs[0]) / "plots" / "loss.png")
    print(f"wrote {plot_losses([Path(r) for r in args.runs], out)}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from pipeline.simulate import SimulationConfig, simulate_corpus

    config = SimulationConfig(
        n_recordings=args.n, pool=args.pool, seed=args.seed, min_duration_s=args.min_duration,
        max_duration_s=args.max_duration, formats=tuple(args.formats.split(",")),
        rates=tuple(int(r) for r in args.rates.split(",")), stereo=args.stereo, noise_snr_db=args.noise_snr,
        reverb=args.reverb, jobs=args.jobs)
    corpus = simulate_corpus(Path(args.out), config, progress=not args.quiet)
    print(f"agencerdas simulate: {corpus['n_recordings']} recordings, {corpus['duration_s'] / 3600:.2f} h, "
          f"overlap {100 * corpus['overlap_s'] / max(corpus['speech_s'], 1e-9):.1f}% of speech, in {args.out}")
    return 0


def _demo_summary(args: argparse.Namespace) -> int:
    from .demo import demo_summary

    print(demo_summary(Path(args.data), Path(args.store), Path(args.run),
                       [float(s) for s in args.stage_seconds.split(",")] if args.stage_seconds else None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agencerdas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    feats = sub.add_parser("features", help="build or update the feature store from an audio directory")
    feats.add_argument("audio_dir")
    feats.add_argument("--store", required=True, help="store directory or fsspec URL")
    feats.add_argument("--rttm-dir", help="where RTTM files are (default: AUDIO_DIR)")
    feats.add_argument("--uem-dir", help="where UEM files are (default: AUDIO_DIR)")
    feats.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    feats.add_argument("--scheduler", metavar="tcp://HOST:PORT|local",
                       help="run the tasks on this Dask cluster ('local': a LocalCluster of --jobs workers here)")
    feats.add_argument("--view", default="default", help="name of the dataset view to write")
    feats.add_argument("--validation-fraction", type=float, default=0.1)
    feats.add_argument("--split-seed", type=int, default=0)
    feats.add_argument("--n-mels", type=int, default=80)
    feats.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    feats.add_argument("--max-speakers", type=int, default=4)
    _add_storage_flags(feats)
    feats.add_argument("--quiet", action="store_true", help="no progress bar")
    feats.add_argument("--pseudo-labels", action="store_true",
                       help="label recordings without RTTM by energy VAD + clustering (flagged pseudo)")
    feats.add_argument("--pseudo-model", metavar="CHECKPOINT",
                       help="label recordings without RTTM with this trained model instead (flagged pseudo)")
    feats.add_argument("--summary-json", help="also write the run summary as JSON here")
    feats.set_defaults(func=_features)

    store = sub.add_parser("store", help="inspect and maintain a store")
    store.add_argument("action", choices=("ls", "verify", "gc"))
    store.add_argument("--store", required=True)
    _add_storage_flags(store)
    store.add_argument("--fast", action="store_true", help="verify: skip re-reading arrays for checksums")
    store.add_argument("--dry-run", action="store_true", help="gc: list what would be removed")
    store.add_argument("--keep-unreferenced", action="store_true", help="gc: remove only leftovers of crashes")
    store.add_argument("--min-age", type=float, default=60.0, metavar="MINUTES",
                       help="gc: remove temporary files (_tmp/ orphans, view temp files) and unreferenced entries only "
                            "when unchanged this long, since younger ones may belong to a features run still in "
                            "progress in another process (default 60)")
    store.add_argument("--all", action="store_true",
                       help="gc: remove them whatever their age (only when no other process writes the store)")
    store.set_defaults(func=_store)

    tr = sub.add_parser("train", help="train SA-EEND on windows streamed from a store")
    tr.add_argument("--store", required=True)
    tr.add_argument("--view", default="default")
    tr.add_argument("--preset", default="optimized")
    tr.add_argument("--out", help="run directory (default runs/PRESET)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    _add_storage_flags(tr)
    tr.add_argument("--quiet", action="store_true")
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. EPOCHS=3 lr=5e-4")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="DER of a checkpoint (pyannote.metrics), RTTMs, plots")
    ev.add_argument("--model", required=True, help="runs/NAME/best.pt or last.pt")
    ev.add_argument("--store", default="store")
    ev.add_argument("--view", help="view to score (default: 'default'; 'test' with --audio-dir)")
    ev.add_argument("--split", default="validation", choices=("validation", "train", "all"))
    ev.add_argument("--audio-dir", help="score these recordings (features go through the store)")
    ev.add_argument("--rttm-dir")
    ev.add_argument("--uem-dir")
    ev.add_argument("--out", help="default: the run's eval/ directory")
    ev.add_argument("--collar", type=float, default=0.25, help="seconds on EACH side of a boundary (default 0.25)")
    ev.add_argument("--skip-overlap", action="store_true", help="do not score overlapped speech")
    ev.add_argument("--tune", action="store_true", help="search threshold and median width; save for diarize")
    ev.add_argument("--attention", action="store_true", help="save an attention map of one window")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--jobs", type=int, default=1)
    ev.set_defaults(func=_evaluate)

    di = sub.add_parser("diarize", help="write one RTTM per audio file")
    di.add_argument("audio", nargs="+")
    di.add_argument("--model", required=True)
    di.add_argument("--out", required=True)
    di.add_argument("--store", help="feature store to reuse (default: a temporary one)")
    di.add_argument("--device", default="auto")
    di.set_defaults(func=_diarize)

    si = sub.add_parser("simulate", help="generate a simulated conversation corpus (eSpeak NG voices)")
    si.add_argument("out")
    si.add_argument("--n", type=int, default=10, help="number of recordings")
    si.add_argument("--pool", default="train", choices=("train", "test"), help="speaker pool (disjoint)")
    si.add_argument("--seed", type=int, default=0)
    si.add_argument("--min-duration", type=float, default=60.0, help="seconds")
    si.add_argument("--max-duration", type=float, default=240.0, help="seconds")
    si.add_argument("--formats", default="wav", help="comma-separated: wav,flac,ogg,mp3")
    si.add_argument("--rates", default="16000", help="comma-separated sample rates in Hz")
    si.add_argument("--stereo", action="store_true")
    si.add_argument("--noise-snr", type=float, help="background noise at this SNR in dB")
    si.add_argument("--reverb", action="store_true", help="synthetic room response")
    si.add_argument("--jobs", type=int, default=1)
    si.add_argument("--quiet", action="store_true")
    si.set_defaults(func=_simulate)

    ds = sub.add_parser("demo-summary", help=argparse.SUPPRESS)
    ds.add_argument("--data", required=True)
    ds.add_argument("--store", required=True)
    ds.add_argument("--run", required=True)
    ds.add_argument("--stage-seconds")
    ds.set_defaults(func=_demo_summary)

    from .bench.command import add_arguments, run_command

    be = sub.add_parser("bench", help="speed and memory ratios against baselines run in the same invocation")
    add_arguments(be)
    be.set_defaults(func=run_command)

    pl = sub.add_parser("plot", help="loss curves of one or several runs on one figure")
    pl.add_argument("runs", nargs="+")
    pl.add_argument("--out", help="default: RUN/plots/loss.png of the first run")
    pl.set_defaults(func=_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
