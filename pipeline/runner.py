"""`agencerdas features`: plan what changed, run one task per recording in parallel, report.

The parent process hashes files (through the stat cache), decides per recording
whether features and/or labels are missing from the store, and hands only that
work to joblib: loky processes on this machine, or a Dask cluster with
``scheduler`` (see :mod:`pipeline.cluster`). Planning and the work overlap: each
task is submitted as soon as its keys are known, so the workers start after the
first file is hashed, not after the last, and read their files just after the
parent did. Results stream back as they finish behind one tqdm bar; the run ends
with a dataset view and a one-screen summary.

Why the parent hashes: a features key is the hash of every byte of the audio, so
whether a recording needs any work is known only after its file was read once. The
parent, which asks the store what exists (one listing per prefix on object storage),
keeps the stat cache and sees every recording, is where that decision is cheapest: an
unchanged or renamed corpus starts no worker at all.
"""

from __future__ import annotations

import itertools
import math
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import joblib
from tqdm.auto import tqdm

from agencerdas.stores import (DatasetView, Store, ViewRecording, feature_key, label_key, load_view, save_view,
                    speakers_per_recording)
from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.views import SPLIT_BY

from .cluster import check_shared_store, task_backend
from .corpora import CorpusSource
from .discover import Discovery, Recording, discover, printable
from .features import FeatureConfig
from .labels import LabelConfig, canonical_annotation
from .pseudo import PseudoConfig, PseudoLabeler
from .statcache import StatCache
from .tasks import Task, TaskResult, run_task


@dataclass
class RunSummary:
    """Counts, failures and speed of one features run (printed by :meth:`format`)."""

    found: int = 0
    computed: int = 0
    labels_only: int = 0
    reused: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    audio_s: float = 0.0  # seconds of audio whose features were computed this run
    wall_s: float = 0.0
    jobs: int = 1
    startup_s: float = 0.0
    view: str = ""
    view_counts: dict[str, int] = field(default_factory=dict)
    split: str = ""  # which rule made the view's train/validation split (DatasetView.describe_split)
    #: Speakers in a recording -> annotated recordings of the view.
    speakers: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def format(self) -> str:
        """The end-of-run report: fits one screen, failures named by file with their reason."""
        speed = self.audio_s / self.wall_s if self.wall_s > 0 else 0.0
        lines = [
            f"agencerdas features: {self.found} recordings found",
            f"  computed {self.computed}  labels-only {self.labels_only}  reused {self.reused}  failed {len(self.failures)}",
            f"  audio computed {self.audio_s / 3600:.2f} h in {self.wall_s:.1f} s wall = {speed:.1f}x real time "
            f"({self.jobs} job(s); worker start-up {self.startup_s:.1f} s, imports and warm-up)"
            if self.audio_s
            else f"  no features to compute: {self.wall_s:.1f} s wall",
        ]
        if self.view:
            counts = self.view_counts
            lines.append(
                f"  view '{self.view}': {counts.get('all', 0)} recordings "
                f"({counts.get('train', 0)} train / {counts.get('validation', 0)} validation, "
                f"{counts.get('unlabelled', 0)} without labels)"
            )
            lines.append(f"  split {self.split}")
        if self.speakers:
            lines.append("  speakers per annotated recording: "
                         + ", ".join(f"{k}: {n}" for k, n in self.speakers.items()))
        for name, note in self.notes:
            lines.append(f"  note  {name}: {note}")
        if self.failures:
            lines.append(f"  {len(self.failures)} failed (the other recordings are committed; a rerun retries only these):")
            width = min(48, max(len(name) for name, _ in self.failures))
            lines += [f"    {name:<{width}}  {reason.splitlines()[0]}" for name, reason in self.failures]
        return "\n".join(lines)


