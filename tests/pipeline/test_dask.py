"""`agencerdas features --scheduler`: a Dask cluster writes the same store as loky; unreachable stores are refused."""

from __future__ import annotations

import joblib
import pytest

from agencerdas.pipeline import FeaturesRequest, build_features
from agencerdas.pipeline import cluster as cluster_module
from agencerdas.pipeline.cluster import check_shared_store, filesystem_type, is_remote, task_backend
from agencerdas.stores import Store
from agencerdas.stores.errors import AgencerdasError
from tests.builders import make_corpus
from tests.fresh import loaded_by
from tests.same_store import assert_same_entries

distributed = pytest.importorskip("distributed")


def request(audio, rttm, store, **kwargs) -> FeaturesRequest:
    return FeaturesRequest(audio_dir=audio, rttm_dir=rttm, store=str(store), progress=False, **kwargs)


@pytest.fixture(scope="module")
def scheduler():
    """Address of a two-process LocalCluster shared by this module's tests (workers stay warm)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        yield cluster.scheduler_address


def test_dask_cluster_writes_the_same_store_as_loky(tmp_path, scheduler):
    audio, rttm = make_corpus(tmp_path / "corpus", n=4, seconds=4.0)
    loky = build_features(request(audio, rttm, tmp_path / "loky", jobs=2))
    dask = build_features(request(audio, rttm, tmp_path / "dask", scheduler=scheduler))
    again = build_features(request(audio, rttm, tmp_path / "dask", scheduler=scheduler))
    assert loky.ok and dask.ok, dask.format()
    assert (dask.found, dask.computed, dask.reused, dask.audio_s) == (loky.found, loky.computed, 0, loky.audio_s) == (
        4, 4, 0, loky.audio_s)
    assert dask.jobs == 2 and "(2 job(s);" in dask.format()
    assert dask.view_counts == loky.view_counts
    assert (again.computed, again.reused) == (0, 4)  # the plan reads what the workers committed
    assert_same_entries(Store(tmp_path / "loky", create=False), Store(tmp_path / "dask", create=False))
    assert Store(tmp_path / "dask", create=False).verify().ok


def test_failures_on_workers_are_reported_like_loky(tmp_path, scheduler):
    audio, rttm = make_corpus(tmp_path / "corpus", n=2, seconds=3.0)
    (audio / "broken.wav").write_bytes(b"RIFF....not audio")
    summary = build_features(request(audio, rttm, tmp_path / "store", scheduler=scheduler))
    assert (summary.found, summary.computed, len(summary.failures)) == (3, 2, 1)
    assert summary.failures[0][0].endswith("broken.wav") and not summary.ok
    assert "1 failed (the other recordings are committed" in summary.format()


def test_scheduler_local_starts_a_local_cluster_of_jobs_workers():
    with task_backend("local", 1) as workers:
        assert workers == 1
        assert joblib.Parallel(n_jobs=workers)(joblib.delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
        assert isinstance(joblib.parallel.get_active_backend()[0], joblib._dask.DaskDistributedBackend)


@pytest.mark.parametrize(("address", "remote"), [
    ("local", False), ("tcp://127.0.0.1:8786", False), ("localhost:8786", False), ("tcp://[::1]:8786", False),
    ("tls://127.0.0.2:8786", False), ("tcp://10.1.2.3:8786", True), ("tcp://gpu-node-7:8786", True),
    ("gpu-node-7:8786", True),
])
def test_which_schedulers_are_remote(address, remote):
    assert is_remote(address) is remote


def test_local_store_with_remote_scheduler_is_refused_before_connecting(tmp_path, monkeypatch):
    def no_connection(*args, **kwargs):
        raise AssertionError("tried to reach the scheduler")

    monkeypatch.setattr(cluster_module, "_dask_client", no_connection)
    audio, rttm = make_corpus(tmp_path / "corpus", n=1, seconds=2.0)
    with pytest.raises(AgencerdasError, match="is a local path.*shared store"):
        build_features(request(audio, rttm, tmp_path / "store", scheduler="tcp://gpu-node-7:8786"))
    with pytest.raises(AgencerdasError, match="memory"):
        build_features(request(audio, rttm, "memory://agencerdas-dask-test", scheduler="local"))


def test_a_store_on_a_network_filesystem_is_accepted(tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    assert filesystem_type(str(tmp_path)) is not None  # Linux: read from /proc/self/mounts
    check_shared_store("tcp://127.0.0.1:8786", store)
    monkeypatch.setattr(cluster_module, "filesystem_type", lambda path: "nfs4")
    check_shared_store("tcp://gpu-node-7:8786", store)


def test_the_default_path_never_imports_dask():
    code = (
        "import pipeline, agencerdas.cli\n"
        "from pipeline.cluster import task_backend\n"
        "with task_backend(None, 1) as n: assert n == 1\n"
    )
    assert loaded_by(code, ("dask", "distributed"))[0] == []
