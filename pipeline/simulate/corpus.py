"""Writing a simulated corpus: audio, RTTM, UEM and ``corpus.json``, one worker process per recording.

Layout under the output directory::

    audio/<rec>.<wav|flac|ogg|mp3>   the mixture, format/rate/channels per SimulationConfig.layout
    rttm/<rec>.rttm                  one SPEAKER line per utterance, trimmed to its voiced part
    uem/<rec>.uem                    the whole recording is scored
    corpus.json                      parameters, speaker pool, per-recording statistics

``corpus.json`` is written last, atomically: its presence means the corpus is complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import soxr
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from agencerdas.pipeline.rttm import rttm_safe, write_rttm
from agencerdas.pipeline.simulate.config import FORMATS, SimulationConfig
from agencerdas.pipeline.simulate.conversation import overlap_stats, simulate_conversation
from agencerdas.pipeline.simulate.espeak import SAMPLE_RATE_HZ, Espeak, espeak_version
from agencerdas.pipeline.simulate.speakers import Speaker, speaker_pool
from agencerdas.stores.errors import AgencerdasError

CORPUS_FILE = "corpus.json"
_OUTPUTS = ("audio", "rttm", "uem")
# Frames per write call. libvorbis allocates its analysis buffer on the stack, so one
# multi-minute write overflows it and crashes the process (libsndfile issue #1095).
_WRITE_BLOCK = 65536


def recording_id(prefix: str, index: int, n_recordings: int) -> str:
    """Id of recording ``index`` (0-based): ``<prefix>_0001`` ..., wider when there are > 9999."""
    return f"{prefix}_{index + 1:0{max(4, len(str(n_recordings)))}d}"


def write_uem(path: Path, recording: str, duration_s: float) -> None:
    """A UEM scoring the whole recording: ``<rec> 1 0.000 <duration>``."""
    path.write_text(f"{rttm_safe(recording)} 1 0.000 {duration_s:.3f}\n", encoding="utf-8")


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, name: str) -> None:
    """Write float ``audio`` (samples, channels) at ``sample_rate`` Hz as format ``name`` of FORMATS."""
    container, subtype = FORMATS[name]
    try:
        with sf.SoundFile(path, "w", sample_rate, audio.shape[1], subtype=subtype, format=container) as sink:
            for offset in range(0, audio.shape[0], _WRITE_BLOCK):
                sink.write(audio[offset : offset + _WRITE_BLOCK])
    except (OSError, sf.SoundFileError) as exc:
        raise AgencerdasError(f"{path}: cannot write {name} audio at {sample_rate} Hz ({exc})") from None


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole > 0 else 0.0


def render_recording(out_dir: Path, config: SimulationConfig, pool: Sequence[Speaker], index: int) -> dict:
    """Simulate recording ``index`` and write its audio, RTTM and UEM; return its corpus.json entry.

    Runs in a worker process; opens its own eSpeak NG session, so the result does not
    depend on which worker runs it or what that worker did before.
    """
    rec = recording_id(config.prefix or config.pool, index, config.n_recordings)
    name, rate, n_channels = config.layout(index)
    with Espeak() as tts:
        conversation = simulate_conversation(pool, config, index, tts, n_channels)
    audio = conversation.audio
    if rate != SAMPLE_RATE_HZ:
        audio = soxr.resample(audio, SAMPLE_RATE_HZ, rate)
    # The mix peaks at -1 dBFS or lower; clipping only guards against resampler ringing.
    np.clip(audio, -1.0, 1.0, out=audio)
    paths = {kind: f"{kind}/{rec}.{name if kind == 'audio' else kind}" for kind in _OUTPUTS}
    write_audio(out_dir / paths["audio"], audio, rate, name)
    duration_s = audio.shape[0] / rate
    write_rttm(out_dir / paths["rttm"], rec, conversation.segments)
    write_uem(out_dir / paths["uem"], rec, duration_s)
    speech_s, overlap_s = overlap_stats(conversation.segments)
    return {
        "id": rec,
        **paths,
        "format": name,
        "sample_rate_hz": rate,
        "channels": n_channels,
        "duration_s": round(duration_s, 3),
        "target_duration_s": round(conversation.target_duration_s, 3),
        "speakers": [speaker.id for speaker in conversation.speakers],
        "n_utterances": len(conversation.segments),
        "speech_s": round(speech_s, 3),
        "overlap_s": round(overlap_s, 3),
        "overlap_ratio": _ratio(overlap_s, speech_s),
        "snr_db": config.noise_snr_db,
        "rt60_s": None if conversation.rt60_s is None else [round(t, 3) for t in conversation.rt60_s],
    }


def _remove_previous(out_dir: Path) -> None:
    """Delete the files a previous simulation listed in ``out_dir/corpus.json`` (and only those).

    Regenerating with fewer recordings or other formats must not leave stale audio
    that a loader globbing ``audio/`` would pick up.
    """
    manifest = out_dir / CORPUS_FILE
    if not manifest.exists():
        return
    try:
        recordings = json.loads(manifest.read_text(encoding="utf-8"))["recordings"]
        listed = [out_dir / entry[kind] for entry in recordings for kind in _OUTPUTS]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AgencerdasError(
            f"{manifest} exists but is not a corpus.json written by simulate ({exc}); "
            "remove it or choose another output directory"
        ) from None
    manifest.unlink()
    root = out_dir.resolve()
    for path in listed:
        if path.resolve().parent.parent == root:  # never follow a hand-edited path out of the corpus
            path.unlink(missing_ok=True)


def simulate_corpus(out_dir: Path, config: SimulationConfig, progress: bool = True) -> dict:
    """Generate the corpus described by ``config`` under ``out_dir``; return the corpus.json content.

    Recordings are rendered in ``config.jobs`` worker processes (joblib loky), one task
    per recording, behind one progress bar. Output is identical for identical configs,
    whatever the number of jobs (lossless files byte for byte; ogg and mp3 decode to
    the same samples). Files listed by a previous corpus.json in ``out_dir`` are
    replaced. Raises AgencerdasError for requests that cannot be met.
    """
    out_dir = Path(out_dir)
    pool = speaker_pool(config.pool, config.pool_seed, config.train_pool_size, config.test_pool_size)
    synthesizer = f"eSpeak NG {espeak_version()}"
    try:
        _remove_previous(out_dir)
        for kind in _OUTPUTS:
            (out_dir / kind).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AgencerdasError(f"cannot prepare output directory {out_dir} ({exc})") from None

    tasks = (delayed(render_recording)(out_dir, config, pool, i) for i in range(config.n_recordings))
    parallel = Parallel(n_jobs=config.jobs, backend="loky", return_as="generator_unordered")
    recordings = []
    with tqdm(total=config.n_recordings, desc=f"simulate {config.prefix}", unit="rec", disable=not progress) as bar:
        for entry in parallel(tasks):
            recordings.append(entry)
            bar.update()
    recordings.sort(key=lambda entry: entry["id"])

    speech_s = sum(entry["speech_s"] for entry in recordings)
    overlap_s = sum(entry["overlap_s"] for entry in recordings)
    corpus = {
        "synthesizer": synthesizer,
        "seed": config.seed,
        "pool": config.pool,
        "pool_seed": config.pool_seed,
        "config": config.to_json(),
        "speakers": [speaker.to_json() for speaker in pool],
        # Voices that speak only in their own recordings (SimulationConfig.heldout_voices).
        "heldout_speakers": [speaker.id for speaker in pool[len(pool) - config.heldout_voices:]]
        if config.heldout_voices else [],
        "n_recordings": len(recordings),
        "duration_s": round(sum(entry["duration_s"] for entry in recordings), 3),
        "speech_s": round(speech_s, 3),
        "overlap_s": round(overlap_s, 3),
        "overlap_ratio": _ratio(overlap_s, speech_s),
        "recordings": recordings,
    }
    partial = out_dir / (CORPUS_FILE + ".tmp")
    partial.write_text(json.dumps(corpus, indent=2) + "\n", encoding="utf-8")
    partial.replace(out_dir / CORPUS_FILE)
    return corpus
