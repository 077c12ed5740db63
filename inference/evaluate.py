"""`agencerdas evaluate`: DER of a checkpoint on a view split or an audio directory with RTTMs.

Whole recordings are run through stitched sliding-window inference, turned into
segments, written as RTTM and scored with pyannote.metrics. Recordings whose
labels are pseudo-labels are never scored.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import FeatureConfig, FeaturesRequest, LabelConfig, build_features
from pipeline.discover import discover
from pipeline.rttm import unique_file_names, write_rttm
from stores import Store, hash_file, load_view
from stores.errors import AgencerdasError

from scoring.binarize import activity_to_segments, binarize, tune
from scoring.der import DERSettings, score
from scoring.reference import reference_segments
from training.posteriors import model_rate_reader, predictor, recording_posteriors
from training.runtime import setup

from .model import LoadedModel, load_model
from .plots import plot_attention, plot_timeline

TUNE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
TUNE_MEDIANS = (1, 5, 11, 21)


@dataclass
class EvalRequest:
    """What to evaluate and how; the CLI fills it from flags."""

    model: Path
    store: str = "store"
    view: str | None = None  # default: "default" for a store, "test" for an audio directory
    split: str = "validation"
    audio_dir: Path | None = None
    rttm_dir: Path | None = None
    uem_dir: Path | None = None
    out: Path | None = None  # default: <run>/eval
    collar_s: float = 0.25
    skip_overlap: bool = False
    tune: bool = False
    attention: bool = False
    timelines: int = 3
    device: str = "auto"
    jobs: int = 1


class _Timer:
    """Wall seconds spent inside a wrapped callable."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args):
        start = time.perf_counter()
        try:
            return self.fn(*args)
        finally:
            self.seconds += time.perf_counter() - start


def _targets(req: EvalRequest, lm: LoadedModel, store: Store):
    """(view, recording ids to score, references by id or None to use stored labels)."""
    if req.audio_dir is None:
        view = load_view(store, req.view or "default")
        return view, view.split(req.split), None
    name = req.view or "test"
    summary = build_features(FeaturesRequest(
        audio_dir=Path(req.audio_dir), store=store.url, rttm_dir=req.rttm_dir, uem_dir=req.uem_dir, jobs=req.jobs,
        view=name, validation_fraction=0.0, feature_config=FeatureConfig(**lm.feature_config),
        label_config=LabelConfig(max_speakers=lm.config.max_speakers), storage_options=store.storage_options))
    if not summary.ok:
        print(summary.format())
    found = discover(Path(req.audio_dir), req.rttm_dir, req.uem_dir)
    refs = {rec.rec_id: (rec.segments, rec.uem) for rec in found.recordings if rec.segments is not None}
    view = load_view(store, name)
    return view, view.split("all"), refs


