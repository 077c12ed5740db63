"""Pseudo labels from a trained agencerdas model: ``agencerdas features … --pseudo-model runs/NAME/best.pt``,
or from the pipeline that needs none: ``--pseudo-model pretrained`` (:class:`PretrainedLabeler`).

The model runs over the recording's stored features exactly as ``diarize`` does
(stitched sliding-window inference, the run's tuned or configured threshold and
median filter), and its model-rate activity is repeated to 10 ms base frames.
Unlike the default energy-VAD + clustering labeller, it can label overlapped speech.

The labels key names the method, the checkpoint's xxh3 and the inference settings,
so labels from another checkpoint, or another threshold, are other entries.
"""

from __future__ import annotations

from contextlib import nullcontext
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from agencerdas.stores import hash_file
from agencerdas.stores.errors import AgencerdasError

from agencerdas.pipeline.pseudo import AudioRegion
from agencerdas.scoring.pipeline import decide
from agencerdas.training.posteriors import predictor

from .model import LoadedModel, load_model
from .pretrained import FRAME_S, PretrainedDiarizer, pretrained_settings
from .voices import RATE, decoded

METHOD = "agencerdas-eend"
PRETRAINED_METHOD = "agencerdas-pretrained-vad+ge2e+ahc"


#: Models loaded in this process, by (path, checkpoint xxh3): each worker loads one once, not per task.
_LOADED: dict[tuple[str, str], LoadedModel] = {}


def _model(path: str, checkpoint_xxh3: str) -> LoadedModel:
    """The checkpoint loaded once per process, if it is still the one whose hash is in the labels key."""
    if (path, checkpoint_xxh3) not in _LOADED:
        try:
            found = hash_file(Path(path))
        except OSError as exc:
            raise AgencerdasError(f"pseudo model {path} cannot be read here ({exc.strerror or exc}); workers need "
                                  "the checkpoint at the same path") from None
        if found != checkpoint_xxh3:
            raise AgencerdasError(f"pseudo model {path} changed while features ran (training still writing it?); "
                                  "rerun features with a checkpoint that does not change")
        _LOADED[path, checkpoint_xxh3] = load_model(Path(path), torch.device("cpu"), found)
    return _LOADED[path, checkpoint_xxh3]


class ModelLabeler:
    """A :class:`pipeline.pseudo.PseudoLabeler` backed by a checkpoint; inference on the CPU in fp32.

    Checked in the calling process, so a bad checkpoint or a feature mismatch is one clear
    error before any work starts; only the path and settings travel to workers.
    """

    def __init__(self, checkpoint: Path, feature_config: dict):
        path = Path(checkpoint)
        if not path.is_file():
            raise AgencerdasError(f"pseudo model {path} does not exist; give a checkpoint such as runs/NAME/best.pt")
        self.path = str(path.resolve())
        digest = hash_file(path)
        lm = _LOADED[self.path, digest] = load_model(path, torch.device("cpu"), digest)  # just hashed: no second look
        if lm.feature_config != feature_config:
            raise AgencerdasError(
                f"pseudo model {path} was trained on features {lm.feature_config}, but this run computes "
                f"{feature_config}; build features with the model's settings or use another checkpoint"
            )
        inference = lm.inference
        self.settings = {"method": METHOD, "checkpoint_xxh3": digest, "window": inference.window,
                         "overlap": inference.overlap, "threshold": inference.threshold,
                         "median_frames": inference.median_frames, "fill_speech": inference.fill_speech,
                         # only for powerset models, so the labels keys of multilabel ones stay as they were
                         **({"max_overlap": inference.max_overlap} if inference.max_overlap is not None else {}),
                         **({"clustering": True, "cluster_threshold": inference.cluster_threshold}
                            if inference.clustering else {}),
                         # what hears the audio: only when something does, so older labels keys stay as they were
                         **({"embeddings": inference.embeddings} if inference.embeddings != "head" else {}),
                         **({"vad": inference.vad} if inference.vad != "none" else {})}

    def describe(self) -> dict:
        return dict(self.settings)

    def __call__(self, logmel: np.ndarray, audio: AudioRegion | None = None) -> np.ndarray:
        """Speaker activity (frames, speakers) bool at base frames for logmel (frames, n_mels): the model's slots
        when it stitches, the speakers found when it clusters (embedded by a pretrained encoder on the ``audio``
        when the run's pipeline says so, as ``diarize`` does)."""
        lm = _model(self.path, self.settings["checkpoint_xxh3"])
        # the pipeline of the settings recorded above (the same checkpoint file: the same settings)
        predict = predictor(lm.model, torch.device("cpu"), nullcontext())
        hears = audio is not None and lm.voices.needs_audio  # without the audio, recording() says what is missing
        with decoded(audio.path, audio.offset_s, audio.duration_s) if hears else nullcontext() as pcm:
            outputs, speech = lm.recording(predict, logmel, len(logmel), pcm)
        active = decide(outputs, lm.inference, lm.frame_shift_s, speech).activity
        return np.repeat(active, lm.config.downsample, axis=0)[: len(logmel)]


class PretrainedLabeler:
    """``features --pseudo-model pretrained``: pseudo labels from the pipeline that needs no trained model
    (:mod:`.pretrained`: Silero VAD, GE2E, clustering) on each recording's audio, at base frames. The labels
    key names the method, the pipeline's settings and the versions of the packages holding the weights."""

    def __init__(self, feature_config: dict):
        self.base_shift_s = feature_config["hop_length"] / feature_config["sample_rate"]
        self.settings = {"method": PRETRAINED_METHOD, **pretrained_settings().tuned_record(),
                         "weights": {name: version(name) for name in ("resemblyzer", "silero-vad")}}
        _pretrained()  # loaded here first: a missing package is one clear error before any work

    def describe(self) -> dict:
        return dict(self.settings)

    def __call__(self, logmel: np.ndarray, audio: AudioRegion | None = None) -> np.ndarray:
        """Speaker activity (frames, speakers) bool at the base frames of logmel (frames, n_mels), from the audio."""
        if audio is None:
            raise AgencerdasError("the pretrained pseudo-labeller hears the audio: it needs the recording's file")
        with decoded(audio.path, audio.offset_s, audio.duration_s) as pcm:
            activity = _pretrained().diarize_audio(pcm, len(pcm.samples) / RATE)[1].activity
        # each base frame takes the decision of the pipeline frame its start falls in
        index = np.minimum((np.arange(len(logmel)) * self.base_shift_s / FRAME_S).astype(np.int64), len(activity) - 1)
        return activity[index]


_PIPELINE: list[PretrainedDiarizer] = []  # loaded once per worker process


def _pretrained() -> PretrainedDiarizer:
    if not _PIPELINE:
        _PIPELINE.append(PretrainedDiarizer.load("cpu"))
    return _PIPELINE[0]
