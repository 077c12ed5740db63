"""What a resumed run must share with the checkpoint it continues, and the errors that say what differs.

A resume is exact only on the same data with the same settings: the features, the
view's entries, every field outside :data:`RESUMABLE_CHANGES`, the criterion that picks
``best.pt``, and for a checkpoint saved inside an epoch the number of processes.
"""

from __future__ import annotations

from agencerdas.stores.errors import AgencerdasError

from .config import ADDED_FIELDS, TrainConfig

#: Fields that may differ between a checkpoint and the run resuming it.
RESUMABLE_CHANGES = {"epochs", "max_steps", "num_workers", "threads", "cache_mb", "device", "log_every", "der_every",
                     "checkpoint_every", "fill_speech", "data_on_device", "data_budget",
                     "init_from", "init_normalizer"}  # a resume takes the weights from last.pt, not the source


def check_resume(cfg: TrainConfig, ckpt: dict, data, world: int, criterion: str, allow_view_change: bool) -> None:
    """Raise AgencerdasError when the run ``cfg`` on ``data`` (a ``training.inputs.Data``) cannot continue ``ckpt``."""
    if ckpt["feature_config"] != data.feature_config:
        raise AgencerdasError(
            f"view {data.view_name!r} was built with feature config {data.feature_config}, but the checkpoint was "
            f"trained on {ckpt['feature_config']}; resume on a view with the same features or start a new run"
        )
    if ckpt.get("view_fingerprint") != data.fingerprint and not allow_view_change:
        raise AgencerdasError(
            f"view {data.view_name!r} changed since the checkpoint was saved ({view_changes(ckpt, data.entries)}), so "
            "the resumed run would train on other data than the run it continues; start a new run, or pass "
            "--resume-on-changed-view to continue on the new view anyway"
        )
    saved = {**ADDED_FIELDS, **ckpt["config"]}
    changed = sorted(k for k, v in cfg.to_dict().items() if saved.get(k) != v and k not in RESUMABLE_CHANGES)
    if changed:
        older = [k for k in changed if k not in ckpt["config"]]  # a run saved before these fields existed
        remedy = (f"resume it with {' '.join(f'{k.upper()}={saved[k]}' for k in older)}" if older == changed
                  else "start a new run in another --out")
        raise AgencerdasError(
            f"cannot resume with changed settings {', '.join(changed)} "
            f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change); {remedy}"
        )
    if ckpt.get("best_criterion", criterion) != criterion:
        raise AgencerdasError(
            f"this run picks best.pt by {ckpt['best_criterion']}, but with these settings it would pick it by "
            f"{criterion} (DER_EVERY=0 computes no DER); keep DER_EVERY as the run started, or start a new run"
        )
    # A mid-epoch position counts batches of one rank's share of the epoch, which depends on the world size.
    if ckpt["batch_in_epoch"] and ckpt.get("world", 1) != world:
        raise AgencerdasError(
            f"the checkpoint stopped inside an epoch with {ckpt.get('world', 1)} process(es); resume it with the "
            f"same number of processes (this run has {world}), or from an end-of-epoch checkpoint"
        )


def view_changes(ckpt: dict, entries: dict[str, list[str]]) -> str:
    """What differs between the view entries saved in ``ckpt`` and ``entries`` (recording id -> keys)."""
    saved = ckpt.get("view_entries")
    if saved is None:  # a checkpoint from before the entries were saved: only the fingerprint is known
        return "its fingerprint differs"
    added = sorted(set(entries) - set(saved))
    removed = sorted(set(saved) - set(entries))
    edited = sorted(r for r in set(saved) & set(entries) if list(saved[r]) != list(entries[r]))
    parts = [f"{len(ids)} recording(s) {what}: {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}"
             for ids, what in ((added, "added"), (removed, "removed"), (edited, "with other features or labels"))
             if ids]
    return "; ".join(parts) or "its fingerprint differs"


def best_criterion(cfg: TrainConfig, has_validation: bool) -> str:
    """What picks ``best.pt``, one criterion for the whole run: the lowest validation DER when DER is
    computed, else the lowest validation loss; without a validation split, the last epoch."""
    if not has_validation:
        return "last"
    return "val_der" if cfg.der_every > 0 else "val_loss"
