"""Decoding any supported recording into 16 kHz mono blocks with bounded memory.

soundfile (libsndfile ≥ 1.1) decodes wav, flac, ogg/vorbis and mp3; the signal
is read ``block_seconds`` at a time, mixed to mono and resampled with a soxr
stream, so memory does not grow with the recording's length and block edges
are seamless.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from agencerdas.stores.errors import AgencerdasError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of a recording: native ``sample_rate`` (Hz), ``channels``, ``frames`` (samples per channel)."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def audio_file(path: Path) -> Path:
    """``path`` if it names a regular file, else AgencerdasError saying what it is instead: missing, a
    directory, a pipe or FIFO (``<(...)``, ``mkfifo``: opening one waits for a writer, and a file is
    read twice, hashed then decoded, with seeks, which a pipe cannot do), a device or a socket."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise AgencerdasError(f"{path} does not exist; give an audio file") from None
    except OSError as exc:
        raise AgencerdasError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise AgencerdasError(f"{path} is a directory; give its audio files (e.g. {Path(path) / '*.wav'})")
    if stat.S_ISFIFO(mode):
        raise AgencerdasError(f"{path} is a pipe or FIFO, not a file: audio is read twice (hashed, then decoded) "
                              "and seeked, which a pipe cannot do; save the audio to a file and give that")
    if not stat.S_ISREG(mode):
        raise AgencerdasError(f"{path} is not a regular file (a device or socket); give an audio file")
    return Path(path)


def api_input(audio, sample_rate, uri) -> Path | None:
    """What a Python caller handed in as ``audio``: the regular file (:func:`audio_file`) a path names (str,
    bytes or path-like), or None for a waveform, which :func:`waveform_mono` checks. AgencerdasError naming the
    argument for a rate given with a file, a waveform without one, or a ``uri`` that is not a string."""
    if uri is not None and not isinstance(uri, str):
        raise AgencerdasError(f"uri must be a string naming the recording, got {uri!r}")
    if not isinstance(audio, (str, bytes, os.PathLike)):
        if sample_rate is None:
            raise AgencerdasError("a waveform needs its sample_rate in Hz (e.g. sample_rate=16000); a file path is "
                                  "a str, bytes or pathlib.Path")
        return None
    if sample_rate is not None:
        raise AgencerdasError(f"sample_rate={sample_rate!r} is for waveforms, and {audio!r} is a file, which says its "
                              "own rate; leave sample_rate out")
    return audio_file(Path(os.fsdecode(audio)))

def _open(path: Path) -> sf.SoundFile:
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        reason = str(exc).split(": ", 1)[-1] if str(path) in str(exc) else str(exc)
        if "not a regular file" in reason and Path(path).is_file():  # libsndfile's words for an undecodable mp3
            reason = "not a recognised audio format"
        raise AgencerdasError(f"{path}: cannot decode audio ({reason})") from None
    if handle.samplerate <= 0:
        handle.close()
        raise AgencerdasError(f"{path}: sample rate {handle.samplerate} in header; the file is damaged")
    return handle


def probe(path: Path) -> AudioInfo:
    """Header facts of ``path`` without decoding samples. Raises AgencerdasError for undecodable files."""
    with _open(path) as handle:
        return AudioInfo(handle.samplerate, handle.channels, handle.frames)


_PLAIN_SUBTYPES = ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW")


def _declared_frames(path: Path, handle: sf.SoundFile) -> int | None:
    """Samples per channel the header promises, where the format states it exactly (WAV's data
    chunk size, FLAC's STREAMINFO); None when unknown. libsndfile itself trusts the file's size."""
    if handle.format == "FLAC":
        return handle.frames if 0 < handle.frames < 2**40 else None
    if handle.format != "WAV" or handle.subtype not in _PLAIN_SUBTYPES:
        return None
    try:
        with open(path, "rb") as raw:
            if raw.read(12)[8:12] != b"WAVE":
                return None
            block_align = None
            for _ in range(64):  # chunks before the data: fmt, LIST, fact, ...
                header = raw.read(8)
                if len(header) < 8:
                    return None
                name, size = header[:4], int.from_bytes(header[4:], "little")
                if name == b"fmt ":
                    fmt = raw.read(size + size % 2)
                    block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else None
                elif name == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):  # 0 / -1: "unknown", written by streamers
                        return None
                    return size // block_align
                else:
                    raw.seek(size + size % 2, 1)
    except OSError:
        return None
    return None


