"""The store on S3: a moto server on 127.0.0.1 stands in for it; no test reaches any other address.

Features written there through `build_features` read back equal to a local store;
atomic visibility, verify and gc hold on object storage; credentials come only from
the environment and appear nowhere in the store.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pytest

from agencerdas.pipeline import FeaturesRequest, build_features
from agencerdas.pipeline.discover import Recording
from agencerdas.pipeline.runner import RunSummary, _plan
from agencerdas.stores import ArraySpec, EntryReader, Segment, Store, content_key, load_view
from agencerdas.training.windows import Normalizer, WindowFormat, cut_window
from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores import default_codec
from tests.builders import make_corpus
from tests.same_store import assert_same_entries
from agencerdas.cli import main

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "agencerdas-test"
SPEC = ArraySpec(columns=4, dtype="float32", chunk_frames=16, codec=default_codec())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on loopback for this module, stopped after it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint, monkeypatch, tmp_path):
    """(URL of a fresh prefix in the test bucket, storage options): credentials only in the environment."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance-metadata address
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    client = boto3.client("s3", endpoint_url=endpoint)
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/store", {"endpoint_url": endpoint}


def put(store: Store, name: str, seed: int = 0) -> tuple[str, np.ndarray]:
    key, array = content_key("s3-test", name), np.random.default_rng(seed).standard_normal((50, 4)).astype(np.float32)
    with store.write("features", key, {"frames": len(array)}) as writer:
        writer.create("feats", SPEC)
        writer.append("feats", array[:20])
        writer.append("feats", array[20:])
    return key, array


@contextmanager
def s3_requests(store: Store) -> Iterator[Counter]:
    """Count the S3 API calls (ListObjectsV2, HeadObject, GetObject, ...) that ``store`` sends inside the block."""
    counts: Counter = Counter()

    def count(model, **_):
        counts[model.name] += 1

    events = store.fs.s3.meta.events
    events.register("before-call.s3", count)
    try:
        yield counts
    finally:
        events.unregister("before-call.s3", count)


def commit(store: Store, kind: str, key: str) -> None:
    with store.write(kind, key, {"frames": 4}) as writer:
        writer.create("feats", SPEC)
        writer.append("feats", np.zeros((4, 4), np.float32))


def test_planning_and_maintenance_cost_a_constant_number_of_requests(tmp_path, s3):
    """On object storage every existence check is a round trip: planning N recordings, listing keys and
    gc each list a prefix once, however many recordings and entries there are."""
    url, options = s3
    costs = {}
    for n in (4, 12):
        store, audio = Store(f"{url}-{n}", options), tmp_path / f"corpus-{n}"
        audio.mkdir()
        recordings = []
        for i in range(n):  # planning only hashes the bytes: they need not decode
            (audio / f"r{i}.wav").write_bytes(np.random.default_rng([n, i]).bytes(2000))
            recordings.append(Recording(f"r{i}", audio / f"r{i}.wav", [Segment(0.0, 1.0, "alice")]))
        request = FeaturesRequest(audio_dir=audio, store=store.url, storage_options=options, progress=False)
        keys: dict = {}
        assert len(list(_plan(request, store, recordings, RunSummary(), keys))) == n  # an empty store: all missing
        for rec in recordings[::2]:  # every other recording is built already
            for kind, key in zip(("features", "labels"), keys[rec.rec_id]):
                commit(store, kind, key)

        summary = RunSummary()
        with s3_requests(store) as planning:
            tasks = list(_plan(request, store, recordings, summary, {}))
        assert [t.rec_id for t in tasks] == [r.rec_id for r in recordings[1::2]] and summary.reused == n // 2
        with s3_requests(store) as listing:
            assert len(store.keys("features")) == len(store.keys("labels")) == n // 2
        with s3_requests(store) as collecting:
            assert store.gc(keep={k for pair in keys.values() for k in pair}, dry_run=True, min_age_s=0) == []
        costs[n] = {"planning": planning, "keys": listing, "gc": collecting}
    assert costs[4] == costs[12]
    assert costs[12]["planning"] == Counter(ListObjectsV2=2)  # features/ and labels/, once each
    assert costs[12]["keys"] == Counter(ListObjectsV2=2)


