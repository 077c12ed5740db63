"""`agencerdas evaluate`: DER of a checkpoint on a view split or an audio directory with RTTMs.

Whole recordings are run through sliding-window inference (stitched, or clustered for a model with the
speaker-embedding head), turned into segments, written as RTTM and scored with pyannote.metrics. Recordings whose
labels are pseudo-labels are never scored.

Decisions come from :func:`scoring.pipeline.turns`, the one function from model outputs to turns. With
clustering (``--clustering``), each recording's chunks are run once and kept, so ``--tune`` can re-cluster
them for every candidate.

``--tune`` tunes the decision threshold, median width and cluster threshold jointly
(:func:`scoring.tuning.tune`, re-clustering at every candidate decision threshold) on the validation split of
the view the model was trained on, never on the recordings it scores (that DER would be optimistic) unless
``--tune-on-scored`` asks for it; the report says which data the thresholds were tuned on.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from agencerdas.pipeline import FeatureConfig, FeaturesRequest, LabelConfig, build_features
from agencerdas.pipeline.corpora import CorpusSource
from agencerdas.pipeline.discover import discover
from agencerdas.pipeline.rttm import unique_file_names
from agencerdas.stores import DatasetView, Store, ViewRecording, load_view
from agencerdas.stores.errors import AgencerdasError

from agencerdas.scoring.der import DERSettings
from agencerdas.scoring.reference import FROM_TURNS, load_reference
from agencerdas.scoring.settings import PipelineSettings
from agencerdas.scoring.tuning import TuningSet, der_scorer, tune
from agencerdas.training.posteriors import model_rate_reader, predictor
from agencerdas.training.runtime import setup

from .model import LoadedModel, load_model
from .plots import plot_attention, plot_timeline
from .report import score_set
from .voices import decoded


@dataclass
class EvalRequest:
    """What to evaluate and how; the CLI fills it from flags."""

    model: Path | None  # None: the pretrained pipeline (inference.baseline)
    store: str = "store"
    view: str | None = None  # default: "default" for a store, "test" for an audio directory
    split: str = "validation"
    audio_dir: Path | None = None
    rttm_dir: Path | None = None
    uem_dir: Path | None = None
    corpus: CorpusSource | None = None  # score a corpus description's recordings (its parts: the subset asked)
    out: Path | None = None  # default: <run>/eval
    collar_s: float = 0.25
    skip_overlap: bool = False
    tune: bool = False
    tune_on_scored: bool = False  # tune on the scored recordings themselves (an optimistic DER), not on validation
    attention: bool = False
    timelines: int = 3
    device: str = "auto"
    jobs: int = 1
    clustering: str = "auto"  # auto | on | off (see inference.model)
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    chunk_s: float | None = None  # clustering chunks (None: the run's)
    chunk_hop_s: float | None = None
    embeddings: str | None = None  # head | ge2e | a TorchScript encoder file; None: the run's EMBEDDINGS
    count: str | None = None  # threshold | eigengap; None: each pipeline's default
    vad: str = "none"  # none | silero


class _Timer:
    """Wall seconds spent inside a wrapped callable."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def _targets(req: EvalRequest, lm: LoadedModel, store: Store):
    """(view, recording ids to score, references by id or None to use stored labels)."""
    if req.audio_dir is None and req.corpus is None:
        view = load_view(store, req.view or "default")
        return view, view.split(req.split), None
    name = req.view or "test"
    summary = build_features(FeaturesRequest(
        audio_dir=Path(req.audio_dir) if req.audio_dir else None, corpus=req.corpus, store=store.url,
        rttm_dir=req.rttm_dir, uem_dir=req.uem_dir, jobs=req.jobs,
        view=name, validation_fraction=0.0, feature_config=FeatureConfig(**lm.feature_config), purpose="evaluate",
        label_config=LabelConfig(), storage_options=store.storage_options))
    if not summary.ok:
        print(summary.format())
    found = req.corpus.read() if req.corpus else discover(Path(req.audio_dir), req.rttm_dir, req.uem_dir)
    refs = {rec.rec_id: (rec.segments, rec.uem) for rec in found.recordings if rec.segments is not None}
    view = load_view(store, name)
    return view, view.split("all"), refs