def evaluate(req: EvalRequest) -> dict:
    """Score ``req.model``; writes report.json, hypothesis RTTMs and plots; returns the report."""
    rt = setup(req.device, "auto")
    lm = load_model(req.model, rt.device)
    store = Store(req.store, create=req.audio_dir is not None)
    view, ids, given_refs = _targets(req, lm, store)
    if view.feature_config != lm.feature_config:
        raise AgencerdasError(
            f"view {view.name!r} holds features {view.feature_config}, but {req.model} was trained on "
            f"{lm.feature_config}; rebuild features with the model's settings"
        )
    out = Path(req.out or Path(req.model).parent / "eval")
    cfg, inf = lm.config, lm.inference
    predict = _Timer(predictor(lm.model, rt.device, rt.autocast()))
    refs, hyps, uems, posteriors, skipped = {}, {}, {}, {}, []
    audio_s, start = 0.0, time.perf_counter()
    for rec_id in ids:
        rec = view.recordings[rec_id]
        if rec.pseudo or (given_refs is None and not rec.labels) or (given_refs is not None and rec_id not in given_refs):
            skipped.append(rec_id)  # never score against pseudo labels or no labels
            continue
        feats = store.open("features", rec.features)["feats"]
        posteriors[rec_id] = recording_posteriors(predict, feats, lm.window_format, rec.frames, inf.window, inf.overlap)
        refs[rec_id], uem = given_refs[rec_id] if given_refs else reference_segments(store, rec, rec.frames)
        uems[rec_id] = uem or [(0.0, rec.duration_s)]
        audio_s += rec.duration_s
    if not posteriors:
        raise AgencerdasError(f"split {req.split!r} of view {view.name!r} has no recordings with reference labels to score")
    inference_s = time.perf_counter() - start
    settings = DERSettings(collar_s=req.collar_s, skip_overlap=req.skip_overlap)
    tuned = None
    if req.tune:
        threshold, median, der = tune(posteriors, refs, uems, lm.frame_shift_s, TUNE_THRESHOLDS, TUNE_MEDIANS,
                                      lambda r, h, u: score(r, h, u, settings).overall["der"], inf.fill_speech)
        tuned = {"threshold": threshold, "median_frames": median, "fill_speech": inf.fill_speech, "der": der,
                 "view": view.name, "split": req.split}
        (Path(req.model).parent / "tuned.json").write_text(json.dumps(tuned, indent=1))
        inf.threshold, inf.median_frames = threshold, median
    post_start = time.perf_counter()
    files = dict(zip(posteriors, unique_file_names(list(posteriors), "")))
    for rec_id, post in posteriors.items():
        active = binarize(post, inf.threshold, inf.median_frames, inf.fill_speech)
        hyps[rec_id] = activity_to_segments(active, lm.frame_shift_s, max_end_s=view.recordings[rec_id].duration_s)
        write_rttm(out / "rttm" / f"{files[rec_id]}.rttm", rec_id, hyps[rec_id])
    post_s = time.perf_counter() - post_start
    report = score(refs, hyps, uems, settings)
    for rec_id in sorted(posteriors)[: req.timelines]:
        plot_timeline(refs[rec_id], hyps[rec_id], posteriors[rec_id], lm.frame_shift_s,
                      out / f"timeline_{files[rec_id]}.png", rec_id)
    if req.attention:
        _attention_plot(lm, store, view.recordings[sorted(posteriors)[0]], rt.device, out / "attention.png")
    timing = {"audio_s": audio_s, "inference_s": inference_s, "model_s": predict.seconds,
              "read_and_stitch_s": inference_s - predict.seconds, "postprocess_s": post_s,
              "x_real_time": audio_s / max(inference_s + post_s, 1e-9)}
    payload = {
        "checkpoint": str(req.model), "checkpoint_xxh3": hash_file(Path(req.model)), "config": cfg.to_dict(),
        "seed": cfg.seed, "feature_config": lm.feature_config, "store": store.url, "view": view.name,
        "view_fingerprint": view.fingerprint(), "split": "all" if req.audio_dir else req.split,
        "inference": asdict(inf), "tuned": tuned, "der": report.to_dict(), "skipped_unscored": skipped,
        "pseudo_labels_scored": False,
        "pseudo_recordings_in_view": sorted(r for r, e in view.recordings.items() if e.pseudo),
        "pseudo_recordings_in_training": lm.checkpoint.get("pseudo_recordings", 0), "timing": timing, "device": str(rt.device), "versions": _versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(payload, indent=1))
    payload["table"] = report.table()
    return payload


@torch.no_grad()
def _attention_plot(lm: LoadedModel, store: Store, rec, device: torch.device, png: Path) -> None:
    """Attention maps of the last block for the first window of a recording."""
    read, n_model = model_rate_reader(store.open("features", rec.features)["feats"], lm.window_format, rec.frames)
    x = torch.from_numpy(read(0, min(lm.config.window, n_model))).to(device)[None]
    _, attention = lm.model(x, return_attention=True)
    plot_attention(attention[-1][0].float().cpu().numpy(), png, f"{rec.source or rec.features}: last block")


def _versions() -> dict:
    import pyannote.metrics
    import zarr

    return {"torch": torch.__version__, "numpy": np.__version__, "zarr": zarr.__version__,
            "pyannote.metrics": pyannote.metrics.__version__, "python": platform.python_version()}