def test_features_on_s3_read_back_equal_to_a_local_store(tmp_path, s3):
    url, options = s3
    audio, rttm = make_corpus(tmp_path / "corpus", n=3, seconds=4.0)
    local = build_features(FeaturesRequest(audio_dir=audio, rttm_dir=rttm, store=str(tmp_path / "local"), progress=False))
    remote = build_features(FeaturesRequest(audio_dir=audio, rttm_dir=rttm, store=url, storage_options=options,
                                            progress=False))
    assert local.ok and remote.ok, remote.format()
    assert (remote.computed, remote.view_counts) == (3, local.view_counts)

    on_s3, on_disk = Store(url, options, create=False), Store(tmp_path / "local", create=False)
    assert_same_entries(on_s3, on_disk)
    for rec in load_view(on_s3, "default").recordings.values():
        s3_reader, disk_reader = EntryReader(on_s3, rec.features, rec.labels), EntryReader(on_disk, rec.features, rec.labels)
        for start, frames, factor in [(0, 150, 1), (120, 300, 10), (300, 200, 15)]:  # the last runs past the end
            fmt = WindowFormat(Normalizer.identity(s3_reader.features.shape[1]), factor)
            windows = [cut_window(fmt, r.features, r.labels, start, frames, r.frames) for r in (s3_reader, disk_reader)]
            for got, expected in zip(*windows):
                np.testing.assert_array_equal(got, expected)
    assert on_s3.verify().ok and on_s3.gc(keep=None, dry_run=True, min_age_s=0) == []

    again = build_features(FeaturesRequest(audio_dir=audio, rttm_dir=rttm, store=url, storage_options=options,
                                           progress=False))
    assert (again.computed, again.reused) == (0, 3)

    # Neither the endpoint nor the credentials are written into the store (views, attributes, markers).
    text = b"".join(on_s3.fs.cat_file(path) for path in on_s3.fs.find(on_s3.root) if path.endswith(".json"))
    for secret in (options["endpoint_url"].encode(), b"testing-secret", b"storage_options", b"endpoint_url"):
        assert secret not in text


def test_uncommitted_entries_are_invisible_and_verify_and_gc_handle_them(s3):
    store = Store(*s3)
    committed, array = put(store, "committed")
    failed = content_key("s3-test", "failed")
    with pytest.raises(RuntimeError, match="failed"):
        with store.write("features", failed, {}) as writer:  # an error inside the write cleans up after itself
            writer.create("feats", SPEC)
            raise RuntimeError("failed")
    assert not store.fs.exists(store._path("features", failed))

    crashed = content_key("s3-test", "crashed")
    killed = store.write("features", crashed, {})  # a writer killed before its commit marker: never exited
    writer = killed.__enter__()
    writer.create("feats", SPEC)
    writer.append("feats", array)
    partial = store._path("features", crashed)
    assert store.fs.find(partial)

    for reader in (store, Store(*s3, create=False)):
        assert not reader.has("features", crashed) and reader.keys("features") == [committed]
        with pytest.raises(AgencerdasError, match="no features entry"):
            reader.open("features", crashed)
    report = store.verify()
    assert report.checked == 1 and report.problems == [(partial, "partial entry without commit marker")]

    assert store.gc() == []  # it may be a write in progress in another process: kept until it is old
    assert store.gc(dry_run=True, min_age_s=0) == [partial] and store.fs.exists(partial)
    assert store.gc(min_age_s=0) == [partial]
    assert not store.fs.exists(partial)
    report = store.verify()
    assert report.ok and report.checked == 1
    np.testing.assert_array_equal(store.open("features", committed)["feats"][:], array)

    assert store.gc(keep=set(), min_age_s=0) == [store._path("features", committed)]  # unreferenced: removed
    assert store.keys("features") == [] and store.verify().ok
    killed.gen.close()  # release the abandoned writer while the server runs; its objects are gone already