def _check_features(view: DatasetView, lm: LoadedModel, model: Path) -> None:
    if view.feature_config != lm.feature_config:
        raise AgencerdasError(
            f"view {view.name!r} holds features {view.feature_config}, but {model} was trained on "
            f"{lm.feature_config}; rebuild features with the model's settings"
        )


def _has_reference(rec_id: str, rec: ViewRecording, given_refs: dict | None) -> bool:
    """Whether a recording can be scored: never against pseudo labels or no labels."""
    if rec.pseudo:
        return False
    return bool(rec.labels) if given_refs is None else rec_id in given_refs


def _infer(predict, lm: LoadedModel, store: Store, view: DatasetView, ids: list[str],
           given_refs: dict | None) -> tuple[TuningSet, dict]:
    """The model's outputs on ``ids`` of ``view`` with their references, as a :class:`~scoring.tuning.TuningSet`,
    and the source of each reference, by recording id.

    Outputs are (n_frames, S) stitched model-rate probabilities, or with clustering each recording's
    :class:`~scoring.pipeline.Chunks`; references and UEMs are in seconds, from ``given_refs`` (RTTM and
    UEM files) when given, else from the stored labels entries.
    """
    outputs, refs, uems, sources, speech = {}, {}, {}, {}, {}
    for rec_id in ids:
        rec = view.recordings[rec_id]
        feats = store.open("features", rec.features)["feats"]
        with decoded(rec.source, rec.offset_s, rec.duration_s, lm.voices.needs_audio) as audio:
            outputs[rec_id], speech[rec_id] = lm.recording(predict, feats, rec.frames, audio)
        if given_refs:
            (refs[rec_id], uem), sources[rec_id] = given_refs[rec_id], FROM_TURNS
        else:
            reference = load_reference(store, rec, rec.frames)
            refs[rec_id], uem, sources[rec_id] = reference.segments, reference.uem, reference.source
        uems[rec_id] = uem or [(0.0, rec.duration_s)]
    durations = {rec_id: view.recordings[rec_id].duration_s for rec_id in ids}
    return TuningSet(outputs, refs, uems, durations, speech if lm.voices.vad else None), sources


def _data(view: DatasetView, split: str, ids: list[str], audio_dir: Path | None) -> dict:
    """A set of recordings as tuned.json and the report name it; ``features`` (their content keys)
    tells whether two sets share recordings, whatever view or directory they came through."""
    return {"view": view.name, "split": split, "audio_dir": str(audio_dir) if audio_dir else None,
            "recordings": len(ids), "features": sorted(view.recordings[r].features for r in ids)}


def describe_data(data: dict) -> str:
    """E.g. "the validation split of view 'default' (12 recordings)"."""
    where = (f"audio dir {data['audio_dir']}" if data["audio_dir"]
             else f"the {data['split']} split of view {data['view']!r}")
    return f"{where} ({data['recordings']} recording{'' if data['recordings'] == 1 else 's'})"


def _tuning_set(req: EvalRequest, lm: LoadedModel, store: Store, scored: dict) -> tuple[DatasetView, list[str], dict]:
    """(view, recording ids, data) that ``--tune`` tunes on unless ``--tune-on-scored``: the validation
    split of the view the model was trained on, refused when it shares recordings with ``scored``."""
    view = load_view(store, lm.checkpoint.get("view", "default"))
    _check_features(view, lm, req.model)
    ids = [r for r in view.split("validation") if _has_reference(r, view.recordings[r], None)]
    data = _data(view, "validation", ids, None)
    shared = set(data["features"]) & set(scored["features"])
    if shared:
        raise AgencerdasError(
            f"--tune would tune on {describe_data(data)}, and {len(shared)} of the {scored['recordings']} recordings "
            "scored here are among them: thresholds tuned on the scored recordings give an optimistic DER. Tune on "
            "the validation split and score "
            f"the test set, which one run does: `agencerdas evaluate --model {req.model} --store {store.url} --tune "
            "--audio-dir TEST/audio --rttm-dir TEST/rttm`; or pass --tune-on-scored to tune on the scored recordings "
            "anyway (the report flags the DER as optimistic)")
    if not ids:
        raise AgencerdasError(
            f"the validation split of view {view.name!r} has no labelled recordings to tune on; rebuild its features "
            "with --validation-fraction above 0, or pass --tune-on-scored to tune on the scored recordings "
            "(the report flags the DER as optimistic)")
    return view, ids, data


