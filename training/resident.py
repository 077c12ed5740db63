"""The train split held on the training device, with every batch built there by index arithmetic.

At GPU speed a step wants thousands of windows per second (an optimized window is 7,500 x 80
base frames, 1.2 MB of float16): per-window slicing, normalising and augmenting in loader
workers cannot feed that, and copying the windows to the device costs as much as the step.
The whole demo split is ~340 MB of float16 features, so when the split fits a budget it is
loaded once, packed into one tensor per array with per-recording offsets, and a batch is a
gather plus batched tensor operations: normalise, augment, pad and mask, downsample.

The batches equal those of :class:`training.data.WindowDataset` for the same windows (the
same :class:`~training.windows.WindowFormat` rules; augmentation drawn from the same
per-window seeds), within float rounding, so the epoch plan, resume and DDP sharding are
those of the streaming path.
"""

from __future__ import annotations

import numpy as np
import psutil
import torch
from tqdm.auto import tqdm

from agencerdas.stores import Store, ViewRecording
from agencerdas.stores.errors import AgencerdasError

from .augment import draw_arrays, stretch_rows, warp_matrix
from .data import SIMULATED, Window
from .conversations import FLOOR, SegmentBank
from .runtime import keep_freed_memory
from .transfer import to_device
from .identities import NO_IDENTITY, column_identities
from .windows import WindowFormat


def label_arrays(store: Store, recordings: list[ViewRecording]) -> list:
    """The labels array (Zarr, not read yet) of each of ``recordings``."""
    return [store.open("labels", rec.labels)["labels"] for rec in recordings]


def split_bytes(store: Store, recordings: list[ViewRecording], lengths: list[int], max_speakers: int) -> int:
    """Device bytes of ``recordings`` (capped to ``lengths`` base frames) as packed arrays:
    features as stored (float16 or float32), uint8 labels (as many columns as the most of any
    recording, at least ``max_speakers``) and a bool UEM mask per base frame."""
    if not recordings:
        return 0
    feats = store.open("features", recordings[0].features)["feats"]
    columns = max([max_speakers, *(a.shape[1] for a in label_arrays(store, recordings))])
    return sum(lengths) * (feats.dtype.itemsize * feats.shape[1] + columns + 1)