def test_two_writers_of_one_new_key_never_mix_their_objects(s3):
    first, second = Store(*s3), Store(*s3, create=False)
    key = content_key("s3-test", "raced")
    array = np.random.default_rng(3).standard_normal((50, 4)).astype(np.float32)
    a, b = first.write("features", key, {"frames": 50}), second.write("features", key, {"frames": 50})
    writer_a = a.__enter__()
    writer_a.create("feats", SPEC)
    writer_a.append("feats", array[:20])
    writer_b = b.__enter__()  # starts while A is half-way: it must not disturb A's objects
    writer_b.create("feats", SPEC)
    writer_b.append("feats", array[:40])
    writer_a.append("feats", array[20:])
    a.__exit__(None, None, None)  # A commits first
    np.testing.assert_array_equal(second.open("features", key)["feats"][:], array)
    writer_b.append("feats", array[40:])
    b.__exit__(None, None, None)  # B finds the key committed and discards its copy
    np.testing.assert_array_equal(first.open("features", key)["feats"][:], array)
    assert first.verify().ok and first.gc(dry_run=True, min_age_s=0) == []

    killed = first.write("features", key, {"frames": 50})  # a third writer of the committed key, killed
    killed.__enter__().create("feats", SPEC)
    [(leftover, reason)] = first.verify().problems
    assert leftover.startswith(first._path("features", key) + "/g") and "did not commit" in reason
    assert first.gc() == [] and first.gc(min_age_s=0) == [leftover]
    np.testing.assert_array_equal(first.open("features", key)["feats"][:], array)
    assert first.verify().ok
    killed.gen.close()


def test_verify_detects_a_missing_chunk_on_s3(s3):
    store = Store(*s3)
    key, _ = put(store, "chunky")
    [chunk] = [p for p in store.fs.find(store._path("features", key)) if p.endswith("/feats/c/1/0")]
    store.fs.rm(chunk)  # zarr would read it back as zeros
    [(path, reason)] = store.verify().problems
    assert path.endswith(f"{key}/feats") and "checksum mismatch" in reason
    assert store.verify(checksums=False).ok


def test_a_second_writer_never_touches_a_committed_entry(s3):
    store = Store(*s3)
    key, array = put(store, "twice")
    with store.write("features", key, {"frames": 50}) as writer:  # a planner raced another run
        writer.create("feats", SPEC)
        writer.append("feats", np.zeros((50, 4), np.float32))
        assert store.has("features", key)
        np.testing.assert_array_equal(store.open("features", key)["feats"][:], array)
    np.testing.assert_array_equal(store.open("features", key)["feats"][:], array)
    assert store.verify().ok and store.gc(dry_run=True, min_age_s=0) == []


def test_entries_committed_by_other_processes_are_listed(s3, endpoint):
    store = Store(*s3)
    first, _ = put(store, "first")
    assert store.keys("features") == [first]  # the listing is now in s3fs's cache
    # Another machine commits an entry: here, boto3 copies every object of the first one.
    client, (bucket, prefix) = boto3.client("s3", endpoint_url=endpoint), store._path("features", first).split("/", 1)
    second = content_key("s3-test", "second")
    for obj in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]:
        target = obj["Key"].replace(first, second)
        client.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": obj["Key"]})
    assert store.keys("features") == sorted([first, second]) and store.has("features", second)


def test_cli_store_commands_on_s3(s3, capsys):
    url, options = s3
    put(Store(url, options), "cli")
    flags = ["--store", url, "--storage-option", f"endpoint_url={options['endpoint_url']}"]
    assert main(["store", "verify", *flags]) == 0
    assert "verified 1 committed entries" in capsys.readouterr().out
    assert main(["store", "gc", "--dry-run", *flags]) == 0


def test_credentials_in_storage_options_are_refused(s3):
    url, options = s3
    with pytest.raises(AgencerdasError, match="'secret' is a credential.*AWS_SECRET_ACCESS_KEY"):
        Store(url, {**options, "secret": "testing-secret"})
    with pytest.raises(AgencerdasError, match="'client_kwargs.aws_secret_access_key' is a credential"):
        Store(url, {"client_kwargs": {"endpoint_url": options["endpoint_url"], "aws_secret_access_key": "x"}})
    nested = Store(url, {"client_kwargs": {"endpoint_url": options["endpoint_url"]}})  # the other spelling works
    assert json.loads(nested.fs.cat_file(f"{nested.root}/store.json"))["format"] == "agencerdas-store"


def test_missing_credentials_are_a_clear_error(s3, monkeypatch):
    url, options = s3
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    with pytest.raises(AgencerdasError, match="NoCredentialsError.*AWS_ACCESS_KEY_ID"):
        Store(url, {**options, "skip_instance_cache": True})  # not the cached client that has credentials