def _tune(model: Path, lm: LoadedModel, data: dict, inputs: TuningSet, settings: DERSettings,
          on_scored: bool) -> dict:
    """Tune the pipeline's decision threshold, median width and cluster threshold jointly on one set (as
    :func:`_infer` returns it) and save them with every other setting of the pipeline and the DER they
    measured as tuned.json beside ``model``, bound to its xxh3 (see :mod:`inference.model`)."""
    chosen, der = tune(inputs, lm.inference, lm.frame_shift_s, der_scorer(settings))
    tuned = {**chosen.tuned_record(), "der": der, "checkpoint": Path(model).name,
             "checkpoint_xxh3": lm.checkpoint_xxh3, "tuned_on_scored": on_scored, "data": data}
    (Path(model).parent / "tuned.json").write_text(json.dumps(tuned, indent=1))
    return tuned


def _tuned_on(tuned: dict | None, scored: dict) -> dict | None:
    """Which data the thresholds in use were tuned on (None: the config's, untuned), and how many of
    the scored recordings were among them (any makes the DER optimistic)."""
    if tuned is None:
        return None
    tuned_keys = set(tuned["data"]["features"])
    shared = sum(key in tuned_keys for key in scored["features"])
    return {**{k: v for k, v in tuned["data"].items() if k != "features"},
            "scored_recordings_tuned_on": shared, "optimistic": shared > 0}


def _thresholds_line(inf: PipelineSettings, tuned_on: dict | None, n_scored: int) -> str:
    """The printed table's account of the post-processing used and where it came from."""
    used = inf.describe()
    if tuned_on is None:
        return f"{used}: the run's configured values (not tuned)"
    line = f"{used}: tuned on {describe_data(tuned_on)}"
    if tuned_on["optimistic"]:
        line += (f"\nOPTIMISTIC DER: the thresholds were tuned on {tuned_on['scored_recordings_tuned_on']} of the "
                 f"{n_scored} scored recordings; this is not a held-out score")
    return line


