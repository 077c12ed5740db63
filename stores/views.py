"""Dataset views: small JSON manifests naming the entries that form one training set.

A view says *what* a corpus is (recording id → features key, labels key, frames,
duration, speakers) and how it splits into train / validation; the store says
*where* the bytes live. Several experiments, presets and machines share one
store through their own views.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import xxhash

from .errors import AgencerdasError
from .keys import content_key
from .store import Store
from .voice_split import voice_validation

VIEW_VERSION = 1
#: What a seeded split may draw (:attr:`DatasetView.split_by`).
SPLIT_BY = ("recordings", "voices")


@dataclass
class ViewRecording:
    """One recording of a view. ``frames`` are base-rate feature frames."""

    features: str
    labels: str | None
    frames: int
    duration_s: float
    speakers: list[str] = field(default_factory=list)
    pseudo: bool = False
    source: str = ""
    #: Speakers of its labels entry (annotated ones, or pseudo clusters that speak); None for a recording
    #: without labels, and in views written before the count was recorded (then ``len(speakers)``).
    n_speakers: int | None = None
    #: Where the recording starts in its file (seconds) when the corpus describes a region of a longer file;
    #: None: the whole file. ``duration_s`` is then the region's length.
    offset_s: float | None = None
    #: The part the corpus declares it in (``train``, ``validation`` or ``test``); None: the seeded split decides.
    split: str | None = None

    @property
    def speaker_count(self) -> int:
        """Speakers of its labels (0 without labels)."""
        return self.n_speakers if self.n_speakers is not None else len(self.speakers)


def speakers_per_recording(recordings) -> dict[int, int]:
    """Speakers in a recording -> recordings, over the annotated ones of ``recordings`` (ViewRecording;
    pseudo-labelled and unlabelled ones left out: their count is a guess or unknown)."""
    counts: dict[int, int] = {}
    for rec in recordings:
        if rec.labels and not rec.pseudo:
            counts[rec.speaker_count] = counts.get(rec.speaker_count, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class DatasetView:
    """Recordings of one corpus and their deterministic train/validation split."""

    name: str
    recordings: dict[str, ViewRecording]
    feature_config: dict[str, Any]
    label_config: dict[str, Any]
    validation_fraction: float = 0.1
    split_seed: int = 0
    created_at: float = field(default_factory=time.time)
    #: Who wrote it: ``train`` (`agencerdas features`) or ``evaluate`` (a scored audio directory). A view is
    #: only ever replaced by a run of the same purpose, so evaluating never overwrites a training view.
    purpose: str = "train"
    #: How the split ranks recordings: 2 (views written from now on) ranks only recordings with reference
    #: labels; 1 (views written before) ranked every recording that is not pseudo-labelled. A view keeps
    #: the rule it was written with, so reading it never moves a recording between train and validation.
    split_rule: int = 2
    #: How the corpus declared its splits (e.g. "pyannote.database protocol X: train -> train, development ->
    #: validation"), when it did: then each recording's :attr:`ViewRecording.split` is its part and no
    #: recording is drawn at random. None: the seeded split below.
    split_origin: str | None = None
    #: What the seeded split draws: ``recordings`` (each labelled recording on its own) or ``voices`` (whole
    #: groups of recordings that share no speaker name with the rest, :mod:`stores.voice_split`, so validation
    #: holds only voices train never has; the recording split when no group fits). Views written before
    #: the field split by recordings and keep doing so. A declared split wins over both.
    split_by: str = "recordings"

    def __post_init__(self) -> None:
        if self.split_by not in SPLIT_BY:
            raise AgencerdasError(f"view {self.name!r}: split_by (--split-by) must be one of {', '.join(SPLIT_BY)}, "
                                  f"got {self.split_by!r}; a view written by a newer agencerdas needs an upgrade")

    def split(self, part: str) -> list[str]:
        """Recording ids of ``part`` ('train', 'validation' or 'all'), sorted.

        A view whose corpus declared its splits (:attr:`split_origin`) keeps them. Otherwise
        recordings are ranked by a seeded hash of their id, so the split depends
        only on the ids and the seed, never on directory order or machine. Only recordings
        with reference labels are ranked, and ``validation_fraction`` is a share of them: with
        two or more, validation gets at least one. Pseudo-labelled and unlabelled recordings
        are always in train (whose readers skip those without labels). With :attr:`split_by`
        ``voices``, whole groups of recordings that share no speaker with the others are ranked
        instead (:func:`stores.voice_split.voice_validation`), when one fits.
        """
        ids = sorted(self.recordings)
        if part == "all":
            return ids
        if part not in ("train", "validation"):
            raise AgencerdasError(f"unknown split {part!r}; use 'train', 'validation' or 'all'")
        if self.split_origin is not None:
            return [rec for rec in ids if self.recordings[rec].split == part]
        validation = self._drawn()[0]
        return [rec for rec in ids if (rec in validation) == (part == "validation")]

    def _drawn(self) -> tuple[set[str], str, str | None]:
        """The seeded validation set, the rule that drew it (``recordings`` or ``voices``) and, when voices were
        asked, what the voices rule held out or why it fell back to the recording split."""
        # Validation is scored against references: a recording without labels (no RTTM, or its labels
        # failed) or with pseudo labels could only take a validation place from one that has them.
        candidates = [rec for rec in sorted(self.recordings) if not self.recordings[rec].pseudo
                      and (self.recordings[rec].labels or self.split_rule < 2)]
        n_val = round(self.validation_fraction * len(candidates))
        if self.validation_fraction > 0 and len(candidates) >= 2:
            n_val = min(max(n_val, 1), len(candidates) - 1)
        note = None
        if self.split_by == "voices":
            chosen, note = voice_validation({rec: self.recordings[rec].speakers for rec in candidates}, n_val,
                                            self.split_seed)
            if chosen is not None:
                return chosen, "voices", note
        ranked = sorted(candidates, key=lambda rec: xxhash.xxh3_64_intdigest(f"{self.split_seed}:{rec}".encode()))
        return set(ranked[:n_val]), "recordings", note

    def split_voices(self, part: str) -> set[str]:
        """Speaker names of the recordings of ``part`` with reference labels (pseudo speakers are clusters of
        one recording, not voices)."""
        return {name for rec in self.split(part) if self.recordings[rec].labels and not self.recordings[rec].pseudo
                for name in self.recordings[rec].speakers}

    def describe_split(self) -> str:
        """Which rule made the train/validation split, in words (run summary, corpus-stats.txt)."""
        if self.split_origin is not None:
            return f"declared by the corpus ({self.split_origin})"
        _, rule, note = self._drawn()
        share = f"{100 * self.validation_fraction:g}% of the labelled recordings (--validation-fraction)"
        if rule == "voices":
            how = f"by voices: {note}, drawn by a seeded hash until about {share} validate"
        else:
            how = (f"by recordings{f' (--split-by voices fell back: {note})' if note else ''}: drawn by a seeded "
                   f"hash of the recording ids, {share} validate")
        counts = "; ".join(f"{part} {len(self.split(part))} recordings, {len(self.split_voices(part))} voices"
                           for part in ("train", "validation"))
        return f"{how} (--split-seed {self.split_seed}); {counts}"

    def fingerprint(self) -> str:
        """Content key of the entries this view names and, from split rule 2 on, of that rule (for reports
        and resume checks: a view rewritten under the new rule may split otherwise, and says so)."""
        entries = {rec: [r.features, r.labels or ""] for rec, r in sorted(self.recordings.items())}
        if self.split_rule < 2:
            return content_key("view", entries)
        if self.split_origin is None and self.split_by == "recordings":
            return content_key("view", entries, self.split_rule)
        if self.split_origin is None:
            return content_key("view", entries, self.split_rule, self.split_by)
        return content_key("view", entries, self.split_rule, {rec: r.split for rec, r in self.recordings.items()})

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["version"] = VIEW_VERSION
        payload["splits"] = {part: self.split(part) for part in ("train", "validation")}
        payload["fingerprint"] = self.fingerprint()
        payload["split_description"] = self.describe_split()  # which rule made the split, and why
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> "DatasetView":
        version = payload.get("version", 0)
        if not isinstance(version, int) or version > VIEW_VERSION:
            raise AgencerdasError(
                f"view {payload.get('name')!r} has version {version!r}, newer than this agencerdas "
                f"understands ({VIEW_VERSION}); upgrade agencerdas"
            )
        try:
            recordings = {rec: ViewRecording(**fields) for rec, fields in payload["recordings"].items()}
            return cls(
                name=payload["name"],
                recordings=recordings,
                feature_config=payload["feature_config"],
                label_config=payload["label_config"],
                validation_fraction=payload["validation_fraction"],
                split_seed=payload["split_seed"],
                created_at=payload["created_at"],
                # Views written before purposes were recorded: evaluate's had no validation split.
                purpose=payload.get("purpose", "evaluate" if payload["validation_fraction"] == 0 else "train"),
                split_rule=payload.get("split_rule", 1),
                split_origin=payload.get("split_origin"),
                split_by=payload.get("split_by", "recordings"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise AgencerdasError(
                f"view {payload.get('name')!r} is damaged or not a view ({type(exc).__name__}: {exc}); "
                "rerun `agencerdas features` to rewrite it"
            ) from None


def save_view(store: Store, view: DatasetView) -> str:
    """Write ``view`` into the store (atomically); returns its path in the store."""
    path = store.view_path(view.name)
    store.put_json(path, view.to_dict())
    return path


def load_view(store: Store, name: str) -> DatasetView:
    """The view ``name`` of ``store``; the error lists the views that exist."""
    path = store.view_path(name)
    if not store.exists(path):
        known = ", ".join(store.view_names()) or "none"
        raise AgencerdasError(
            f"store {store.url} has no view {name!r} (views: {known}); `agencerdas features` writes one"
        )
    return DatasetView.from_dict(store.get_json(path))


def referenced_keys(store: Store) -> set[str]:
    """Every entry key named by any view of the store (what ``gc`` keeps)."""
    keys: set[str] = set()
    for name in store.view_names():
        for rec in load_view(store, name).recordings.values():
            keys.add(rec.features)
            if rec.labels:
                keys.add(rec.labels)
    return keys
