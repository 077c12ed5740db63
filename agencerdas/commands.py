"""What each `agencerdas` subcommand does: one function per subcommand, taking the parsed arguments
and returning the exit status. Each imports its packages when it runs, so `features` and `store`
never load torch and `train --help` never loads librosa."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
from pathlib import Path

from agencerdas.stores.errors import AgencerdasError

from agencerdas.stores.outputs import output_dir, output_file
from agencerdas.training.rundir import check_run_dir


def _storage_options(args: argparse.Namespace) -> dict:
    from agencerdas.stores import parse_storage_options

    return parse_storage_options(args.storage_option, args.storage_options_file)


def features_command(args: argparse.Namespace) -> int:
    from agencerdas.pipeline import FeatureConfig, FeaturesRequest, LabelConfig, build_features

    if args.summary_json:
        output_file(Path(args.summary_json), "--summary-json")
    feature_config = FeatureConfig(n_mels=args.n_mels, dtype=args.dtype)
    labeler = None
    if args.pseudo_model and args.pseudo_labels:
        raise AgencerdasError("give --pseudo-labels (energy VAD + clustering) or --pseudo-model CHECKPOINT, not both")
    if args.pseudo_model == "pretrained":  # no trained model: Silero VAD, GE2E, clustering on the audio
        from agencerdas.inference.pseudo_model import PretrainedLabeler

        labeler = PretrainedLabeler(feature_config.to_dict())
    elif args.pseudo_model:
        from agencerdas.inference.pseudo_model import ModelLabeler

        labeler = ModelLabeler(Path(args.pseudo_model), feature_config.to_dict())
    from agencerdas.pipeline.corpora import CorpusSource

    request = FeaturesRequest(
        audio_dir=Path(args.audio_dir) if args.audio_dir else None,
        corpus=CorpusSource.from_flags(args),
        store=args.store,
        rttm_dir=Path(args.rttm_dir) if args.rttm_dir else None,
        uem_dir=Path(args.uem_dir) if args.uem_dir else None,
        jobs=args.jobs,
        pseudo_labels=args.pseudo_labels,
        pseudo_labeler=labeler,
        view=args.view,
        validation_fraction=args.validation_fraction,
        split_seed=args.split_seed,
        split_by=args.split_by,
        feature_config=feature_config,
        label_config=LabelConfig(),
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


def store_command(args: argparse.Namespace) -> int:
    from agencerdas.stores import Store, referenced_keys

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


#: How best.pt was chosen, by the run's one criterion (training.resume.best_criterion).
_BEST_IS = {"val_der": "the epoch with the lowest validation DER",
            "val_loss": "the epoch with the lowest validation loss (DER_EVERY=0)",
            "last": "the last epoch (the view has no validation split)"}


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
    if cfg.powerset:
        dropped = sum(r.get("overlap_frames_dropped", 0) for r in history)
        lines.append(f"  loss powerset (classes of at most {cfg.max_overlap} speakers): {dropped} window frames with "
                     "more speakers left out of the loss this run (see corpus-stats.txt)")
    if last.get("data_path"):
        lines.append(f"  train data {last['data_path']}")
    val_s = sum(r.get("val_seconds", 0.0) for r in history)
    if val_s:
        lines.append(f"  validation {val_s:.0f} s, {100 * val_s / (val_s + seconds):.0f}% of epoch time")
    criterion = last.get("best_criterion", "val_der" if ders else "val_loss")
    if ders:  # the run's best, which after a resume may lie in an epoch before this process's history
        best = last["best"] if criterion == "val_der" and last.get("best") is not None else min(ders)
        lines.append(f"  validation DER last {100 * ders[-1]:.1f}%, best of the run {100 * best:.1f}% (pyannote.metrics, "
                     f"collar {cfg.collar_s} s each side, overlap scored, against "
                     f"{next(r['val_reference'] for r in reversed(history) if r.get('val_reference'))})")
    held = f": epoch {last['best_epoch']}" if last.get("best_epoch") else ""
    lines.append(f"  best.pt: {_BEST_IS[criterion]}{held}")
    source = json.loads((out / "config.json").read_text()).get("initialised_from")
    if source:
        lines.append(f"  fine-tuned from {source['path']} (xxh3 {source['xxh3'][:12]}, {source['loss']} model"
                     f"{', output layer re-initialised' if source['head_reinitialised'] else ''})")
    lines.append(f"  checkpoints {out}/last.pt, {out}/best.pt; metrics {out}/metrics.jsonl; "
                 f"TensorBoard `tensorboard --logdir {shlex.quote(str(out))}`")
    lines += [f"  warning: {warning}" for r in history for warning in r.get("warnings", [])]
    return "\n".join(lines)


def train_command(args: argparse.Namespace) -> int:
    from agencerdas.training.config import resolve
    from agencerdas.training.loop import train

    cfg = resolve(args.preset, [*args.overrides, *([f"INIT_FROM={args.init_from}"] if args.init_from else [])])
    out = Path(args.out or f"runs/{args.preset}")
    if int(os.environ.get("RANK", 0)) == 0:  # the writer; under torchrun a failed rank 0 stops every rank
        check_run_dir(out, args.resume, args.overwrite)
    history = train(cfg, args.store, args.view, out, resume=args.resume, storage_options=_storage_options(args),
                    progress=not args.quiet, allow_view_change=args.resume_on_changed_view)
    if history and int(os.environ.get("RANK", 0)) == 0:
        print(train_summary(cfg, out, history))
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from agencerdas.inference.evaluate import EvalRequest, evaluate
    from agencerdas.pipeline.corpora import PARTS, CorpusSource

    if bool(args.model) == bool(args.pretrained):
        raise AgencerdasError("evaluate needs --model RUN/best.pt (a trained model), or --pretrained (the pipeline "
                              "with no trained model) with --out: one of them")
    if args.pretrained:
        return _evaluate_pretrained(args)
    # Checked before any inference: the report lands in --out (default RUN/eval), and --tune writes tuned.json.
    output_dir(Path(args.out) if args.out else Path(args.model).parent / "eval", "--out" if args.out else
               "the report's directory (no --out given: RUN/eval beside --model)")
    if args.tune:
        output_file(Path(args.model).parent / "tuned.json", "--tune's tuned.json (beside --model)")
    corpus = CorpusSource.from_flags(args, parts=(PARTS[args.subset],))
    if corpus is not None and args.audio_dir:
        raise AgencerdasError("give the recordings to score once: --audio-dir or a corpus description, not both")
    report = evaluate(EvalRequest(
        model=Path(args.model), store=args.store, view=args.view, split=args.split,
        audio_dir=Path(args.audio_dir) if args.audio_dir else None, corpus=corpus,
        rttm_dir=Path(args.rttm_dir) if args.rttm_dir else None, uem_dir=Path(args.uem_dir) if args.uem_dir else None,
        out=Path(args.out) if args.out else None, collar_s=args.collar, skip_overlap=args.skip_overlap,
        tune=args.tune, tune_on_scored=args.tune_on_scored, attention=args.attention, device=args.device,
        jobs=args.jobs, **speakers(args)))
    print(report["table"])
    for source, recordings in report["reference"].items():
        print(f"reference: {source} ({len(recordings)} recording(s))")
    t = report["timing"]
    print(f"inference: {t['audio_s'] / 60:.1f} min of audio, {t['x_real_time']:.0f}x real time "
          f"(model {t['model_s']:.1f} s, read+stitch/cluster {t['read_and_stitch_s']:.1f} s, "
          f"post {t['postprocess_s']:.1f} s)")
    if report["tuned"]:  # the table above says the values and what they were tuned on
        print(f"tuned: saved in {Path(args.model).parent / 'tuned.json'} for this checkpoint ({Path(args.model).name})")
    print(f"report, RTTMs and plots in {Path(report['checkpoint']).parent / 'eval' if not args.out else args.out}")
    return 0


def _evaluate_pretrained(args: argparse.Namespace) -> int:
    """``evaluate --pretrained``: the no-model pipeline's DER, the baseline a trained model must beat."""
    from agencerdas.inference.baseline import evaluate_pretrained
    from agencerdas.inference.evaluate import EvalRequest
    from agencerdas.pipeline.corpora import PARTS, CorpusSource

    if not args.out:
        raise AgencerdasError("--pretrained has no run directory to write into: give --out DIR")
    output_dir(Path(args.out), "--out")
    choices = {k: v for k, v in speakers(args).items() if k not in ("clustering", "chunk_s", "chunk_hop_s", "vad")}
    report = evaluate_pretrained(EvalRequest(
        model=None, store=args.store, view=args.view, split=args.split,
        audio_dir=Path(args.audio_dir) if args.audio_dir else None,
        corpus=CorpusSource.from_flags(args, parts=(PARTS[args.subset],)),
        rttm_dir=Path(args.rttm_dir) if args.rttm_dir else None, uem_dir=Path(args.uem_dir) if args.uem_dir else None,
        out=Path(args.out), collar_s=args.collar, skip_overlap=args.skip_overlap, tune=args.tune,
        tune_on_scored=args.tune_on_scored, device=args.device, **choices))
    t = report["timing"]
    print(report["table"])
    print(f"inference: {t['audio_s'] / 60:.1f} min of audio, {t['x_real_time']:.0f}x real time; report and RTTMs "
          f"in {args.out}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    from agencerdas.pipeline.corpora.export import export_view
    from agencerdas.stores import Store

    out = output_dir(Path(args.out), "--out")
    counts = export_view(Store(args.store, _storage_options(args), create=False), args.view, args.format, out)
    print(f"agencerdas export: view {args.view!r} as {args.format} in {out}: "
          + ", ".join(f"{part} {n} recordings" for part, n in counts.items()))
    return 0


def speakers(args: argparse.Namespace) -> dict:
    """How evaluate and diarize find speakers: ``--clustering``, the numbers of speakers given, the chunks, the
    embeddings, the count rule and the VAD."""
    return {"clustering": args.clustering, "num_speakers": args.num_speakers, "min_speakers": args.min_speakers,
            "max_speakers": args.max_speakers, "chunk_s": args.chunk_s, "chunk_hop_s": args.chunk_hop_s,
            "embeddings": args.embeddings, "count": args.count, "vad": args.vad}


def diarize_command(args: argparse.Namespace) -> int:
    from agencerdas.inference.diarize import diarize

    if bool(args.model) == bool(args.pretrained):
        raise AgencerdasError("diarize needs --model RUN/best.pt (a trained model), or --pretrained (the pipeline "
                              "with no trained model): one of them")
    output_dir(Path(args.out), "--out")
    summary = diarize([Path(p) for p in args.audio], Path(args.model) if args.model else None, Path(args.out),
                      args.store, args.device, **speakers(args))
    print(summary.format())
    return 0 if not summary.failures else 1


def plot_command(args: argparse.Namespace) -> int:
    from agencerdas.inference.plots import plot_losses

    out = output_file(Path(args.out or Path(args.runs[0]) / "plots" / "loss.png"), "--out")
    print(f"wrote {plot_losses([Path(r) for r in args.runs], out)}")
    return 0


def simulate_command(args: argparse.Namespace) -> int:
    from agencerdas.pipeline.simulate import SimulationConfig, simulate_corpus

    output_dir(Path(args.out), "OUT")
    config = SimulationConfig(
        n_recordings=args.n, pool=args.pool, seed=args.seed, min_duration_s=args.min_duration,
        max_duration_s=args.max_duration, formats=tuple(args.formats.split(",")),
        # digits become rates; anything else stays text for the config to name in its error
        rates=tuple(int(r) if r.strip().isdigit() else r for r in args.rates.split(",")),
        stereo=args.stereo, noise_snr_db=args.noise_snr, reverb=args.reverb, jobs=args.jobs,
        heldout_voices=args.heldout_voices, **({"speakers_per_rec": args.speakers} if args.speakers else {}))
    corpus = simulate_corpus(Path(args.out), config, progress=not args.quiet)
    print(f"agencerdas simulate: {corpus['n_recordings']} recordings, {corpus['duration_s'] / 3600:.2f} h, "
          f"overlap {100 * corpus['overlap_s'] / max(corpus['speech_s'], 1e-9):.1f}% of speech, in {args.out}")
    return 0


def demo_summary_command(args: argparse.Namespace) -> int:
    from .demo import demo_summary

    print(demo_summary(Path(args.data), Path(args.store), Path(args.run),
                       [float(s) for s in args.stage_seconds.split(",")] if args.stage_seconds else None))
    return 0
