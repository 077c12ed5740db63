"""Validation inside training: window loss and frame error, plus full-recording DER (pyannote.metrics)."""

from __future__ import annotations

import torch

from agencerdas.scoring.binarize import activity_to_segments
from agencerdas.scoring.der import DERSettings, score
from agencerdas.scoring.reference import load_reference

from .data import WindowPlan
from .loss import frame_error_counts
from .objective import diarization_loss
from .posteriors import inference_settings, predictor, whole_recording
from .windows import WindowFormat


@torch.no_grad()
def window_metrics(trainer) -> dict:
    """Mean PIT loss and frame-level error over validation windows (a fixed tiling, no shuffling), summed
    on the device and read once."""
    cfg, rt, source = trainer.cfg, trainer.rt, trainer.val_windows  # built once per run
    plan = WindowPlan(source.host_lengths, cfg.window_base_frames, cfg.batch, cfg.seed, cfg.shuffle_group, shuffle=False)
    sums = torch.zeros(5, device=rt.device)  # loss, miss, false alarm, confusion, speech
    batches = 0
    for windows in plan:
        batch = source.batch(windows)
        with rt.autocast():
            logits = trainer.model(batch["feats"], batch["valid"] if batch["padded"] else None).logits
        result = diarization_loss(trainer.model, logits, batch["labels"], batch["mask"])
        sums[0] += result.loss
        sums[1:] += frame_error_counts(trainer.model.decisions(logits, cfg.threshold), result.permuted_labels,
                                       batch["mask"])
        batches += 1
    loss, miss, false_alarm, confusion, speech = sums.tolist()
    return {"val_loss": loss / batches, "val_frame_error": (miss + false_alarm + confusion) / max(1, speech)}


@torch.no_grad()
def der_metrics(trainer) -> tuple[dict, dict | None]:
    """DER of whole validation recordings (stitched, or clustered for a model with the embedding head), scored by pyannote.metrics, and the first
    scored recording as an example for a figure (reference, hypothesis, posteriors, frame shift, name)."""
    cfg, data, rt = trainer.cfg, trainer.data, trainer.rt
    predict = predictor(trainer.model, rt.device, rt.autocast())
    shift = cfg.downsample * data.shift_s
    fmt = WindowFormat(trainer.normalizer, cfg.downsample, cfg.pooling)
    inf = inference_settings(cfg, shift, clustering=cfg.embeds)  # as `evaluate` runs this model by default
    refs, hyps, uems, sources, example = {}, {}, {}, set(), None
    for rec in data.validation:
        frames = data.capped(rec)
        reference = load_reference(data.store, rec, frames)
        if not reference.uem:  # nothing of its UEM lies within the audio cap: nothing to score
            continue
        feats = data.store.open("features", rec.features)["feats"]
        post = whole_recording(predict, feats, fmt, frames, inf, shift)
        name = rec.source or rec.features
        decided = inf.decide(post)
        hyps[name] = activity_to_segments(decided, shift,
                                          max_end_s=frames * shift / cfg.downsample)
        refs[name], uems[name] = reference.segments, reference.uem
        sources.add(reference.source)
        example = example or {"reference": refs[name], "hypothesis": hyps[name], "posteriors": post,
                               "frame_shift_s": shift, "name": name}
    if not refs:
        return {}, None
    report = score(refs, hyps, uems, DERSettings(collar_s=cfg.collar_s))
    return {"val_der": report.overall["der"], "val_missed": report.overall["missed_rate"],
            "val_false_alarm": report.overall["false_alarm_rate"], "val_confusion": report.overall["confusion_rate"],
            "val_reference": "; ".join(sorted(sources))}, example


def validate(trainer, with_der: bool) -> tuple[dict, dict | None]:
    """Validation record for metrics.jsonl (empty when the view has no validation recordings), and with
    DER an example recording for a figure (see :func:`der_metrics`)."""
    if not trainer.data.validation:
        return {}, None
    trainer.model.eval()
    record, example = window_metrics(trainer), None
    if with_der:
        scores, example = der_metrics(trainer)
        record.update(scores)
    trainer.model.train()
    return record, example
