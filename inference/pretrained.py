"""The diarization pipeline that needs no trained model: Silero VAD -> windows of 1.5 s every 0.75 s ->
the GE2E speaker encoder on each window's speech -> clustering -> turns.

It is the same pipeline as a trained model's (:func:`scoring.pipeline.turns`), with each window a chunk of one
slot whose activity is the VAD's speech: windows holding a second of speech or more are clustered, the others
join the nearest speaker, every speaker's windows are overlap-added, and decisions are gated by the VAD. It
has no overlapped speech (one speaker per frame at most), and it is the baseline a trained model must beat,
the zero-training path of ``diarize --pretrained``, ``Diarizer.pretrained()`` and
``features --pseudo-model pretrained``.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
from pyannote.core import Annotation

from agencerdas.pipeline.audio import api_input, waveform_mono
from agencerdas.scoring.der import to_annotation
from agencerdas.scoring.pipeline import Chunks, Decisions, turns
from agencerdas.scoring.settings import PipelineSettings
from agencerdas.scoring.stitch import chunk_starts
from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.segments import Segment
from agencerdas.training.runtime import inference_runtime

from .voices import RATE, Decoded, Voices, decoded, encoder_embeddings, speech_frames

#: Frame shift of the pipeline's decisions (seconds).
FRAME_S = 0.01
#: Window length and hop (seconds): a window is one chunk of one slot.
WINDOW_S, HOP_S = 1.5, 0.75
#: How many speakers: clusters stay apart beyond a cosine distance of CLUSTER_THRESHOLD (chosen on the unseen-voice
#: validation split). The eigengap found the count of more validation recordings (16 of 20, against 4) at the same
#: DER, but splits a short recording's few windows into many speakers (13 on a 20-s two-speaker conversation), so
#: it is an option, not the default (docs/results.md).
COUNT = "threshold"
CLUSTER_THRESHOLD = 0.3


def pretrained_settings(**choices) -> PipelineSettings:
    """The no-model pipeline's settings; ``choices`` replace any field (numbers of speakers, count rule, ...)."""
    window = round(WINDOW_S / FRAME_S)
    base = PipelineSettings(window=window, overlap=1.0 - round(HOP_S / FRAME_S) / window, threshold=0.5,
                            median_frames=1, fill_speech=True, clustering=True, embeddings="ge2e",
                            cluster_threshold=CLUSTER_THRESHOLD, count=COUNT, vad="silero")
    return replace(base, **choices)


class PretrainedDiarizer:
    """Who speaks when with pretrained components only; call it like :class:`~inference.api.Diarizer`."""

    frame_shift_s = FRAME_S

    def __init__(self, settings: PipelineSettings, voices: Voices):
        if voices.encoder is None or voices.vad is None:
            raise AgencerdasError("the pretrained pipeline needs a speaker encoder and a VAD")
        self.settings, self.voices = settings, voices

    @classmethod
    def load(cls, device: str = "auto", **choices) -> "PretrainedDiarizer":
        """The pipeline with :func:`pretrained_settings` (``choices``: num/min/max_speakers, ``embeddings`` (``ge2e``
        or a TorchScript encoder file), ``count``, ``cluster_threshold``), its components loaded on ``device``
        (auto: the first GPU if there is one, else the CPU)."""
        settings = pretrained_settings(**choices)
        return cls(settings, Voices.load(settings.embeddings, settings.vad, str(inference_runtime(device).device)))

    def chunks(self, audio: Decoded) -> tuple[Chunks, np.ndarray]:
        """The recording's windows as :class:`~scoring.pipeline.Chunks` (C windows, one slot each, activity 1 where
        the VAD hears speech, embeddings from the encoder on that speech) and the VAD's (frames,) bool speech."""
        frames = max(1, int(np.ceil(len(audio.samples) / RATE / FRAME_S)))
        speech = speech_frames(self.voices.vad, audio, FRAME_S, frames)
        length = min(self.settings.window, frames)
        starts = np.fromiter(chunk_starts(frames, self.settings.window, self.settings.step), dtype=np.int64)
        activity = np.stack([speech[s : s + length] for s in starts]).astype(np.float32)[:, :, None]
        chunks = Chunks(starts, activity, np.zeros((len(starts), 1, 1), np.float32), frames)
        return encoder_embeddings(chunks, audio, self.voices.encoder, FRAME_S), speech

    def diarize_audio(self, audio: Decoded, duration_s: float) -> tuple[list[Segment], Decisions]:
        """Speaker turns (seconds, clipped to ``duration_s``) and the decisions of a decoded recording."""
        chunks, speech = self.chunks(audio)
        return turns(chunks, self.settings, FRAME_S, duration_s, speech)

    def __call__(self, audio: str | bytes | os.PathLike | np.ndarray, sample_rate: int | None = None,
                 uri: str | None = None, return_posteriors: bool = False) -> Annotation | tuple[Annotation, np.ndarray]:
        """Diarize a file or a waveform (samples,) / (channels, samples) at ``sample_rate``, as
        :meth:`inference.api.Diarizer.__call__` does; posteriors are (frames, speakers), :attr:`frame_shift_s` apart."""
        path = api_input(audio, sample_rate, uri)
        if path is not None:
            with decoded(path) as pcm:
                segments, decided = self.diarize_audio(pcm, len(pcm.samples) / RATE)
            uri = uri or path.stem
        else:
            pcm = Decoded.of_array(waveform_mono(audio, sample_rate, RATE))
            segments, decided = self.diarize_audio(pcm, len(pcm.samples) / RATE)
            uri = uri or "waveform"
        annotation = to_annotation(segments, uri)
        return (annotation, decided.posteriors) if return_posteriors else annotation
