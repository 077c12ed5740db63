"""The Python API: a trained checkpoint as a callable that turns audio into a pyannote Annotation.

    from agencerdas import Diarizer
    diarizer = Diarizer.from_checkpoint("runs/optimized/best.pt")
    annotation = diarizer("meeting.wav")                    # any length, any format the pipeline reads
    annotation = diarizer(waveform, sample_rate=44100)      # (samples,) or (channels, samples)

A waveform is floats at full scale ±1, or PCM integers (int16 as read from a WAV file, int32, int8, uint8),
scaled to it. With a number of speakers asked for (``num_speakers``, ``min_speakers``, ``max_speakers``) that
a recording cannot give, the annotation holds the closest number found and a
:class:`~agencerdas.scoring.cluster.SpeakerCountWarning` says how many and why (see :meth:`Diarizer.from_checkpoint`).

The features, the sliding-window inference and the decisions (the run's ``tuned.json`` when it
was tuned for this checkpoint) are those of ``agencerdas diarize``, which uses this class.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from pyannote.core import Annotation

from agencerdas.pipeline import FeatureConfig
from agencerdas.pipeline.audio import api_input, probe, stream_mono, waveform_mono
from agencerdas.pipeline.features import log_mel
from agencerdas.scoring.der import to_annotation
from agencerdas.scoring.pipeline import turns
from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.segments import Segment
from agencerdas.training.posteriors import predictor
from agencerdas.training.runtime import inference_runtime

from .model import LoadedModel, load_model
from .pretrained import PretrainedDiarizer
from .voices import RATE, Decoded, decoded

#: Seconds of audio decoded at a time for a file (the features of the whole file are kept).
BLOCK_S = 80.0


class Diarizer:
    """Who speaks when, with one trained model; see :meth:`from_checkpoint` and :meth:`__call__`."""

    def __init__(self, loaded: LoadedModel, device: torch.device, autocast):
        self.loaded, self.device = loaded, device
        self.features = FeatureConfig(**loaded.feature_config)
        self._predict = predictor(loaded.model, device, autocast)

    @classmethod
    def from_checkpoint(cls, path: str | bytes | os.PathLike, device: str = "auto", clustering: str = "auto",
                        num_speakers: int | None = None, min_speakers: int | None = None,
                        max_speakers: int | None = None, chunk_s: float | None = None,
                        chunk_hop_s: float | None = None, embeddings: str | None = None, count: str = "threshold",
                        vad: str = "none") -> "Diarizer":
        """The model of checkpoint ``path`` (loaded without running code from it) on ``device``
        (auto: the first GPU if there is one, else the CPU; or cpu, cuda, cuda:N).

        ``clustering``: ``on`` clusters every chunk's speakers across the recording by their embeddings
        (any number of speakers; needs a model trained with the embedding head), ``off`` stitches chunks
        (at most the model's slots), ``auto`` clusters when the model can. With clustering, the number
        of speakers is ``num_speakers`` when given, else found, within ``min_speakers``/``max_speakers``, in
        chunks of ``chunk_s`` seconds every ``chunk_hop_s`` (default: the run's; with stitching they are refused).

        Two slots of one chunk are never one speaker (the model heard them as two people), so a recording may
        hold more speakers than ``num_speakers``/``max_speakers`` allow, or fewer than asked when few speak:
        each call then returns the closest number found and warns with a
        :class:`~agencerdas.scoring.cluster.SpeakerCountWarning` that says the number and why (catch it with
        ``warnings.catch_warnings`` to act on it). Bad arguments raise AgencerdasError before the model loads.

        ``embeddings``: ``head`` (the model's), ``ge2e`` (resemblyzer's pretrained speaker encoder on the audio
        where each slot speaks alone) or a TorchScript encoder file; None (default): the run's ``EMBEDDINGS``; ``count``: ``threshold`` or ``eigengap``;
        ``vad``: ``none`` or ``silero`` (speech only where Silero VAD hears it). See
        :class:`~agencerdas.scoring.settings.PipelineSettings`."""
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise AgencerdasError(f"the checkpoint must be a path (str, bytes or pathlib.Path), got "
                                  f"{type(path).__name__} {path!r}")
        runtime = inference_runtime(device)
        loaded = load_model(Path(os.fsdecode(path)), runtime.device, clustering=clustering, num_speakers=num_speakers,
                            min_speakers=min_speakers, max_speakers=max_speakers, chunk_s=chunk_s,
                            chunk_hop_s=chunk_hop_s, embeddings=embeddings, count=count, vad=vad)
        return cls(loaded, runtime.device, runtime.autocast())

    @staticmethod
    def pretrained(device: str = "auto", num_speakers: int | None = None, min_speakers: int | None = None,
                   max_speakers: int | None = None, count: str = "threshold",
                   embeddings: str = "ge2e") -> PretrainedDiarizer:
        """The pipeline that needs no trained model (Silero VAD, the GE2E speaker encoder on windows of 1.5 s
        every 0.75 s, clustering; :mod:`~agencerdas.inference.pretrained`), called like a Diarizer. It finds
        no overlapped speech; ``embeddings`` may name a TorchScript encoder instead of GE2E."""
        return PretrainedDiarizer.load(device, num_speakers=num_speakers,
                                       min_speakers=min_speakers, max_speakers=max_speakers, count=count,
                                       embeddings=embeddings)

    @property
    def frame_shift_s(self) -> float:
        """Seconds between the rows of the posteriors :meth:`__call__` returns."""
        return self.loaded.frame_shift_s

    def __call__(self, audio: str | bytes | os.PathLike | np.ndarray, sample_rate: int | None = None,
                 uri: str | None = None, return_posteriors: bool = False) -> Annotation | tuple[Annotation, np.ndarray]:
        """Diarize ``audio``: a file path (str, bytes or path-like; a regular file: wav, flac, ogg, mp3, ...),
        or a waveform (samples,) or (channels, samples) at ``sample_rate`` Hz (1 kHz to 768 kHz): floats at full
        scale ±1, or PCM integers (int8, uint8, int16, int32) scaled to it.

        Returns a :class:`pyannote.core.Annotation` (speakers ``spk0``, ``spk1``, ...; ``uri`` defaults
        to the file's stem or ``waveform``), and with ``return_posteriors`` also the per-speaker
        probabilities (frames, speakers), :attr:`frame_shift_s` apart. Raises AgencerdasError, before any
        inference, for audio that cannot be used (naming the file or argument and why): a path that is not a
        regular file (missing, a directory, a pipe), samples of another type, a rate outside that range.
        """
        rate = self.features.sample_rate
        path = api_input(audio, sample_rate, uri)
        if path is not None:
            feats = log_mel(stream_mono(path, rate, BLOCK_S), self.features)
            duration_s, uri = probe(path).duration_s, uri or path.stem
            with decoded(path, needed=self.loaded.voices.needs_audio) as pcm:
                segments, posteriors = self.diarize_features(feats, len(feats), duration_s, pcm)
        else:
            mono = waveform_mono(audio, sample_rate, rate)
            feats = log_mel([mono], self.features)
            duration_s, uri = len(mono) / rate, uri or "waveform"
            pcm = Decoded.of_array(waveform_mono(audio, sample_rate, RATE)) if self.loaded.voices.needs_audio else None
            segments, posteriors = self.diarize_features(feats, len(feats), duration_s, pcm)
        annotation = to_annotation(segments, uri)
        return (annotation, posteriors) if return_posteriors else annotation

    def diarize_features(self, feats, frames: int, duration_s: float,
                         audio: Decoded | None = None) -> tuple[list[Segment], np.ndarray]:
        """Speaker turns (seconds, clipped to ``duration_s``) and posteriors (model frames, speakers) of ``frames``
        base frames of log-mel ``feats`` (an array or a store's Zarr array, (frames, n_mels)); ``audio``: the
        recording's samples, for a pipeline whose pretrained components hear them (an encoder, a VAD)."""
        outputs, speech = self.loaded.recording(self._predict, feats, frames, audio)
        segments, decided = turns(outputs, self.loaded.inference, self.frame_shift_s, duration_s, speech)
        return segments, decided.posteriors