def evaluate(req: EvalRequest) -> dict:
    """Score ``req.model``; writes report.json, hypothesis RTTMs and plots; returns the report.

    With ``req.tune``, thresholds are first tuned (see :func:`_tuning_set`) and saved as tuned.json.
    """
    if req.tune_on_scored and not req.tune:
        raise AgencerdasError("--tune-on-scored says what --tune tunes on; add --tune, or leave --tune-on-scored out")
    rt = setup(req.device, "auto")
    lm = load_model(req.model, rt.device, clustering=req.clustering, num_speakers=req.num_speakers,
                    min_speakers=req.min_speakers, max_speakers=req.max_speakers, chunk_s=req.chunk_s,
                    chunk_hop_s=req.chunk_hop_s, embeddings=req.embeddings, count=req.count, vad=req.vad)
    store = Store(req.store, create=req.audio_dir is not None or req.corpus is not None)
    view, ids, given_refs = _targets(req, lm, store)
    _check_features(view, lm, req.model)
    scorable = {r: _has_reference(r, view.recordings[r], given_refs) for r in ids}
    skipped = [r for r, ok in scorable.items() if not ok]
    ids = [r for r, ok in scorable.items() if ok]
    if not ids:
        raise AgencerdasError(f"split {req.split!r} of view {view.name!r} has no recordings with reference labels to score")
    given = req.audio_dir or (req.corpus.describe() if req.corpus else None)
    scored = _data(view, "all" if given else req.split, ids, given)
    # Refused before any inference runs when it would tune on the scored recordings.
    tuning = _tuning_set(req, lm, store, scored) if req.tune and not req.tune_on_scored else None
    out = Path(req.out or Path(req.model).parent / "eval")
    cfg, inf = lm.config, lm.inference
    predict = _Timer(predictor(lm.model, rt.device, rt.autocast()))
    start = time.perf_counter()
    scored_set, sources = _infer(predict, lm, store, view, ids, given_refs)
    refs = scored_set.references
    audio_s = sum(view.recordings[r].duration_s for r in ids)
    inference_s = time.perf_counter() - start
    settings = DERSettings(collar_s=req.collar_s, skip_overlap=req.skip_overlap)
    tuned, tune_start = None, time.perf_counter()
    if req.tune:
        if tuning is None:  # --tune-on-scored
            data, inputs = scored, scored_set
        else:  # its own predictor: the timing reported is that of the scored recordings
            tune_view, tune_ids, data = tuning
            inputs = _infer(predictor(lm.model, rt.device, rt.autocast()), lm, store, tune_view, tune_ids, None)[0]
        tuned = _tune(req.model, lm, data, inputs, settings, on_scored=tuning is None)
        inf = lm.inference = inf.with_tuned(tuned)
    tune_s = time.perf_counter() - tune_start
    tuned_on = _tuned_on(tuned or lm.tuned, scored)
    post_start = time.perf_counter()  # clustering, decisions and turns, with the settings in use
    result = score_set(scored_set, inf, lm.frame_shift_s, settings, out / "rttm")
    post_s = time.perf_counter() - post_start
    hyps, posteriors, report = result.hypotheses, result.posteriors, result.der
    timing = {"audio_s": audio_s, "inference_s": inference_s, "model_s": predict.seconds,
              "read_and_stitch_s": inference_s - predict.seconds, "postprocess_s": post_s,
              "x_real_time": audio_s / max(inference_s + post_s, 1e-9), "tune_s": tune_s}
    payload = {
        "checkpoint": str(req.model), "checkpoint_xxh3": lm.checkpoint_xxh3, "config": cfg.to_dict(),
        "seed": cfg.seed, "feature_config": lm.feature_config, "store": store.url, "view": view.name,
        "view_fingerprint": view.fingerprint(), "split": scored["split"],
        "inference": asdict(inf), "tuned": tuned, "tuned_on": tuned_on,
        "optimistic": bool(tuned_on and tuned_on["optimistic"]), "der": report.to_dict(),
        "der_overlap": result.overlap, "speaker_count": result.counts, "speaker_count_unmet": result.unmet,
        "skipped_unscored": skipped,
        "reference": _reference_summary(sources),
        "pseudo_labels_scored": False,
        "pseudo_recordings_in_view": sorted(r for r, e in view.recordings.items() if e.pseudo),
        "pseudo_recordings_in_training": lm.checkpoint.get("pseudo_recordings", 0), "timing": timing, "device": str(rt.device), "versions": _versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(payload, indent=1))  # before the plots: the scores come first
    plotted = sorted(posteriors)[: req.timelines]
    for rec_id, png in zip(plotted, unique_file_names(plotted, ".png", prefix="timeline_")):
        plot_timeline(refs[rec_id], hyps[rec_id], posteriors[rec_id], lm.frame_shift_s, out / png, rec_id)
    if req.attention:
        _attention_plot(lm, store, view.recordings[sorted(posteriors)[0]], rt.device, out / "attention.png")
    payload["table"] = result.table(_thresholds_line(inf, tuned_on, len(ids)))
    return payload


def _reference_summary(sources: dict[str, str]) -> dict[str, list[str]]:
    """Which reference each scored recording was scored against: source -> recording ids."""
    summary: dict[str, list[str]] = {}
    for rec_id, source in sorted(sources.items()):
        summary.setdefault(source, []).append(rec_id)
    return summary


@torch.no_grad()
def _attention_plot(lm: LoadedModel, store: Store, rec, device: torch.device, png: Path) -> None:
    """Attention maps of the last block for the first window of a recording."""
    read, n_model = model_rate_reader(store.open("features", rec.features)["feats"], lm.window_format, rec.frames)
    x = torch.from_numpy(read(0, min(lm.config.window, n_model))).to(device)[None]
    attention = lm.model(x, return_attention=True).attention
    plot_attention(attention[-1][0].float().cpu().numpy(), png, f"{rec.source or rec.features}: last block")


def _versions() -> dict:
    import pyannote.metrics
    import zarr

    return {"torch": torch.__version__, "numpy": np.__version__, "zarr": zarr.__version__,
            "pyannote.metrics": pyannote.metrics.__version__, "python": platform.python_version()}
