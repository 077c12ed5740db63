"""Training configuration: one dataclass of defaults, presets as small deltas, typed overrides.

``resolve("optimized", ["EPOCHS=3", "lr=5e-4"])`` gives the default config with the
preset's fields and then the overrides applied. Override names are the field names,
case-insensitive (so the Makefile's ``EPOCHS=3`` works); an unknown name or preset
is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from stores.errors import AgencerdasError

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
    data_budget: float = 0.5
    # augmentation of training windows (training/augment.py); 0 disables each. On the demo's unseen
    # test voices these defaults cut DER from 26.4% to 23.1% / 24.1% (two seeds), see the README.
    aug_warp: float = 0.1  # mel-axis stretch in [1 - w, 1 + w] (VTLP-like)
    aug_gain_db: float = 6.0  # level offset in [-g, g] dB
    aug_tilt_db: float = 6.0  # spectral slope in [-t, t] dB across the band
    aug_freq_masks: int = 2  # SpecAugment frequency masks per window ...
    aug_mask_bins: int = 8  # ... each up to this many mel bins wide
    # simulated conversations (training/conversations.py): this fraction of each epoch's training windows
    # are laid out anew from single-speaker regions of the train split, with its turn-taking statistics.
    # 0.5 on the demo corpus (optimized, 2 seeds): validation DER 22.5/16.0% -> 18.3/13.7%, test DER on
    # unseen voices unchanged within seed noise (23.1/24.1% -> 23.2/24.6%); see the README.
    sim_prob: float = 0.5
    sim_min_segment_s: float = 0.5  # shortest single-speaker region used as material
    sim_gain_db: float = 3.0  # per-speaker level in [-g, g] dB
    # per-speaker mel-axis stretch in [1 - w, 1 + w], one source voice becoming several; off: 0.1 on the demo
    # corpus (2 seeds) moved test DER 23.2/24.6% -> 25.0/25.5% and validation 18.3/13.7% -> 17.1/18.0%
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
    max_steps: int = 0  # >0: stop after this many optimizer steps (smoke tests, benchmarks)

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)}"
            for name in ("dim", "blocks", "heads", "ff_mult", "max_speakers", "downsample", "window", "batch", "epochs",
                         "accumulate", "shuffle_group", "median_frames")
            if getattr(self, name) < 1
        ]
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pseudo not in ("include", "exclude") and not _is_weight(self.pseudo):
            problems.append(f"pseudo must be include, exclude or weight=W with 0 <= W <= 1, got {self.pseudo!r}")
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold must be in (0, 1), got {self.threshold}")
        if self.heads >= 1 and self.dim % self.heads:
            problems.append(f"dim={self.dim} must be divisible by heads={self.heads}")
        if self.pooling not in ("stack", "mean"):
            problems.append(f"pooling must be 'stack' or 'mean', got {self.pooling!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.lr <= 0 or self.num_workers < -1 or self.cache_mb < 0 or self.threads < 0:
            problems.append("lr must be > 0; num_workers >= -1 (-1 = auto); cache_mb and threads >= 0")
        if not 0.0 <= self.aug_warp < 1.0:
            problems.append(f"aug_warp must be in [0, 1), got {self.aug_warp}")
        if self.data_on_device not in ("auto", "true", "false") or not 0.0 < self.data_budget <= 1.0:
            problems.append(f"data_on_device must be auto, true or false (got {self.data_on_device!r}) and "
                            f"data_budget in (0, 1] (got {self.data_budget})")
        if not 0.0 <= self.sim_prob < 1.0 or self.sim_min_segment_s <= 0 or self.sim_gain_db < 0:
            problems.append(f"sim_prob must be in [0, 1) (got {self.sim_prob}), sim_min_segment_s > 0, sim_gain_db >= 0")
        if not 0.0 <= self.sim_warp < 1.0:
            problems.append(f"sim_warp must be in [0, 1), got {self.sim_warp}")
        if self.speaker_ids not in ("recording", "global"):
            problems.append(f"speaker_ids must be 'recording' or 'global', got {self.speaker_ids!r}")
        if min(self.aug_gain_db, self.aug_tilt_db, self.aug_freq_masks, self.aug_mask_bins) < 0:
            problems.append("aug_gain_db, aug_tilt_db, aug_freq_masks and aug_mask_bins must be >= 0")
        if problems:
            raise AgencerdasError("invalid training config: " + "; ".join(problems))

    @property
    def pseudo_weight(self) -> float:
        """Loss weight of windows from pseudo-labelled recordings (0 when excluded)."""
        if self.pseudo == "exclude":
            return 0.0
        return 1.0 if self.pseudo == "include" else float(self.pseudo.partition("=")[2])

    @property
    def window_base_frames(self) -> int:
        """Window length in base (10 ms) frames as read from the store."""
        return self.window * self.downsample

    @property
    def augment(self) -> Augment:
        return Augment(self.aug_warp, self.aug_gain_db, self.aug_tilt_db, self.aug_freq_masks, self.aug_mask_bins)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Fields added after checkpoints were first written, with the values that reproduce what runs saved
#: before them did (no augmentation), so such a run resumes when given those values.
ADDED_FIELDS = {"aug_warp": 0.0, "aug_gain_db": 0.0, "aug_tilt_db": 0.0, "aug_freq_masks": 0, "aug_mask_bins": 0,
                "fill_speech": False, "sim_prob": 0.0, "sim_min_segment_s": 0.5, "sim_gain_db": 3.0, "sim_warp": 0.0,
                "speaker_ids": "recording"}


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
        if not sep or key not in fields:
            raise AgencerdasError(
                f"unknown override {item!r}; valid names (case-insensitive): {', '.join(sorted(fields))}"
            )
        values[key] = _parse(fields[key], text.strip())
    return TrainConfig(**values)