def budget_bytes(device: torch.device, fraction: float) -> int:
    """``fraction`` of the memory free now on ``device``: on CUDA what the driver has free plus what
    torch's caching allocator holds unused (reserved, not allocated), elsewhere the available RAM."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    else:
        free = psutil.virtual_memory().available
    return int(fraction * free)


def choose_resident(mode: str, needed: int, budget: int) -> tuple[bool, str]:
    """Whether the train split goes to the device (``DATA_ON_DEVICE`` = auto | true | false), and why."""
    fits = needed <= budget
    why = f"train split {needed / 2**20:.0f} MB, budget {budget / 2**20:.0f} MB"
    if mode == "false":
        return False, "streamed from the store (DATA_ON_DEVICE=false)"
    if mode == "true" and not fits:
        raise AgencerdasError(f"DATA_ON_DEVICE=true but the {why}; raise DATA_BUDGET (a fraction of free memory) "
                              "or use DATA_ON_DEVICE=auto to stream when it does not fit")
    if fits:
        return True, f"on the device ({why})"
    return False, f"streamed from the store: the {why} (DATA_BUDGET fraction of free memory)"


class ResidentWindows:
    """Packed train split on ``device``; :meth:`batch` turns planned windows into a training batch.

    Arrays: features (T, n_mels) float16, labels (T, C) uint8, scored (T,) bool, where T is the sum
    of the recordings' (capped) base frames and C the most label columns of any recording (at least
    max_speakers; fewer are padded with silent columns); recording i occupies rows
    ``[offsets[i], offsets[i] + lengths[i])``; ``identities`` (R, C) int64, the identity of each
    recording's columns (``identities`` per recording, :mod:`training.identities`; None: all -1).
    """

    def __init__(self, store: Store, recordings: list[ViewRecording], lengths: list[int],
                 scored: list[np.ndarray | None], fmt: WindowFormat, frames: int, pseudo_weight: float,
                 device: torch.device, progress: bool = True, bank: SegmentBank | None = None,
                 identities: list[np.ndarray] | None = None):
        if fmt.max_speakers is None:
            raise ValueError("a resident split needs the model's max_speakers")
        self.fmt, self.frames, self.device, self.bank = fmt, frames, device, bank
        if device.type == "cpu":  # every batch allocates and frees tensors of hundreds of MB
            keep_freed_memory()
        total = int(sum(lengths))
        first = store.open("features", recordings[0].features)["feats"]
        dtype = torch.float16 if first.dtype == np.float16 else torch.float32  # as stored: no rounding
        arrays = label_arrays(store, recordings)
        self.columns = max([fmt.max_speakers, *(a.shape[1] for a in arrays)])
        self.features = torch.empty(total, first.shape[1], dtype=dtype, device=device)
        self.labels = torch.zeros(total, self.columns, dtype=torch.uint8, device=device)
        self.scored = torch.ones(total, dtype=torch.bool, device=device)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        bar = tqdm(zip(recordings, arrays, lengths, offsets, scored), total=len(recordings), unit="rec",
                   desc=f"train split to {device.type}", disable=not progress, leave=False)
        for rec, array, n, at, inside in bar:  # one pass over the store
            feats = np.asarray(store.open("features", rec.features)["feats"][:n])
            self.features[at : at + n] = torch.from_numpy(feats).to(device)
            self.labels[at : at + n, : array.shape[1]] = torch.from_numpy(np.asarray(array[:n])).to(device)
            if inside is not None:
                self.scored[at : at + n] = torch.from_numpy(inside[:n]).to(device)
        table = identities or [None] * len(recordings)
        self.identities = torch.from_numpy(np.stack([column_identities(ids, self.columns) for ids in table])).to(device)
        self.offsets = torch.from_numpy(offsets).to(device)
        self.lengths = torch.tensor(lengths, dtype=torch.int64, device=device)
        self.host_lengths = list(lengths)  # to tell padded windows without a device round trip
        self.host_offsets = offsets  # simulated windows' gather recipes are built on the host
        self.weights = torch.tensor([pseudo_weight if r.pseudo else 1.0 for r in recordings], device=device)
        norm = fmt.normalizer
        self._scale = torch.from_numpy((1.0 / norm.std).astype(np.float32)).to(device)
        self._shift = torch.from_numpy((norm.mean / norm.std).astype(np.float32)).to(device)
        self._steps = torch.arange(frames, device=device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.features, self.labels, self.scored))

    def batch(self, windows: list[Window]) -> dict:
        """The training batch of ``windows`` ((recording, start in base frames[, augmentation seed])):
        ``feats`` (B, window, D) float32, ``labels`` (B, window, S) float32, ``mask`` (B, window) bool
        (frames the loss scores: inside the recording and its UEM, and no speaker the window leaves out
        active), ``valid`` (B, window) bool (frames inside the recording: the attention mask),
        ``weight`` (B,) and ``speakers`` (B, S) int64 (each label column's identity, -1: none or
        silent), at the model rate, as :class:`~training.data.WindowDataset` gives; ``padded`` (a
        Python bool) says whether any window runs past its recording, so the model needs ``valid``.

        Never waits for the device: what the host decides (positions, draws, layouts, which windows
        are simulated or padded) crosses in one copy, and device tensors are indexed only by device
        tensors.
        """
        host, flags = self._plan(windows)
        d = to_device(host, self.device)
        b, frames, n_mels = len(windows), self.frames, self.features.shape[1]
        rec = d["rec"]
        pos = d["start"][:, None] + self._steps[None]  # (B, frames) base frame within the recording
        length = self.lengths[rec][:, None]
        valid = pos < length
        rows = (self.offsets[rec][:, None] + torch.minimum(pos, length - 1)).reshape(-1)  # clamped inside
        if flags["simulated"]:  # real windows gathered, simulated ones mixed: no window is built twice
            x = torch.empty((b, frames, n_mels), device=self.device)
            if flags["real"]:
                real = rows.view(b, frames).index_select(0, d["real"]).reshape(-1)
                x.index_copy_(0, d["real"], self.features.index_select(0, real).view(-1, frames, n_mels).float())
            x.index_copy_(0, d["sim"], self._mixed(d, flags))
            valid = valid | d["simulated"][:, None]
        else:
            x = self.features.index_select(0, rows).view(b, frames, n_mels).float()
        if "keep" in d:
            # One pass: ((x @ warp + offset) * scale - shift) * keep, the masks and the normaliser
            # folded into the warp's columns (the masks zero bands after normalisation).
            column = self._scale[None] * d["keep"]
            bias = ((d["offset"] * self._scale - self._shift) * d["keep"])[:, None, :]
            if flags["warped"]:
                x = torch.baddbmm(bias, x, warp_matrix(d["alpha"], n_mels) * column[:, None, :])
            else:
                x = x.mul_(column[:, None, :]).add_(bias)
        else:
            x = x.mul_(self._scale).sub_(self._shift)
        if flags["padded"]:
            x.mul_(valid[..., None])  # padding is zero after normalisation, as cut_window pads
        ds = self.fmt.downsample
        groups = x.reshape(b, frames // ds, ds, n_mels)
        feats = groups.reshape(b, frames // ds, ds * n_mels) if self.fmt.pooling == "stack" else groups.mean(dim=2)
        labels = self.labels.index_select(0, rows).view(b, frames, -1) * valid[..., None]
        heard = _majority(labels, ds)
        mask = _majority((valid & self.scored.index_select(0, rows).view(b, frames))[..., None], ds)[..., 0]
        ids = self.identities.index_select(0, rec)
        if self.columns > self.fmt.max_speakers:  # some recording has more speakers than the model has outputs
            heard, ids, crowded = _keep_speakers(labels, heard, ids, self.fmt.max_speakers)
            mask &= ~crowded
        if flags["simulated"]:  # labels exactly from the layout; every frame scored
            heard.index_copy_(0, d["sim"], _majority(d["sim_labels"], ds))
            mask.index_fill_(0, d["sim"], True)
            ids.index_copy_(0, d["sim"], d["sim_ids"])
        return {
            "feats": feats,
            "labels": heard.float(),
            "mask": mask,
            "valid": _majority(valid[..., None], ds)[..., 0],
            "weight": torch.where(d["simulated"], 1.0, self.weights[rec]) if flags["simulated"] else self.weights[rec],
            "speakers": torch.where(heard.any(dim=1), ids, NO_IDENTITY),
            "padded": flags["padded"],
        }

    def _plan(self, windows: list[Window]) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
        """Everything the host decides about a batch, as arrays for :func:`~training.transfer.to_device`,
        and the flags that choose the device work (Python bools: never read back from the device)."""
        simulated = np.array([w[0] == SIMULATED for w in windows])
        # A simulated window stands in as recording 0 from frame 0 until its mixed rows replace it.
        host = {"rec": np.array([0 if s else w[0] for s, w in zip(simulated, windows)], dtype=np.int64),
                "start": np.array([0 if s else w[1] for s, w in zip(simulated, windows)], dtype=np.int64)}
        flags = {"simulated": bool(simulated.any()), "real": bool((~simulated).any()), "warped": False,
                 "padded": any(start + self.frames > self.host_lengths[r]
                               for r, start, s in zip(host["rec"], host["start"], simulated) if not s)}
        if flags["simulated"]:
            recipes = [self.bank.recipe(w[1], self.frames) for w in windows if w[0] == SIMULATED]
            host.update(simulated=simulated, real=np.flatnonzero(~simulated), sim=np.flatnonzero(simulated),
                        sim_labels=np.stack([r.labels(self.fmt.max_speakers) for r in recipes]),
                        sim_ids=np.stack([r.speakers(self.fmt.max_speakers) for r in recipes]),
                        **self._mix_plan(recipes, flags))
        if self.fmt.augment is not None and len(windows[0]) > 2:
            n_mels = self.features.shape[1]
            host.update(draw_arrays([self.fmt.augment.draw(np.random.default_rng(w[2]), n_mels) for w in windows],
                                    n_mels))
            flags["warped"] = bool((host["alpha"] != 1.0).any())
        return host, flags

    def _mix_plan(self, recipes: list, flags: dict[str, bool]) -> dict[str, np.ndarray]:
        """Where each simulated window's layers (background, then one per speaker) put which stored rows,
        with each row's gain (log-power units) and mel stretch, in layer order, and the frames no layer
        covers; sets the ``stretched``, ``gained`` and ``uncovered`` flags."""
        frames = self.frames
        runs = []  # (first position in the batch, first source row, frames, gain, stretch), layer by layer
        for layer in range(1 + self.fmt.max_speakers):
            for i, recipe in enumerate(recipes):
                if layer > len(recipe.slots):  # fewer speakers in this window than the model has outputs
                    continue
                gain, alpha = (0.0, 1.0) if layer == 0 else (float(recipe.gains[layer - 1]),
                                                              float(recipe.alphas[layer - 1]))
                runs += [(i * frames + dst, self.host_offsets[src_rec] + src, n, gain, alpha)
                         for dst, src_rec, src, n in (recipe.background if layer == 0 else recipe.slots[layer - 1])]
        first, source, length, gain, alpha = (np.asarray(column) for column in zip(*runs)) if runs else \
            (np.zeros(0, np.int64),) * 3 + (np.zeros(0),) * 2
        where = _spans(first.astype(np.int64), length.astype(np.int64))
        covered = np.zeros(len(recipes) * frames, dtype=bool)
        covered[where] = True
        flags.update(stretched=bool((alpha != 1.0).any()), gained=bool(gain.any()), uncovered=not covered.all())
        return {"mix_where": where, "mix_rows": _spans(source.astype(np.int64), length.astype(np.int64)),
                "mix_gain": np.repeat(gain.astype(np.float32), length), "mix_alpha": np.repeat(alpha.astype(np.float32), length),
                "uncovered": np.flatnonzero(~covered)}

    def _mixed(self, d: dict[str, torch.Tensor], flags: dict[str, bool]) -> torch.Tensor:
        """Raw log-mel (R, frames, n_mels) float32 of the R simulated windows planned by :meth:`_mix_plan`:
        every layer's rows (a speaker's turns, not the whole window) stretched and gained, then mixed in
        the power domain, log(e^a + e^b + ...), as :func:`training.conversations.render` mixes them on
        the host; frames no layer reached are silence at the log floor, as render() leaves them."""
        frames, n_mels = self.frames, self.features.shape[1]
        values = self.features.index_select(0, d["mix_rows"]).float()
        if flags["stretched"]:  # each speaker's own voice warp
            values = stretch_rows(values, d["mix_alpha"])
        if flags["gained"]:
            values += d["mix_gain"][:, None]
        power = torch.zeros((len(d["sim"]) * frames, n_mels), device=self.device)
        x = power.index_add_(0, d["mix_where"], values.exp_()).log_()  # sources add in power
        if flags["uncovered"]:
            x.index_fill_(0, d["uncovered"], FLOOR)
        return x.view(-1, frames, n_mels)


def _spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The integers of the runs [starts[r], starts[r] + lengths[r]), concatenated (int64)."""
    firsts = np.cumsum(lengths) - lengths
    return np.repeat(starts - firsts, lengths) + np.arange(int(lengths.sum()))


