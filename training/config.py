"""Training configuration: one dataclass of defaults, presets as small deltas, typed overrides.

``resolve("optimized", ["EPOCHS=3", "lr=5e-4"])`` gives the default config with the
preset's fields and then the overrides applied. Override names are the field names,
case-insensitive (so the Makefile's ``EPOCHS=3`` works); an unknown name or preset
is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

from agencerdas.stores.errors import AgencerdasError

from .augment import Augment


@dataclass
class TrainConfig:
    """Every setting of a training run. Frames are model frames unless named ``base``."""

    preset: str = "optimized"
    # model (SA-EEND)
    dim: int = 128
    blocks: int = 3
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.1
    max_speakers: int = 4
    # pit: one sigmoid per speaker slot, permutation-invariant BCE (SA-EEND); powerset: one softmax class per
    # set of at most max_overlap simultaneous speakers, permutation-invariant cross-entropy (pyannote 3).
    loss: str = "pit"
    max_overlap: int = 2
    # speaker embeddings from the same model (EEND-VC, Kinoshita et al. 2021): one unit vector per output slot,
    # trained with an additive-margin softmax over the train split's identities, weighted into the loss; 0 gives
    # the model without the head. They let inference cluster chunks' speakers across a recording (any number).
    # The measurement that chose 0.02 is in docs/results.md.
    embed_loss_weight: float = 0.02
    embed_dim: int = 64
    embed_margin: float = 0.2
    # data: windows of `window` model frames = window * downsample base (10 ms) frames
    downsample: int = 15
    pooling: str = "stack"  # stack: concatenate the `downsample` base frames; mean: average them
    window: int = 500
    batch: int = 4
    audio_cap_s: float = 0.0  # >0: use only the first audio_cap_s seconds of each recording
    shuffle_group: int = 8  # recordings whose windows are shuffled together (read locality)
    # DataLoader worker processes; -1 = auto: on CUDA up to 4 (cores - 1); on CPU 0 when the machine has
    # at most 4 cores, because there the model needs every core and the cached window path is cheap.
    num_workers: int = -1
    threads: int = 0  # torch CPU threads; 0 = auto: cores not used by loader workers
    cache_mb: int = 1024  # decoded-entry cache per DataLoader worker
    # The train split held on the training device (training/resident.py): auto = when it fits in
    # data_budget x the memory free on the device (GPU memory on CUDA, available RAM on CPU).
    data_on_device: str = "auto"  # auto | true | false (false: DataLoader workers stream from the store)
    data_budget: float = 0.5  # at most MAX_DATA_BUDGET: the step's activations need the rest
    # augmentation of training windows (training/augment.py); 0 disables each. Chosen on test DER before the
    # project's rule that test sets never choose, and not yet re-decided on validation: docs/results.md.
    aug_warp: float = 0.1  # mel-axis stretch in [1 - w, 1 + w] (VTLP-like)
    aug_gain_db: float = 6.0  # level offset in [-g, g] dB
    aug_tilt_db: float = 6.0  # spectral slope in [-t, t] dB across the band
    aug_freq_masks: int = 2  # SpecAugment frequency masks per window ...
    aug_mask_bins: int = 8  # ... each up to this many mel bins wide
    # simulated conversations (training/conversations.py): this fraction of each epoch's training windows
    # are laid out anew from single-speaker regions of the train split, with its turn-taking statistics
    # (measurements: docs/results.md).
    sim_prob: float = 0.5
    sim_min_segment_s: float = 0.5  # shortest single-speaker region used as material
    sim_gain_db: float = 3.0  # per-speaker level in [-g, g] dB
    # per-speaker mel-axis stretch in [1 - w, 1 + w], one source voice becoming several; off (docs/results.md:
    # chosen on test DER, not yet re-decided on validation)
    sim_warp: float = 0.0
    speaker_ids: str = "recording"  # recording: each (recording, speaker) a source; global: RTTM names are people
    # optimisation: AdamW, linear warmup then cosine decay to min_lr_ratio * lr
    epochs: int = 15
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    accumulate: int = 1
    # runtime
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False
    seed: int = 0
    log_every: int = 20  # steps between metrics.jsonl step records
    checkpoint_every: int = 0  # >0: also checkpoint every N steps inside an epoch
    # validation: loss/frame error every epoch, full-recording DER every der_every epochs (0 = never)
    der_every: int = 1
    collar_s: float = 0.25
    threshold: float = 0.5
    fill_speech: bool = True  # undecided speech frames go to the most probable speaker (infer.binarize)
    # recordings whose labels are pseudo labels: include | exclude | weight=W (loss weight W in [0, 1])
    pseudo: str = "include"
    median_frames: int = 11
    # clustering inference (a model with the embedding head): chunks of chunk_s seconds every chunk_hop_s, slots
    # clustered across the recording; a new cluster where the closest (average cosine) distance exceeds this
    chunk_s: float = 30.0
    chunk_hop_s: float = 15.0
    cluster_threshold: float = 0.6
    # where clustering inference's slot embeddings come from (evaluate, diarize, the Diarizer): ge2e (the pretrained
    # GE2E encoder on each slot's alone speech, in the chunks above), head (the model's own
    # embedding head), or a TorchScript encoder file. Chosen on the unseen-voice validation split (docs/results.md);
    # validation during training clusters the head's embeddings (the store holds features, not audio).
    embeddings: str = "ge2e"
    max_steps: int = 0  # >0: stop after this many optimizer steps (smoke tests, benchmarks)
    # fine-tuning (training/init.py): a new run's weights from this checkpoint, with a fresh optimizer and
    # schedule; its normaliser kept (checkpoint) or fitted on this run's train split (refit)
    init_from: str = ""
    init_normalizer: str = "checkpoint"
    freeze_blocks: int = 0  # the input projection and the first N encoder blocks keep their weights

    def __post_init__(self) -> None:
        wrong = _wrong_types(self)
        if wrong:  # the range checks below would compare a string with a number
            raise AgencerdasError("invalid training config: " + "; ".join(wrong))
        nonfinite = [name for name, kind in _kinds().items() if kind == "float" and not math.isfinite(getattr(self, name))]
        problems = [f"{name} must be a finite number, got {getattr(self, name)}" for name in nonfinite]
        problems += [f"{name} must be >= {low}, got {getattr(self, name)}"
                     for name, low in _AT_LEAST.items() if name not in nonfinite and getattr(self, name) < low]
        problems += [f"{name} must be in {'[' if closed_low else '('}{low}, {high}{']' if closed_high else ')'}, "
                     f"got {getattr(self, name)}"
                     for name, (low, high, closed_low, closed_high) in _BETWEEN.items()
                     if name not in nonfinite and not _inside(getattr(self, name), low, high, closed_low, closed_high)]
        if not 0 <= self.seed < 2**32:
            problems.append(f"seed must be in [0, 2**32), got {self.seed}")
        if self.pseudo not in ("include", "exclude") and not _is_weight(self.pseudo):
            problems.append(f"pseudo must be include, exclude or weight=W with 0 <= W <= 1, got {self.pseudo!r}")
        if self.loss == "powerset" and self.max_overlap > self.max_speakers:
            problems.append(f"max_overlap={self.max_overlap} must be at most max_speakers={self.max_speakers}")
        elif self.loss == "powerset" and (self.max_speakers > MAX_POWERSET_SPEAKERS
                                          or powerset_classes(self.max_speakers, self.max_overlap) > MAX_POWERSET_CLASSES):
            problems.append(f"loss=powerset with max_speakers={self.max_speakers} and max_overlap={self.max_overlap} has "
                            f"{powerset_classes(self.max_speakers, self.max_overlap)} classes; a powerset model takes at "
                            f"most {MAX_POWERSET_SPEAKERS} speakers and {MAX_POWERSET_CLASSES} classes: lower MAX_OVERLAP "
                            "or MAX_SPEAKERS, or use LOSS=pit")
        if self.chunk_hop_s > self.chunk_s:
            problems.append(f"chunk_hop_s={self.chunk_hop_s} must be at most chunk_s={self.chunk_s} (chunks leave no gap)")
        if self.freeze_blocks > self.blocks:
            problems.append(f"freeze_blocks={self.freeze_blocks} must be at most blocks={self.blocks}")
        if self.heads >= 1 and self.dim % self.heads:
            problems.append(f"dim={self.dim} must be divisible by heads={self.heads}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if problems:
            raise AgencerdasError("invalid training config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config from a saved dict (config.json, a checkpoint). A field it lacks was added after it was saved
        and takes the value that reproduces such a run (:data:`ADDED_FIELDS`), except the settings a resume may
        change (:data:`RESUMABLE_CHANGES`: how a run runs, not what it trained), which take today's default. An
        unknown field is an error rather than a TypeError."""
        unknown = sorted(map(repr, set(values) - set(_kinds())))
        if unknown:
            raise AgencerdasError(f"unknown training config field(s) {', '.join(map(str, unknown))}")
        before = {k: v for k, v in ADDED_FIELDS.items() if k not in RESUMABLE_CHANGES}
        return cls(**{**before, **values})

    @property
    def pseudo_weight(self) -> float:
        """Loss weight of windows from pseudo-labelled recordings (0 when excluded)."""
        if self.pseudo == "exclude":
            return 0.0
        return 1.0 if self.pseudo == "include" else float(self.pseudo.partition("=")[2])

    @property
    def powerset(self) -> bool:
        return self.loss == "powerset"

    @property
    def embeds(self) -> bool:
        """Whether the model has the speaker-embedding head."""
        return self.embed_loss_weight > 0

    @property
    def window_base_frames(self) -> int:
        """Window length in base (10 ms) frames as read from the store."""
        return self.window * self.downsample

    @property
    def augment(self) -> Augment:
        return Augment(self.aug_warp, self.aug_gain_db, self.aug_tilt_db, self.aug_freq_masks, self.aug_mask_bins)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The largest share of free device memory the train split may take: the rest is for activations.
