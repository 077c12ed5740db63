"""Where the per-recording tasks of `agencerdas features` run: loky processes here, or a Dask cluster.

Only the joblib backend changes; planning, progress, the summary and the failure
report are the same. Dask is imported only when a scheduler is given, so the
default path never loads it. On a cluster the workers write entries straight
into the store, so the store must be one every worker reaches: an object-store
URL, or a directory on a network filesystem mounted at the same path everywhere.
The audio files must likewise be readable at the same paths on every worker.
"""

from __future__ import annotations

import ipaddress
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import joblib
from fsspec.implementations.memory import MemoryFileSystem

from agencerdas.stores import Store
from agencerdas.stores.errors import AgencerdasError

#: ``--scheduler local`` starts a LocalCluster on this machine instead of connecting to one.
LOCAL = "local"
#: Seconds to reach a scheduler, and to wait for its first worker.
CONNECT_TIMEOUT_S = 30
WORKER_TIMEOUT_S = 120
#: Mount types whose files every machine mounting them sees (``/proc/self/mounts`` names).
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "ocfs2", "gfs2",
    "panfs", "wekafs", "afs", "fuse.sshfs", "fuse.glusterfs", "fuse.ceph-fuse", "fuse.gcsfuse", "fuse.s3fs",
    "fuse.juicefs", "fuse.rclone", "fuse.mountpoint-s3", "fuse.goofys",
})


def is_remote(scheduler: str) -> bool:
    """Whether the workers of ``scheduler`` may run on other machines.

    ``local`` and loopback addresses (``tcp://127.0.0.1:8786``, ``localhost:8786``,
    ``tcp://[::1]:8786``) are this machine; any other address may not be.
    """
    if scheduler == LOCAL:
        return False
    host = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}").hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return True


def filesystem_type(path: str) -> str | None:
    """Type of the mount holding ``path`` (``ext4``, ``nfs4``, ...) on Linux; None where it is unknown."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    real, best, kind = os.path.realpath(path), "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])  # \040 is a space
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fields[2]
    return kind


def check_shared_store(scheduler: str, store: Store) -> None:
    """Refuse a store that the workers of ``scheduler`` cannot write to, before any work starts."""
    if isinstance(store.fs, MemoryFileSystem):
        raise AgencerdasError(
            f"store {store.url} lives in this process's memory, which Dask workers (other processes) cannot "
            "write to; give a directory or an object-store URL"
        )
    if store.local and is_remote(scheduler) and filesystem_type(store.root) not in NETWORK_FILESYSTEMS:
        raise AgencerdasError(
            f"store {store.url} is a local path, but --scheduler {scheduler} runs the tasks on workers that may be "
            "other machines, and they write entries straight into the store; give a shared store: an object-store "
            "URL (e.g. s3://bucket/prefix, see README 'Scaling out') or a directory on a network filesystem "
            "(NFS, Lustre, ...) mounted at the same path on every worker"
        )


@contextmanager
def task_backend(scheduler: str | None, jobs: int) -> Iterator[int]:
    """Make joblib run on the backend for ``scheduler``; yields how many tasks run at once.

    * None: joblib's loky processes on this machine, ``jobs`` of them, one BLAS/OpenMP
      thread each (parallelism comes from processes).
    * ``local``: a Dask LocalCluster of ``jobs`` single-threaded worker processes here.
    * an address (``tcp://host:8786``): that scheduler's cluster; its worker threads,
      not ``jobs``, set the parallelism. (Dask's nannies give each worker one BLAS thread.)
    """
    if scheduler is None:
        with joblib.parallel_config(backend="loky", inner_max_num_threads=1):
            yield jobs
        return
    with _dask_client(scheduler, jobs) as client:
        with joblib.parallel_config(backend="dask", client=client):
            yield max(1, sum(client.nthreads().values()))


@contextmanager
def _dask_client(scheduler: str, jobs: int):
    """A connected ``distributed.Client`` with at least one worker, closed (cluster too) on exit."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise AgencerdasError(
            "--scheduler needs dask.distributed; install it with `pip install 'agencerdas[scale]'`"
        ) from None
    if scheduler == LOCAL:
        # Scheduler and workers listen on loopback only. No dashboard: it would need bokeh; for one, start
        # `dask scheduler` yourself and pass its address.
        with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            with Client(cluster, set_as_default=False) as client:
                yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise AgencerdasError(
            f"cannot reach the Dask scheduler at {scheduler} ({exc}); check the address that `dask scheduler` printed"
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKER_TIMEOUT_S)
        except (OSError, TimeoutError):
            raise AgencerdasError(
                f"the Dask scheduler at {scheduler} has no workers after {WORKER_TIMEOUT_S} s; "
                f"start some with `dask worker {scheduler}`"
            ) from None
        yield client
