"""What a resumed run must share with the checkpoint it continues, and the errors that say what differs.

A resume is exact only on the same data with the same settings: the features, the
view's entries, every field outside :data:`RESUMABLE_CHANGES`, the criterion that picks
``best.pt``, and for a checkpoint saved inside an epoch the number of processes.
"""

from __future__ import annotations

import os
import shlex

from agencerdas.stores.errors import AgencerdasError

from .config import ADDED_FIELDS, RESUMABLE_CHANGES, TrainConfig


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
    _check_source(cfg, ckpt["config"].get("init_from", ""))
    saved = {**ADDED_FIELDS, **ckpt["config"]}  # a field saved before it existed has the value of that time
    unknown = sorted(set(cfg.to_dict()) - set(saved))
    if unknown:  # a field added without a row in ADDED_FIELDS: nothing says what the old run did
        raise AgencerdasError(f"the checkpoint was saved before the setting(s) {', '.join(unknown)} existed, and "
                              "this version records no value that reproduces such a run; start a new run, or "
                              "fine-tune from it with INIT_FROM")
    changed = {k for k, v in cfg.to_dict().items() if saved[k] != v and k not in RESUMABLE_CHANGES}
    picked = ckpt.get("best_criterion", criterion)
    if picked != criterion and saved["der_every"] != cfg.der_every:  # one remedy names every setting to give
        changed.add("der_every")
    if changed:
        changed = sorted(changed)
        older = [k for k in changed if k not in ckpt["config"]]  # a run saved before these fields existed
        raise AgencerdasError(
            f"cannot resume with changed settings {', '.join(changed)} "
            f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change"
            + (f"; DER_EVERY={cfg.der_every} would pick best.pt by {criterion}, this run picks it by {picked}"
               if "der_every" in changed else "")
            + (f"; {', '.join(older)} did not exist when this run was saved" if older else "")
            + f"); resume it with {' '.join(f'{k.upper()}={shlex.quote(str(saved[k]))}' for k in changed)} "
            "(the settings it was trained with), or start a new run in another --out"
        )
    if picked != criterion:  # not DER_EVERY's doing: the view gained or lost its validation split
        raise AgencerdasError(
            f"this run picks best.pt by {picked}, but on view {data.view_name!r} it would pick it by {criterion} "
            f"(the view {'has no' if criterion == 'last' else 'now has a'} validation split); resume it on a view "
            "split as the run started, or start a new run"
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


def _check_source(cfg: TrainConfig, source: str) -> None:
    """A resume continues last.pt and never reads INIT_FROM: it may only repeat the run's own source."""
    if cfg.init_from and not (source and os.path.abspath(cfg.init_from) == os.path.abspath(source)):
        began = f"was initialised from {source}" if source else "started from random weights"
        raise AgencerdasError(
            f"--resume continues the run from its last.pt and never reads INIT_FROM, so INIT_FROM={cfg.init_from} "
            f"would be recorded without being used (this run {began}); drop --init-from/INIT_FROM to resume, or "
            "fine-tune from it as a new run in another --out"
        )