def mix_to_mono(block: np.ndarray) -> np.ndarray:
    """(samples, channels) float32 -> (samples,) float32 channel mean.

    Equal to ``block.mean(axis=1, dtype=np.float32)``, bit for bit for one and two channels
    and within float32 rounding for more, at a tenth of its cost: numpy's reduction over the
    short channel axis runs a tiny inner loop per sample, whole-column adds run vectorised.
    One channel comes back as a view of ``block``, without a copy.
    """
    channels = block.shape[1]
    if channels == 1:
        return block[:, 0]
    mono = np.add(block[:, 0], block[:, 1])
    for channel in range(2, channels):
        mono += block[:, channel]
    mono /= channels
    return mono


#: The largest decoded sample magnitude accepted (full scale is 1; 120 dB above it). Float files
#: may exceed full scale, even hold integer-scaled samples (±32768), and still give usable features;
#: beyond this the float32 power spectrum heads for overflow (a 400-sample window of 1e30 overflows
#: it and the features become NaN), and below it the power stays under 1e30 for any window up to
#: 10^9 samples.
PEAK_LIMIT = 1e6


def _check_samples(block: np.ndarray, path: Path) -> None:
    """Raise AgencerdasError naming ``path`` when a decoded float block holds NaN, infinity or a
    sample beyond :data:`PEAK_LIMIT` (``block``: (samples, channels) float32)."""
    if not len(block):
        return
    peak = max(float(block.max()), -float(block.min()))  # two passes and no temporary, unlike abs().max()
    if peak != peak or peak == float("inf"):
        raise AgencerdasError(
            f"{path}: decoded samples contain NaN or infinity (or values beyond float32 range); the file is damaged"
        )
    if peak > PEAK_LIMIT:
        raise AgencerdasError(
            f"{path}: samples reach {peak:.3g}, far beyond full scale ±1 (at most {PEAK_LIMIT:.0e} is accepted), so "
            "its features would overflow; the float samples are not audio at any usable scale: "
            "rescale or re-export the file"
        )


def _read_mono(handle: sf.SoundFile, frames: int, path: Path) -> np.ndarray:
    """Up to ``frames`` samples, mixed to mono, as float32 (full scale ±1).

    16-bit PCM (WAV and FLAC, most corpora) is read as int16 and scaled here: the same
    floats as libsndfile's own conversion (x / 32768 is exact in float32) at a third of its
    cost, and integers need no range check. Other samples are checked per channel before
    mixing, so two channels cannot cancel (or overflow) out of sight (:func:`_check_samples`).
    """
    if handle.subtype == "PCM_16":
        pcm = handle.read(frames, dtype="int16", always_2d=True)
        return mix_to_mono(np.multiply(pcm, np.float32(1 / 32768), dtype=np.float32))
    block = handle.read(frames, dtype="float32", always_2d=True)
    _check_samples(block, path)
    return mix_to_mono(block)


def region_frames(info: AudioInfo, offset_s: float | None, duration_s: float | None) -> tuple[int, int]:
    """(first sample, samples) at the file's rate of the region ``offset_s`` + ``duration_s`` seconds (None:
    the whole file), clipped to the file's end."""
    if offset_s is None:
        return 0, info.frames
    first = min(info.frames, round(offset_s * info.sample_rate))
    count = info.frames - first if duration_s is None else round(duration_s * info.sample_rate)
    return first, max(0, min(count, info.frames - first))


def stream_mono(path: Path, sample_rate: int, block_seconds: float, offset_s: float | None = None,
                duration_s: float | None = None) -> Iterator[np.ndarray]:
    """Yield the recording, or its region ``offset_s`` + ``duration_s`` (seconds), as float32 mono blocks at
    ``sample_rate`` Hz.

    Each block holds about ``block_seconds`` of input audio; concatenated they equal
    resampling the whole signal at once (soxr streams keep filter state across blocks).
    A region is reached by seeking, so only its samples are decoded.
    Raises AgencerdasError naming the file when it cannot be decoded or holds no samples.
    """
    with _open(path) as handle:
        native = handle.samplerate
        resampler = None if native == sample_rate else soxr.ResampleStream(native, sample_rate, 1, dtype="float32")
        block_frames = max(1, int(block_seconds * native))
        declared = _declared_frames(path, handle)
        wanted = None
        if offset_s is not None:
            first, wanted = region_frames(AudioInfo(native, handle.channels, handle.frames), offset_s, duration_s)
            declared = wanted  # the region's samples must all be there
            try:
                handle.seek(first)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AgencerdasError(f"{path}: cannot seek to {offset_s:.3f} s ({exc})") from None
        total = 0
        while True:
            step = block_frames if wanted is None else min(block_frames, wanted - total)
            try:
                mono = _read_mono(handle, step, path) if step > 0 else np.zeros(0, dtype=np.float32)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AgencerdasError(f"{path}: cannot decode audio after {total} samples ({exc})") from None
            last = len(mono) < block_frames or (wanted is not None and total + len(mono) >= wanted)
            total += len(mono)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if len(mono):
                yield mono
            if last:
                break
    if total == 0:
        raise AgencerdasError(f"{path}: no audio samples (empty or truncated file)")
    if declared and total < declared:
        raise AgencerdasError(
            f"{path}: the header promises {declared} samples but the file holds only {total}; "
            "the file is truncated (an interrupted copy or recording?)"
        )


