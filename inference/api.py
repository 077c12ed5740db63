"""The Python API: a trained checkpoint as a callable that turns audio into a pyannote Annotation.

    from agencerdas import Diarizer
    diarizer = Diarizer.from_checkpoint("runs/optimized/best.pt")
    annotation = diarizer("meeting.wav")                    # any length, any format the pipeline reads
    annotation = diarizer(waveform, sample_rate=44100)      # (samples,) or (channels, samples)

The features, the sliding-window inference and the decisions (the run's ``tuned.json`` when it
was tuned for this checkpoint) are those of ``agencerdas diarize``, which uses this class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pyannote.core import Annotation

from agencerdas.pipeline import FeatureConfig
from agencerdas.pipeline.audio import probe, stream_mono, waveform_mono
from agencerdas.pipeline.features import log_mel
from agencerdas.scoring.binarize import activity_to_segments
from agencerdas.scoring.der import to_annotation
from agencerdas.stores.segments import Segment
from agencerdas.training.posteriors import predictor
from agencerdas.training.runtime import inference_runtime

from .model import LoadedModel, load_model

#: Seconds of audio decoded at a time for a file (the features of the whole file are kept).
BLOCK_S = 80.0


class Diarizer:
    """Who speaks when, with one trained model; see :meth:`from_checkpoint` and :meth:`__call__`."""

    def __init__(self, loaded: LoadedModel, device: torch.device, autocast):
        self.loaded, self.device = loaded, device
        self.features = FeatureConfig(**loaded.feature_config)
        self._predict = predictor(loaded.model, device, autocast)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", clustering: str = "auto",
                        num_speakers: int | None = None, min_speakers: int | None = None,
                        max_speakers: int | None = None, chunk_s: float | None = None,
                        chunk_hop_s: float | None = None) -> "Diarizer":
        """The model of checkpoint ``path`` (loaded without running code from it) on ``device``
        (auto: the first GPU if there is one, else the CPU; or cpu, cuda, cuda:N).

        ``clustering``: ``on`` clusters every chunk's speakers across the recording by their embeddings
        (any number of speakers; needs a model trained with the embedding head), ``off`` stitches chunks
        (at most the model's slots), ``auto`` clusters when the model can. With clustering, the number
        of speakers is ``num_speakers`` when given, else found, within ``min_speakers``/``max_speakers``, in
        chunks of ``chunk_s`` seconds every ``chunk_hop_s`` (default: the run's)."""
        runtime = inference_runtime(device)
        loaded = load_model(Path(path), runtime.device, clustering=clustering, num_speakers=num_speakers,
                            min_speakers=min_speakers, max_speakers=max_speakers, chunk_s=chunk_s,
                            chunk_hop_s=chunk_hop_s)
        return cls(loaded, runtime.device, runtime.autocast())

    @property
    def frame_shift_s(self) -> float:
        """Seconds between the rows of the posteriors :meth:`__call__` returns."""
        return self.loaded.frame_shift_s

    def __call__(self, audio: str | Path | np.ndarray, sample_rate: int | None = None, uri: str | None = None,
                 return_posteriors: bool = False) -> Annotation | tuple[Annotation, np.ndarray]:
        """Diarize ``audio``: a file path (wav, flac, ogg, mp3, ...), or a waveform (samples,) or
        (channels, samples) at ``sample_rate`` Hz, full scale ±1.

        Returns a :class:`pyannote.core.Annotation` (speakers ``spk0``, ``spk1``, ...; ``uri`` defaults
        to the file's stem or ``waveform``), and with ``return_posteriors`` also the per-speaker
        probabilities (frames, speakers), :attr:`frame_shift_s` apart. Raises AgencerdasError for audio
        that cannot be used (naming the file and why).
        """
        rate = self.features.sample_rate
        if isinstance(audio, (str, Path)):
            if sample_rate is not None:
                raise TypeError("sample_rate is for waveforms; a file says its own")
            path = Path(audio)
            feats = log_mel(stream_mono(path, rate, BLOCK_S), self.features)
            duration_s, uri = probe(path).duration_s, uri or path.stem
        else:
            if sample_rate is None:
                raise TypeError("a waveform needs its sample_rate")
            mono = waveform_mono(audio, sample_rate, rate)
            feats = log_mel([mono], self.features)
            duration_s, uri = len(mono) / rate, uri or "waveform"
        segments, posteriors = self.diarize_features(feats, len(feats), duration_s)
        annotation = to_annotation(segments, uri)
        return (annotation, posteriors) if return_posteriors else annotation

    def diarize_features(self, feats, frames: int, duration_s: float) -> tuple[list[Segment], np.ndarray]:
        """Speaker turns (seconds, clipped to ``duration_s``) and posteriors (model frames, speakers) of ``frames``
        base frames of log-mel ``feats`` (an array or a store's Zarr array, (frames, n_mels))."""
        posteriors = self.loaded.posteriors(self._predict, feats, frames)
        active = self.loaded.inference.decide(posteriors)
        return activity_to_segments(active, self.frame_shift_s, max_end_s=duration_s), posteriors