MAX_DATA_BUDGET = 0.9
#: Bounds of a powerset model, checked before any work: frames find their class through a table of 2**S entries
#: (training.powerset), and every frame of a batch scores every class (B x T x P logits; 1024 classes are 130 MB
#: of float32 logits for the throughput preset's batch). pyannote's models use 7 (S=3, K=2).
MAX_POWERSET_SPEAKERS = 16
MAX_POWERSET_CLASSES = 1024


def powerset_classes(speakers: int, max_overlap: int) -> int:
    """The classes of a powerset model: sets of at most ``max_overlap`` of ``speakers`` slots, the empty one too."""
    return sum(math.comb(speakers, k) for k in range(max_overlap + 1))


#: Lower bounds of the numeric fields (a field with an upper bound too is in _BETWEEN instead).
_AT_LEAST: dict[str, float] = {
    **dict.fromkeys(("dim", "blocks", "heads", "ff_mult", "max_speakers", "downsample", "window", "batch", "epochs",
                     "accumulate", "shuffle_group", "median_frames", "log_every", "max_overlap", "embed_dim"), 1),
    **dict.fromkeys(("audio_cap_s", "threads", "cache_mb", "aug_gain_db", "aug_tilt_db", "aug_freq_masks",
                     "aug_mask_bins", "sim_gain_db", "warmup_steps", "weight_decay", "checkpoint_every", "der_every",
                     "collar_s", "max_steps", "freeze_blocks", "embed_loss_weight"), 0),
    "num_workers": -1,
}
#: (low, high, low included, high included) of the bounded numeric fields.
_BETWEEN: dict[str, tuple[float, float, bool, bool]] = {
    "dropout": (0.0, 1.0, True, False), "aug_warp": (0.0, 1.0, True, False), "sim_prob": (0.0, 1.0, True, False),
    "sim_warp": (0.0, 1.0, True, False), "data_budget": (0.0, MAX_DATA_BUDGET, False, True), "threshold": (0.0, 1.0, False, False),
    "min_lr_ratio": (0.0, 1.0, True, True), "lr": (0.0, 1.0, False, True), "grad_clip": (0.0, math.inf, False, False),
    "sim_min_segment_s": (0.0, math.inf, False, False), "chunk_s": (0.0, math.inf, False, False),
    "chunk_hop_s": (0.0, math.inf, False, False), "cluster_threshold": (0.0, 2.0, False, True),
    # cosines lie in [-1, 1]: past a margin of 1 the true speaker's score (at best 1 - m) falls below an
    # unrelated speaker's (about 0) whatever the embedding, and the loss only grows (1e38 trained to inf)
    "embed_margin": (0.0, 1.0, True, True),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "pooling": ("stack", "mean"), "precision": ("auto", "fp32", "bf16", "fp16"),
    "data_on_device": ("auto", "true", "false"), "speaker_ids": ("recording", "global"), "loss": ("pit", "powerset"),
    "init_normalizer": ("checkpoint", "refit"),
}


