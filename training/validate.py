"""Validation inside training: window loss and frame error, plus full-recording DER (pyannote.metrics)."""

from __future__ import annotations

import torch

from agencerdas.scoring.der import DERSettings, score
from agencerdas.scoring.pipeline import turns
from agencerdas.scoring.reference import load_reference
from agencerdas.scoring.tuning import TuningSet, der_scorer, tune

from .data import WindowPlan
from .loss import frame_error_counts
from .objective import diarization_loss
from .posteriors import pipeline_settings, predictor, recording_outputs
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


def _voices_heard(data) -> dict[str, bool]:
    """Whether each validation recording's voices all speak in the train split too (``seen``), by name:
    meaningful for a corpus that names its voices across recordings (e.g. the demo's)."""
    heard = {speaker for rec in data.train for speaker in rec.speakers}
    return {rec.source or rec.features: bool(rec.speakers) and set(rec.speakers) <= heard for rec in data.validation}


@torch.no_grad()
def der_metrics(trainer) -> tuple[dict, dict | None]:
    """DER of whole validation recordings through the pipeline as inference runs it by default (stitched, or
    clustered for a model with the embedding head), scored by pyannote.metrics, and the first scored recording
    as an example for a figure (reference, hypothesis, posteriors, frame shift, name).

    With clustering, the cluster threshold is tuned on these recordings at every DER epoch
    (:func:`scoring.tuning.tune` over :data:`~scoring.tuning.CLUSTER_THRESHOLDS` at the configured decision
    threshold and median): the DER that chooses best.pt is then that of the model as ``evaluate --tune``
    will run it, not at a threshold fitted to another epoch's embeddings. The chunks are run once; only
    the clustering is repeated. ``val_der_seen``/``val_der_unseen`` split it by whether the train split
    holds a recording's voices, where both kinds exist.
    """
    cfg, data, rt = trainer.cfg, trainer.data, trainer.rt
    predict = predictor(trainer.model, rt.device, rt.autocast())
    shift = cfg.downsample * data.shift_s
    fmt = WindowFormat(trainer.normalizer, cfg.downsample, cfg.pooling)
    settings = pipeline_settings(cfg, shift, clustering=cfg.embeds)  # as `evaluate` runs this model by default
    outputs, refs, uems, durations, sources = {}, {}, {}, {}, set()
    for rec in data.validation:
        frames = data.capped(rec)
        reference = load_reference(data.store, rec, frames)
        if not reference.uem:  # nothing of its UEM lies within the audio cap: nothing to score
            continue
        name = rec.source or rec.features
        outputs[name] = recording_outputs(predict, data.store.open("features", rec.features)["feats"], fmt, frames,
                                          settings)
        refs[name], uems[name], durations[name] = reference.segments, reference.uem, frames * data.shift_s
        sources.add(reference.source)
    if not refs:
        return {}, None
    der_settings = DERSettings(collar_s=cfg.collar_s)
    chosen, _ = tune(TuningSet(outputs, refs, uems, durations), settings, shift, der_scorer(der_settings),
                     thresholds=(settings.threshold,), medians=(settings.median_frames,))
    hyps, decided = {}, {}
    for name, out in outputs.items():
        hyps[name], decided[name] = turns(out, chosen, shift, durations[name])
    report = score(refs, hyps, uems, der_settings)
    record = {"val_der": report.overall["der"], "val_missed": report.overall["missed_rate"],
              "val_false_alarm": report.overall["false_alarm_rate"], "val_confusion": report.overall["confusion_rate"],
              "val_reference": "; ".join(sorted(sources))}
    if settings.clustering:
        record["val_cluster_threshold"] = chosen.cluster_threshold
    heard = _voices_heard(data)
    for kind, names in (("seen", [n for n in refs if heard[n]]), ("unseen", [n for n in refs if not heard[n]])):
        if 0 < len(names) < len(refs):
            record[f"val_der_{kind}"] = score({n: refs[n] for n in names}, {n: hyps[n] for n in names},
                                              {n: uems[n] for n in names}, der_settings).overall["der"]
    first = next(iter(refs))
    example = {"reference": refs[first], "hypothesis": hyps[first], "posteriors": decided[first].posteriors,
               "frame_shift_s": shift, "name": first}
    return record, example


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
