"""Pseudo labels for recordings without RTTM: quality against withheld truth, the pseudo flag, and
memory that grows with the frames, not with frames x windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agencerdas.pipeline import FeaturesRequest, build_features
from agencerdas.pipeline import pseudo
from agencerdas.pipeline.pseudo import PseudoConfig, nearest_centre, pseudo_labels, speech_activity
from agencerdas.pipeline.rttm import parse_rttm
from agencerdas.stores import Store, load_view
from agencerdas.stores.errors import AgencerdasError
from tests.builders import make_corpus
from agencerdas.scoring.der import DERSettings, score
from agencerdas.scoring.binarize import activity_to_segments

#: Stated quality of the method on the tone corpus (pyannote.metrics DER, 0.25 s collar, overlap scored).
MAX_PSEUDO_DER = 0.25


@pytest.fixture(scope="module")
def pseudo_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("pseudo")
    audio, rttm = make_corpus(root / "corpus", n=3, seconds=30.0, formats=("wav",), rates=(16000,))
    truth = {rec: segs for path in rttm.glob("*.rttm") for rec, segs in parse_rttm(path).items()}
    # RTTMs withheld: the features run sees only audio.
    summary = build_features(FeaturesRequest(audio_dir=audio, store=str(root / "store"), pseudo_labels=True,
                                             progress=False))
    return Store(root / "store", create=False), truth, summary


def test_pseudo_labels_reach_stated_der_against_withheld_truth(pseudo_store):
    store, truth, summary = pseudo_store
    assert summary.ok and summary.computed == 3
    view = load_view(store, "default")
    hypotheses = {}
    for rec, entry in view.recordings.items():
        activity = np.asarray(store.open("labels", entry.labels)["labels"][:]).astype(bool)
        hypotheses[rec] = activity_to_segments(activity, 0.01)
    report = score(truth, hypotheses, None, DERSettings(collar_s=0.25))
    assert report.overall["der"] < MAX_PSEUDO_DER, report.table()


def test_pseudo_flag_propagates_to_entry_and_view(pseudo_store):
    store, _, _ = pseudo_store
    view = load_view(store, "default")
    assert all(entry.pseudo for entry in view.recordings.values())
    for entry in view.recordings.values():
        attrs = store.attrs("labels", entry.labels)
        assert attrs["pseudo"] is True and attrs["pseudo_method"]["method"] == "energy-vad+stats-ahc"
    # Pseudo-labelled recordings are never held out for validation (it is scored against references).
    assert view.split("validation") == []


def test_pseudo_key_differs_from_annotated_key_and_method_settings(tmp_path):
    audio, rttm = make_corpus(tmp_path / "corpus", n=1, seconds=6.0, formats=("wav",), rates=(16000,))
    annotated = build_features(FeaturesRequest(audio_dir=audio, rttm_dir=rttm, store=str(tmp_path / "s"), progress=False))
    pseudo = build_features(FeaturesRequest(audio_dir=audio, store=str(tmp_path / "s"), view="p", pseudo_labels=True,
                                            progress=False))
    store = Store(tmp_path / "s", create=False)
    a, p = load_view(store, "default").recordings["rec00"], load_view(store, "p").recordings["rec00"]
    assert annotated.ok and pseudo.ok and pseudo.labels_only == 1  # features reused
    assert a.features == p.features and a.labels != p.labels and not a.pseudo and p.pseudo


def test_silence_has_no_speech_and_is_rejected():
    silence = np.full((500, 80), -23.0, dtype=np.float32)
    assert not speech_activity(silence, PseudoConfig()).any()
    with pytest.raises(AgencerdasError, match="no speech"):
        pseudo_labels(silence, PseudoConfig())


# ------------------------------------------------------------------ memory: O(frames)

ROOT = Path(__file__).resolve().parents[2]


def speech_like(frames: int, seed: int = 0, n_mels: int = 80) -> np.ndarray:
    """Synthetic log-mel (frames, n_mels) float16 of a three-speaker conversation: turns of 1-5 s, each
    with its speaker's spectral envelope, between pauses of 0.3-1.5 s at a 20 dB lower level (~77% speech).

    Written block by block, so making it needs no more memory than the result.
    """
    rng = np.random.default_rng(seed)
    bins = np.arange(n_mels)
    envelopes = [-2.0 - 0.1 * bins + 3.0 * np.sin(bins / width) for width in (5.0, 9.0, 14.0)]
    out = np.empty((frames, n_mels), dtype=np.float16)
    t, speaker = 0, 0
    while t < frames:
        pause, turn = int(rng.integers(30, 150)), int(rng.integers(100, 500))
        speaker = (speaker + int(rng.integers(1, 3))) % 3
        for length, level in ((pause, np.full(n_mels, -20.0)), (turn, envelopes[speaker])):
            n = min(length, frames - t)
            out[t : t + n] = level + rng.standard_normal((n, n_mels), dtype=np.float32)
            t += n
    return out


def distance_matrix_assignment(frames: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The previous assignment, kept as the reference: a (frames x windows) matrix, ~7 GB per hour."""
    return np.abs(frames[:, None] - centres[None, :]).argmin(axis=1)