@dataclass
class FeaturesRequest:
    """Inputs of one features run; the CLI fills it from flags. The recordings come from ``audio_dir`` (RTTM/UEM
    matched by name) or from ``corpus``, a description in a practitioner's format (:mod:`pipeline.corpora`)."""

    audio_dir: Path | None
    store: str
    rttm_dir: Path | None = None
    uem_dir: Path | None = None
    jobs: int = 1
    view: str = "default"
    validation_fraction: float = 0.1
    split_seed: int = 0
    #: What the seeded split draws (:attr:`stores.DatasetView.split_by`): ``recordings``, or ``voices`` (validation
    #: holds only speakers the train split never has, for corpora that name speakers across recordings).
    split_by: str = "recordings"
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    label_config: LabelConfig = field(default_factory=LabelConfig)
    storage_options: dict = field(default_factory=dict)
    progress: bool = True
    #: Give recordings without an RTTM pseudo labels (energy VAD + clustering), flagged pseudo.
    pseudo_labels: bool = False
    #: ... or pseudo labels from this labeller (e.g. a trained model; implies ``pseudo_labels``).
    pseudo_labeler: PseudoLabeler | None = None
    #: None: loky processes here; "local": a Dask LocalCluster here; "tcp://host:port": that Dask cluster.
    scheduler: str | None = None
    #: What the view is for (:attr:`stores.DatasetView.purpose`): an existing view of another purpose is refused.
    purpose: str = "train"
    corpus: CorpusSource | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise AgencerdasError listing every value that cannot work, before anything touches the store.

        A missing annotation directory is an error, not an empty one: a typo in ``--rttm-dir`` would
        otherwise rewrite the view with every recording unlabelled.
        """
        problems = []
        fraction = self.validation_fraction
        if not (_is_number(fraction) and math.isfinite(fraction) and 0 <= fraction < 1):
            problems.append(f"validation_fraction (--validation-fraction) must be in [0, 1), got {fraction!r}")
        if not (_is_whole(self.split_seed) and self.split_seed >= 0):
            problems.append(f"split_seed (--split-seed) must be a whole number >= 0, got {self.split_seed!r}")
        if self.split_by not in SPLIT_BY:
            problems.append(f"split_by (--split-by) must be one of {', '.join(SPLIT_BY)}, got {self.split_by!r}")
        if not (_is_whole(self.jobs) and self.jobs >= 1):
            problems.append(f"--jobs must be at least 1, got {self.jobs!r}")
        for what, flag, directory in (("audio", "AUDIO_DIR", self.audio_dir), ("RTTM", "--rttm-dir", self.rttm_dir),
                                      ("UEM", "--uem-dir", self.uem_dir)):
            if directory is not None and not Path(directory).is_dir():
                problems.append(f"{what} directory ({flag}) {printable(str(directory))} is not an existing directory")
        if (self.audio_dir is None) == (self.corpus is None):
            problems.append("give the recordings once: an audio directory (AUDIO_DIR) or a corpus description "
                            "(--protocol, --manifest or --kaldi-dir)")
        elif self.corpus is not None and (self.rttm_dir or self.uem_dir):
            problems.append("--rttm-dir and --uem-dir go with an audio directory; a corpus description names its "
                            "own annotations")
        if self.purpose not in PURPOSES:
            problems.append(f"purpose must be one of {', '.join(PURPOSES)}, got {self.purpose!r}")
        if problems:
            raise AgencerdasError("invalid features request: " + "; ".join(problems) + "; nothing was written")


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plan(request: FeaturesRequest, store: Store, recordings: list[Recording], summary: RunSummary,
          keys: dict[str, tuple[str, str | None]]) -> Iterator[Task]:
    """Yield a task for each recording with a missing entry, as soon as its keys are known.

    Fills ``keys`` (recording id → features and labels keys) and counts reused recordings and
    unreadable files in ``summary`` as it goes; both are complete once the generator is exhausted.
    What the store holds is asked once per kind, before the first file is hashed
    (:meth:`stores.Store.committed`): on object storage one listing, not a request per recording.
    """
    cache = StatCache()
    features_cfg, labels_cfg = request.feature_config.to_dict(), request.label_config.to_dict()
    pseudo = request.pseudo_labeler
    if pseudo is None and request.pseudo_labels:
        pseudo = PseudoConfig()
    has_features, has_labels = store.committed("features"), store.committed("labels")
    try:
        for rec in recordings:
            try:
                fkey = feature_key(cache.content_hash(rec.path), features_cfg, rec.region)
            except OSError as exc:
                summary.failures.append((rec.source, f"cannot read: {exc.strerror or exc}"))
                continue
            if rec.segments is not None:
                lkey = label_key(fkey, canonical_annotation(rec.segments, rec.uem), labels_cfg)
            else:
                lkey = label_key(fkey, {"pseudo": pseudo.describe()}, labels_cfg) if pseudo is not None else None
            keys[rec.rec_id] = (fkey, lkey)
            need_features = not has_features(fkey)
            need_labels = lkey is not None and not has_labels(lkey)
            if need_features or need_labels:
                # An absolute root for a local store: workers need not share this process's working directory.
                yield Task(rec.rec_id, str(rec.path), store.root if store.local else store.url, store.storage_options,
                           features_cfg, labels_cfg, fkey, lkey, need_features, need_labels, rec.segments, rec.uem,
                           pseudo if rec.segments is None else None, rec.offset_s, rec.duration_s)
            else:
                summary.reused += 1
    finally:
        cache.save()  # also when the run stops early: the hashes taken so far are not lost


def _run(tasks: Iterator[Task], request: FeaturesRequest, summary: RunSummary) -> list[TaskResult]:
    """Run ``tasks`` on the joblib backend of ``request.scheduler`` while planning still yields them
    (worker processes are kept alive across tasks)."""
    results = []
    first = next(tasks, None)
    if first is None:
        return results  # nothing to compute: no processes, no cluster
    bar = tqdm(total=None, unit="rec", desc="features", disable=not request.progress)

    def submitted() -> Iterator:
        count = 0
        for task in itertools.chain([first], tasks):
            count += 1
            yield joblib.delayed(run_task)(task)
        bar.total = count  # planning is over: the bar learns its length
        bar.refresh()

    start = time.perf_counter()
    with task_backend(request.scheduler, request.jobs) as workers:
        summary.jobs = workers
        # pre_dispatch="all": this thread submits each task the moment planning yields it, while the workers
        # run the earlier ones. joblib's default lazy dispatch would pull the next task, and so hash the next
        # files, from the backend's result callbacks (on Dask, from the client's event loop).
        parallel = joblib.Parallel(n_jobs=workers, return_as="generator_unordered", batch_size=1, pre_dispatch="all")
        for result in parallel(submitted()):
            results.append(result)
            if result.status == "computed":
                summary.audio_s += result.duration_s
            summary.startup_s = max(summary.startup_s, result.startup_s)
            elapsed = time.perf_counter() - start
            bar.set_postfix(audio_h=f"{summary.audio_s / 3600:.2f}", xRT=f"{summary.audio_s / max(elapsed, 1e-9):.0f}")
            bar.update()
    bar.close()
    return results


def build_features(request: FeaturesRequest) -> RunSummary:
    """Bring the store up to date with ``request``'s recordings and write the dataset view."""
    start = time.perf_counter()
    request.validate()  # again: fields may have changed since construction
    summary = RunSummary(jobs=request.jobs)
    # Read first: a description that is wrong stops the run before anything touches the store.
    found = request.corpus.read() if request.corpus else discover(request.audio_dir, request.rttm_dir, request.uem_dir)
    store = Store(request.store, request.storage_options, create=True)
    store.view_path(request.view)  # a view name that cannot be a file name fails now, not after all the work
    _check_replaceable(store, request)
    if request.scheduler is not None:
        check_shared_store(request.scheduler, store)
    summary.found = len(found.recordings)
    summary.failures += found.problems
    summary.notes += found.notes
    keys: dict[str, tuple[str, str | None]] = {}
    with closing(_plan(request, store, found.recordings, summary, keys)) as tasks:
        results = {r.rec_id: r for r in _run(tasks, request, summary)}
    for result in results.values():
        if result.status == "failed":
            summary.failures.append((result.path, result.reason))
            keys.pop(result.rec_id, None)
        else:
            summary.computed += result.status == "computed"
            summary.labels_only += result.status == "labels-only"
            summary.notes += [(result.path, note) for note in result.notes]
    if keys:
        previous = _previous_entries(store, request.view)
        view = _view(request, store, found, keys, previous, summary.failures)
        try:
            save_view(store, view)
        except OSError as exc:  # disk full, permission denied: the committed entries stay valid
            summary.failures.append((store.view_path(view.name), f"cannot write the view: {exc.strerror or exc}"))
        else:
            summary.failures += _collected_meanwhile(store, view, previous)
            summary.view = view.name
            summary.view_counts = {part: len(view.split(part)) for part in ("all", "train", "validation")}
            summary.view_counts["unlabelled"] = sum(r.labels is None for r in view.recordings.values())
            summary.speakers = speakers_per_recording(view.recordings.values())
            summary.split = view.describe_split()
    summary.wall_s = time.perf_counter() - start
    return summary