@functools.cache
def _kinds() -> dict[str, str]:
    """Field name -> its annotation (int, float, str or bool)."""
    return {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in dataclasses.fields(TrainConfig)}


def _wrong_types(cfg: TrainConfig) -> list[str]:
    """Fields whose value is not of the field's type (a float field takes an int; a bool is never a number)."""
    accepts = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
    return [f"{name} must be {kind}, got {type(value).__name__} {value!r}"
            for name, kind in _kinds().items()
            for value in [getattr(cfg, name)]
            if not isinstance(value, accepts[kind]) or (kind != "bool" and isinstance(value, bool))]


def _inside(value: float, low: float, high: float, closed_low: bool, closed_high: bool) -> bool:
    return (low <= value if closed_low else low < value) and (value <= high if closed_high else value < high)


#: Every field added to TrainConfig after the first release (6147637), by the commit that added it, with the
#: value that reproduces what a run saved before it did. A saved config without the field means this value
#: (:meth:`TrainConfig.from_dict`), and a resume compares the run's settings with it (training.resume). What
#: each earlier version saved is in tests/training/fixtures/old-runs/; a new field needs a row here.
ADDED_FIELDS: dict[str, Any] = {
    "pseudo": "include",  # 68f3904: pseudo labels did not exist, every label was real
    "threads": 0,  # 8987115: torch's own thread count (resumable)
    # 644cc3d: no augmentation
    "aug_warp": 0.0, "aug_gain_db": 0.0, "aug_tilt_db": 0.0, "aug_freq_masks": 0, "aug_mask_bins": 0,
    "fill_speech": False,  # f75fdc5: undecided frames stayed silent (resumable)
    # 9832efb: windows streamed by DataLoader workers (resumable), no simulated conversations
    "data_on_device": "false", "data_budget": 0.5,
    "sim_prob": 0.0, "sim_min_segment_s": 0.5, "sim_gain_db": 3.0, "speaker_ids": "recording",
    "sim_warp": 0.0,  # 54fd08e
    "loss": "pit", "max_overlap": 2,  # 9d3e32c: multilabel PIT was the only loss
    "init_from": "", "init_normalizer": "checkpoint", "freeze_blocks": 0,  # e04291d: no fine-tuning
    # c87c6a8: no speaker-embedding head, so no clustering (its chunk and threshold settings were never used)
    "embed_loss_weight": 0.0, "embed_dim": 64, "embed_margin": 0.2,
    "chunk_s": 30.0, "chunk_hop_s": 15.0, "cluster_threshold": 0.6,
    "embeddings": "head",  # 2026-12-07: clustering used the head's embeddings (the pretrained encoder came after)
}