@pytest.mark.parametrize("seed", range(5))
def test_nearest_centre_is_the_argmin_of_the_distance_matrix(seed):
    rng = np.random.default_rng(seed)
    hop = int(rng.integers(1, 60))
    # Evenly spaced centres put frames exactly halfway (ties); random ones test gaps; both start anywhere.
    centres = np.unique(rng.integers(0, 3000, int(rng.integers(1, 80)))) if seed % 2 else \
        np.arange(int(rng.integers(0, 100)), 3000, hop)
    frames = np.sort(rng.integers(-50, 3100, 2000))
    np.testing.assert_array_equal(nearest_centre(frames, centres), distance_matrix_assignment(frames, centres))


@pytest.mark.parametrize("seed", range(3))
def test_pseudo_labels_equal_those_of_the_distance_matrix_and_whole_array_arithmetic(seed, monkeypatch):
    logmel = speech_like(int(np.random.default_rng(seed).integers(9000, 30000)), seed=seed)
    labels = pseudo_labels(logmel, PseudoConfig())
    assert (labels.sum(axis=0) > 0).sum() >= 2  # several speakers: the cluster order matters too
    monkeypatch.setattr(pseudo, "nearest_centre", distance_matrix_assignment)
    monkeypatch.setattr(pseudo, "BLOCK_FRAMES", len(logmel))  # the previous whole-recording temporaries
    np.testing.assert_array_equal(labels, pseudo_labels(logmel, PseudoConfig()))


#: Pseudo-labels a 2-hour recording in a fresh interpreter; prints its RSS before and at the peak (MiB).
#: VmHWM is this process's own high-water mark; ru_maxrss would also count pytest's RSS at the fork.
_CHILD = """
import json, sys
from agencerdas.pipeline import pseudo
from tests.pipeline.test_pseudo import speech_like

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) / 1024 for line in lines if line.startswith(field + ":"))

windows = []
cluster = pseudo.linkage
pseudo.linkage = lambda vectors, **kw: windows.append(len(vectors)) or cluster(vectors, **kw)
logmel = speech_like(int(sys.argv[1]))
before = status("VmRSS")
labels = pseudo.pseudo_labels(logmel, pseudo.PseudoConfig())
print(json.dumps({"before_mb": before, "peak_mb": status("VmHWM"), "input_mb": logmel.nbytes / 2**20,
                  "windows": windows[0], "speech_frames": int(labels.any(axis=1).sum())}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc (Linux)")
def test_pseudo_labels_of_a_two_hour_recording_stay_within_a_memory_bound():
    """Peak RSS <= RSS with the input loaded + the clustering's distance matrices + 256 MiB.

    Average-linkage clustering needs the condensed cosine distances of the W speech windows, which
    scipy copies once more: 2 x 8 B x W(W-1)/2 (~1 GB for this recording's ~11,400 windows: that part
    grows with W², it is the clustering's own cost). Everything else is O(frames): per-block float64/float32
    temporaries (8,000 frames), the speech frames copied once for their mean (<= 110 MiB here), MFCCs
    (frames x 20 float32, 55 MiB), a few int64 arrays of the speech frames. The previous assignment
    alone was speech frames x W x 8 B: ~550,000 x 11,400 x 8 B = 50 GB.
    """
    frames = 720_000  # 2 hours of 10 ms frames
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", _CHILD, str(frames)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    windows = got["windows"]
    assert got["speech_frames"] > 0.6 * frames and windows > 9000, got  # a long conversation, mostly speech
    bound = got["before_mb"] + 2 * 8 * windows * (windows - 1) / 2 / 2**20 + 256
    assert got["peak_mb"] < bound, got