#: What a view can be for; the command that writes each.
PURPOSES = {"train": "agencerdas features", "evaluate": "agencerdas evaluate --audio-dir"}


def _check_replaceable(store: Store, request: FeaturesRequest) -> None:
    """Refuse, before any work, to replace a view written for another purpose (a training view by an
    evaluation, or the reverse): views are users' data, and a training run resumes only on its own."""
    try:
        existing = load_view(store, request.view)
    except AgencerdasError:  # missing or unreadable: nothing to keep
        return
    if existing.purpose != request.purpose:
        raise AgencerdasError(
            f"view {request.view!r} of store {store.url} was written by `{PURPOSES.get(existing.purpose, existing.purpose)}`"
            f" ({existing.purpose} view, {len(existing.recordings)} recordings), and `{PURPOSES[request.purpose]}` "
            f"never replaces it; give another view name (--view)")


def _previous_entries(store: Store, name: str) -> dict[str, ViewRecording]:
    """Recordings of the existing view ``name`` (none when it is missing or unreadable)."""
    try:
        return load_view(store, name).recordings
    except AgencerdasError:
        return {}


GC_RACE = "its entries were removed by a concurrent `store gc` before this run's view named them; rerun to rebuild them"


def _collected_meanwhile(store: Store, view: DatasetView, previous: dict[str, ViewRecording]) -> list[tuple[str, str]]:
    """Recordings whose entries a concurrent ``store gc`` removed before ``view`` named them.

    Only entries the previous version of the view did not name can be affected (gc keeps what a
    view names, and recently committed entries); a rerun rebuilds them.
    """
    changed = [entry for rec_id, entry in view.recordings.items() if previous.get(rec_id) != entry]
    if not changed:
        return []
    has_features, has_labels = store.committed("features"), store.committed("labels")
    return [(entry.source, GC_RACE) for entry in changed
            if not (has_features(entry.features) and (entry.labels is None or has_labels(entry.labels)))]


