"""The one-screen summary at the end of `make demo`, read from the artifacts each stage left."""

from __future__ import annotations

import json
from pathlib import Path


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def demo_summary(data: Path, store: Path, run: Path, stage_seconds: list[float] | None = None) -> str:
    """Hours of audio, feature speed, training time, test DER with its parts on both test sets, each beside the
    DER of the pipeline that needs no trained model (the baseline the model must beat), and where outputs are."""
    train, test = _json(data / "train" / "corpus.json"), _json(data / "test" / "corpus.json")
    many = _json(data / "test-many" / "corpus.json")
    feats = _json(store / "last-features-run.json")
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"kind": "epoch"' in line] if (run / "metrics.jsonl").is_file() else []
    lines = ["", "=" * 72, "agencerdas demo summary", "=" * 72]
    lines.append(f"corpus    train {train.get('n_recordings', 0)} recordings / {train.get('duration_s', 0) / 3600:.2f} h, "
                 f"test {test.get('n_recordings', 0)} / {test.get('duration_s', 0) / 3600:.2f} h (unseen speakers)"
                 + (f", 5-7-speaker test {many.get('n_recordings', 0)} / {many.get('duration_s', 0) / 3600:.2f} h" if many else ""))
    if feats:
        speed = feats["audio_s"] / max(feats["wall_s"], 1e-9)
        lines.append(f"features  computed {feats['computed']}, reused {feats['reused']}, failed {len(feats['failures'])}; "
                     f"{feats['audio_s'] / 3600:.2f} h in {feats['wall_s']:.0f} s ({speed:.0f}x real time, {feats['jobs']} jobs)")
    if epochs:
        seconds = sum(e["seconds"] for e in epochs)
        lines.append(f"training  {len(epochs)} epochs in {seconds:.0f} s of steps, final train loss {epochs[-1]['train_loss']:.3f}"
                     + (f", validation DER {100 * epochs[-1]['val_der']:.1f}%" if epochs[-1].get("val_der") is not None else ""))
    for label, folder in (("test DER", "eval"), ("no model", "eval-pretrained"), ("5-7 spk", "eval-many"),
                          ("no model", "eval-many-pretrained")):
        report = _json(run / folder / "report.json")
        if not report:
            continue
        overall, settings, counts = report["der"]["overall"], report["der"]["settings"], report.get("speaker_count")
        lines.append(f"{label:<9} {100 * overall['der']:.2f}%  (missed {100 * overall['missed_rate']:.2f}%, "
                     f"false alarm {100 * overall['false_alarm_rate']:.2f}%, confusion {100 * overall['confusion_rate']:.2f}%)")
        lines.append(f"          collar {settings['collar_s']} s each side, overlap "
                     f"{'skipped' if settings['skip_overlap'] else 'scored'}; {len(report['der']['per_recording'])} recordings; "
                     f"inference {report['timing']['x_real_time']:.0f}x real time"
                     + (f"; speaker count right in {counts['exact']}" if counts else ""))
    if stage_seconds:
        names = ("features", "train", "evaluate+plots")
        lines.append("stages    " + ", ".join(f"{n} {s:.0f} s" for n, s in zip(names, stage_seconds)))
    lines.append(f"outputs   {run}/eval/report.json, {run}/eval/rttm/, {run}/eval/timeline_*.png, {run}/eval-many/, "
                 f"{run}/eval*-pretrained/ (no model), {run}/plots/loss.png")
    return "\n".join(lines)
