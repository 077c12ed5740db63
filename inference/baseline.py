"""``agencerdas evaluate --pretrained``: DER of the pipeline that needs no trained model
(:mod:`.pretrained`), the baseline a trained model must beat, on the same recordings and with the same
report as ``evaluate --model``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from agencerdas.pipeline.discover import discover
from agencerdas.pipeline.rttm import unique_file_names
from agencerdas.scoring.der import DERSettings
from agencerdas.scoring.reference import FROM_TURNS, load_reference
from agencerdas.scoring.tuning import TuningSet, der_scorer, tune
from agencerdas.stores import Store, load_view
from agencerdas.stores.errors import AgencerdasError

from .plots import plot_timeline
from .pretrained import FRAME_S, PretrainedDiarizer
from .report import score_set
from .voices import RATE, decoded


def _recordings(req) -> list[tuple[str, str, float | None, float | None, list, list | None]]:
    """(id, audio path, offset_s, duration_s, reference turns, UEM) of every labelled recording to score: an
    audio directory or corpus description, or a split of a store's view (its recordings' audio files)."""
    if req.audio_dir is not None or req.corpus is not None:
        found = req.corpus.read() if req.corpus else discover(Path(req.audio_dir), req.rttm_dir, req.uem_dir)
        return [(r.rec_id, str(r.path), r.offset_s, r.duration_s, r.segments, r.uem) for r in found.recordings
                if r.segments is not None]
    store = Store(req.store, create=False)
    view = load_view(store, req.view or "default")
    rows = []
    for rec_id in view.split(req.split):
        rec = view.recordings[rec_id]
        if rec.labels and not rec.pseudo:
            reference = load_reference(store, rec, rec.frames)
            rows.append((rec_id, rec.source, rec.offset_s, rec.duration_s, reference.segments, reference.uem))
    return rows


def evaluate_pretrained(req) -> dict:
    """Score the no-model pipeline on ``req``'s recordings (an :class:`~inference.evaluate.EvalRequest` with
    ``out`` set); writes report.json, RTTMs and timelines into ``req.out`` and returns the report."""
    if req.tune and not req.tune_on_scored:
        raise AgencerdasError("--tune tunes a trained model's pipeline on its training view, and the pretrained "
                              "pipeline has none: its settings are fixed (chosen on a validation split, "
                              "docs/results.md); --tune --tune-on-scored tunes them on the scored recordings")
    rows = _recordings(req)
    if not rows:
        raise AgencerdasError("no recording with reference turns to score; give --audio-dir with --rttm-dir, a "
                              "corpus description, or a store view with labels")
    choices = {"num_speakers": req.num_speakers, "min_speakers": req.min_speakers, "max_speakers": req.max_speakers,
               **({"count": req.count} if req.count else {}),
               **({"embeddings": req.embeddings} if req.embeddings not in (None, "head") else {})}
    pipe = PretrainedDiarizer.load(req.device, **choices)
    outputs, speech, refs, uems, durations = {}, {}, {}, {}, {}
    start = time.perf_counter()
    for rec_id, path, offset_s, duration_s, turns, uem in rows:
        with decoded(path, offset_s, duration_s) as pcm:
            outputs[rec_id], speech[rec_id] = pipe.chunks(pcm)
            durations[rec_id] = len(pcm.samples) / RATE
        refs[rec_id], uems[rec_id] = turns, uem or [(0.0, durations[rec_id])]
    out = Path(req.out)
    data = TuningSet(outputs, refs, uems, durations, speech)
    der_settings = DERSettings(collar_s=req.collar_s, skip_overlap=req.skip_overlap)
    settings, tuned = pipe.settings, None
    if req.tune:  # windows are speech or not: only the cluster threshold and the median width matter
        settings, der = tune(data, settings, FRAME_S, der_scorer(der_settings), thresholds=(settings.threshold,))
        tuned = {**settings.tuned_record(), "der": der, "tuned_on_scored": True}
    result = score_set(data, settings, FRAME_S, der_settings, out / "rttm")
    seconds = time.perf_counter() - start
    audio_s = sum(durations.values())
    payload = {"pipeline": "pretrained", "inference": asdict(settings), "tuned": tuned, "der": result.der.to_dict(),
               "der_overlap": result.overlap, "speaker_count": result.counts, "speaker_count_unmet": result.unmet,
               "reference": {FROM_TURNS: sorted(refs)},
               "timing": {"audio_s": audio_s, "inference_s": seconds, "x_real_time": audio_s / max(seconds, 1e-9)}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(payload, indent=1))
    plotted = sorted(refs)[: req.timelines]
    for rec_id, png in zip(plotted, unique_file_names(plotted, ".png", prefix="timeline_")):
        plot_timeline(refs[rec_id], result.hypotheses[rec_id], result.posteriors[rec_id], FRAME_S, out / png, rec_id)
    tuned_line = " (tuned on these recordings: an optimistic DER)" if tuned else ""
    payload["table"] = result.table(f"no trained model: {settings.describe()} on windows of 1.5 s every 0.75 s"
                                    + tuned_line)
    return payload