def _view(request: FeaturesRequest, store: Store, found: Discovery, keys: dict,
          previous: dict[str, ViewRecording], failures: list[tuple[str, str]]) -> DatasetView:
    """The dataset view over every recording with committed entries, split as the corpus declares
    (``found.split_origin``) or by the seeded hash.

    Entry facts come from the store's attributes, or from ``previous`` (the view's previous
    version) for recordings whose keys and path are unchanged (an unchanged rerun opens no entry).
    A recording whose entry vanished meanwhile is left out and added to ``failures``.
    """
    entries = {}
    paths = {rec.rec_id: str(rec.path) for rec in found.recordings}
    declared = {rec.rec_id: (rec.offset_s, rec.split) for rec in found.recordings}
    for rec_id, (fkey, lkey) in sorted(keys.items()):
        old = previous.get(rec_id)
        if old is not None and (old.features, old.labels, old.source, old.offset_s, old.split) == (
                fkey, lkey, paths[rec_id], *declared[rec_id]):
            entries[rec_id] = old
            continue
        try:
            fattrs = store.attrs("features", fkey)
            lattrs = store.attrs("labels", lkey) if lkey else {}
        except AgencerdasError:  # committed by this run or reused, then collected by a concurrent `store gc`
            failures.append((paths[rec_id], GC_RACE))
            continue
        speakers = lattrs.get("speakers", [])
        entries[rec_id] = ViewRecording(fkey, lkey, fattrs["frames"], fattrs["duration_s"], speakers,
                                        bool(lattrs.get("pseudo")), paths[rec_id], len(speakers) if lkey else None,
                                        *declared[rec_id])
    return DatasetView(
        name=request.view,
        recordings=entries,
        feature_config=request.feature_config.to_dict(),
        label_config=request.label_config.to_dict(),
        validation_fraction=request.validation_fraction,
        split_seed=request.split_seed,
        split_by=request.split_by,
        purpose=request.purpose,
        split_origin=found.split_origin,
    )