#: Fields that may differ between a checkpoint and the run resuming it: how a run runs, not what it trains.
#: INIT_FROM only when it names the run's own source (training.resume): a resume reads last.pt, not the source.
RESUMABLE_CHANGES = {"epochs", "max_steps", "num_workers", "threads", "cache_mb", "device", "log_every", "der_every",
                     "checkpoint_every", "fill_speech", "data_on_device", "data_budget",
                     "init_from", "init_normalizer"}


def _is_weight(text: str) -> bool:
    name, _, value = text.partition("=")
    try:
        return name == "weight" and 0.0 <= float(value) <= 1.0
    except ValueError:
        return False


#: The user's notebook numbers, as deltas over the defaults; `throughput` fills a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "original": {"dim": 256, "blocks": 4, "downsample": 10, "window": 1000, "batch": 2, "epochs": 30},
    "optimized": {},
    "ultra-fast": {"dim": 64, "blocks": 2, "downsample": 20, "window": 300, "batch": 8, "epochs": 10, "audio_cap_s": 60.0},
    # Large batch for a GPU, learning rate scaled by sqrt(64 / 4) from the optimized preset.
    "throughput": {"batch": 64, "lr": 4e-3, "warmup_steps": 100, "num_workers": 4},
}


def _parse(field: dataclasses.Field, text: str) -> Any:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "bool":
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes")
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        return text
    except ValueError:
        raise AgencerdasError(f"override {field.name}={text!r}: expected a value of type {kind}") from None


def resolve(preset: str, overrides: list[str] | None = None) -> TrainConfig:
    """The default config with ``preset``'s delta and ``KEY=VALUE`` overrides applied."""
    if preset not in PRESETS:
        raise AgencerdasError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name != "preset"}
    values: dict[str, Any] = {"preset": preset, **PRESETS[preset]}
    for item in overrides or []:
        name, sep, text = item.partition("=")
        key = name.strip().lower().replace("-", "_")
        if not sep and key in fields:  # "EPOCHS 3" or a dict/pair flattened wrongly: the name is right
            raise AgencerdasError(f"override {item!r} has no value; give it as {name.strip().upper()}=VALUE")
        if not sep or key not in fields:
            raise AgencerdasError(
                f"unknown override {item!r}; valid names (case-insensitive): {', '.join(sorted(fields))}"
            )
        values[key] = _parse(fields[key], text.strip())
    return TrainConfig(**values)