def _keep_speakers(labels: torch.Tensor, heard: torch.Tensor, ids: torch.Tensor,
                   speakers: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The window rule of :meth:`~training.windows.WindowFormat.labels` on the device, for every window
    at once: of the C columns of base-rate ``labels`` (B, frames, C) uint8, keep the ``speakers`` with
    the most active base frames (ties: the lower column), in column order. Returns their model-rate
    ``heard`` (B, n, speakers) bool and identities ``ids`` (B, speakers), and (B, n) bool the model
    frames where a column left out is heard. topk and gather only: nothing is read back."""
    b, _, c = labels.shape
    counts = labels.sum(dim=1, dtype=torch.int64)
    # one distinct key per column: more active first, then the lower column
    key = counts * c + torch.arange(c - 1, -1, -1, device=labels.device)
    keep = key.topk(speakers, dim=1).indices.sort(dim=1).values
    left_out = torch.ones(b, c, dtype=torch.bool, device=labels.device).scatter_(1, keep, False)
    crowded = (heard & left_out[:, None, :]).any(dim=2)
    return heard.gather(2, keep[:, None, :].expand(-1, heard.shape[1], -1)), ids.gather(1, keep), crowded


def _majority(y: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, frames, C) 0/1 → (B, frames // factor, C) bool: on when on in at least half of a group
    (the rule of ``stores.downsample_labels``)."""
    b, frames, c = y.shape
    n = frames // factor
    groups = y[:, : n * factor].reshape(b, n, factor, c).sum(dim=2, dtype=torch.int32)
    return 2 * groups >= factor


class ResidentLoader:
    """The epoch plan's batches built by a :class:`ResidentWindows`: what the loop iterates instead of
    a DataLoader (no workers; one host-to-device copy of indices and draws per batch)."""

    def __init__(self, plan, windows: ResidentWindows):
        self.plan, self.windows = plan, windows

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        for batch in self.plan:
            yield self.windows.batch(batch)