#: Waveform sample rates accepted, in Hz: from telephone-band audio well below 8 kHz up to the highest rate audio
#: interfaces record; a rate outside is a mistake (samples passed as the rate, a rate in kHz) that would stretch
#: or squeeze the audio into silence.
WAVEFORM_RATES_HZ = (1000, 768000)
#: Integer sample types read as PCM, by their full scale (sample / scale is ±1); uint8 is centred on 128, as in
#: 8-bit WAV. Wider or unsigned types have no common PCM meaning and are refused.
PCM_FULL_SCALE = {np.dtype(np.int8): 128, np.dtype(np.uint8): 128, np.dtype(np.int16): 32768,
                  np.dtype(np.int32): 2**31}


def _samples(waveform, name: str) -> np.ndarray:
    """``waveform`` as a float32 array at full scale ±1: floats as they are, PCM integers scaled
    (:data:`PCM_FULL_SCALE`); AgencerdasError naming ``name`` for anything else."""
    try:
        array = np.asarray(waveform)
    except (TypeError, ValueError, RuntimeError) as exc:  # ragged lists, a tensor on a GPU or needing grad
        raise AgencerdasError(f"{name}: not an array of samples ({exc}); give a numpy float array "
                              "(samples,) or (channels, samples)") from None
    if array.dtype in PCM_FULL_SCALE:
        offset = 128 if array.dtype == np.uint8 else 0
        return ((array.astype(np.float32) - offset) / np.float32(PCM_FULL_SCALE[array.dtype])).astype(np.float32)
    if array.dtype.kind != "f":
        kind = {"i": "integer", "u": "unsigned integer", "c": "complex", "b": "boolean"}.get(array.dtype.kind, "non-numeric")
        raise AgencerdasError(
            f"{name}: samples of type {array.dtype} ({kind}) are not audio this reads: give floats at full scale ±1, "
            f"or PCM integers ({', '.join(str(t) for t in PCM_FULL_SCALE)})")
    return array.astype(np.float32, copy=False)


def waveform_mono(waveform: np.ndarray, sample_rate: int, target_rate: int, name: str = "waveform") -> np.ndarray:
    """(samples,) float32 mono at ``target_rate`` Hz of an in-memory ``waveform``: (samples,), or 2-D as
    (channels, samples) the way pyannote and torchaudio hold audio or (samples, channels) the way
    soundfile reads it (the longer axis is time), at ``sample_rate`` Hz. Floats are at full scale ±1;
    int8, uint8, int16 and int32 samples are PCM and scaled to it (an int16 32767 is just under 1).

    Raises AgencerdasError naming ``name`` for a rate that is not an integer number of Hz within
    :data:`WAVEFORM_RATES_HZ`, samples of another type (complex, text, wider integers, ragged lists), a
    shape that is not audio, no samples, or samples that are not finite or far beyond full scale (as for files).
    """
    low, high = WAVEFORM_RATES_HZ
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AgencerdasError(f"{name}: sample_rate must be a positive integer number of Hz, got {sample_rate!r}")
    if not low <= sample_rate <= high:
        raise AgencerdasError(f"{name}: sample_rate={sample_rate} Hz is outside {low}..{high} Hz; give the rate the "
                              "samples were recorded at, in Hz (16000, 44100, 48000, ...)")
    array = _samples(waveform, name)
    if array.ndim not in (1, 2) or not array.size:
        raise AgencerdasError(f"{name}: expected samples (n,) or (channels, n) holding audio, got shape {array.shape}")
    if array.ndim == 1:
        block = array[:, None]
    else:  # (samples, channels): a waveform has more samples than channels
        block = array if array.shape[0] > array.shape[1] else np.ascontiguousarray(array.T)
    _check_samples(block, Path(name))
    mono = mix_to_mono(block)
    return mono if sample_rate == target_rate else soxr.resample(mono, sample_rate, target_rate).astype(np.float32)
