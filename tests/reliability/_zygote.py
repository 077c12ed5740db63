"""A fork server for crash tests: pays the imports (and librosa warm-up) once, then forks a fresh
process per command that runs the real ``agencerdas`` CLI (``agencerdas.cli.main``) in its own
process group, so a test can SIGKILL it at any moment without paying seconds of start-up per trial.

Protocol (one JSON object per line): the test writes
``{"argv": [...], "env": {...}, "stdout": PATH, "stderr": PATH, "pause": {...}}``; the server
answers ``{"pid": N}`` at once and ``{"pid": N, "status": S}`` when the child is gone (S is the exit
code, or minus the signal number). ``pause`` makes the child stop for good at one precise point
(after touching ``pause["signal"]``) so the test can kill it exactly there:

* ``{"at": "save", "nth": k}``: the k-th checkpoint write, half of the bytes written to its temporary file;
* ``{"at": "commit", "nth": k}``: the k-th entry whose ``commit.json`` is written, just before its rename;
* ``{"at": "view"}``: the view's temporary file is written, just before it replaces the view.

Run as ``python -m tests.reliability._zygote [--torch]`` from the repository root.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import traceback
from pathlib import Path


def _pause_forever(signal_path: str) -> None:
    Path(signal_path).touch()
    while True:
        time.sleep(3600)


def _install_pause(pause: dict) -> None:
    at, nth, signal_path = pause["at"], int(pause.get("nth", 1)), pause["signal"]
    calls = [0]
    if at == "save":
        import torch

        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            calls[0] += 1
            if calls[0] != nth:
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            if isinstance(f, (str, os.PathLike)):
                with open(f, "wb") as handle:
                    handle.write(data[: len(data) // 2])
            else:
                f.write(data[: len(data) // 2])
                f.flush()
            _pause_forever(signal_path)

        torch.save = save
    elif at == "commit":
        real_rename = os.rename

        def rename(src, dst, *args, **kwargs):
            if "/_tmp/" in str(src) and os.path.exists(os.path.join(str(src), "commit.json")):
                calls[0] += 1
                if calls[0] == nth:
                    _pause_forever(signal_path)
            return real_rename(src, dst, *args, **kwargs)

        os.rename = rename
    elif at == "view":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if "/views/" in str(dst) and str(dst).endswith(".json"):
                _pause_forever(signal_path)
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        raise ValueError(f"unknown pause point {at!r}")


def _child(command: dict) -> None:
    os.setsid()  # its own process group: the test kills the whole group
    out = os.open(command["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(command["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.environ.update(command.get("env", {}))
    rc = 70
    try:
        if command.get("pause"):
            _install_pause(command["pause"])
        from agencerdas.cli import main

        rc = main(command["argv"])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - a traceback here is what the tests look for
        traceback.print_exc()
        rc = 70
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def serve() -> None:
    import agencerdas.pipeline.runner  # noqa: F401
    import agencerdas.cli  # noqa: F401
    from agencerdas.pipeline.features import FeatureConfig
    from agencerdas.pipeline.tasks import _warm_up

    if "--torch" in sys.argv:
        import torch  # noqa: F401
        import torch._dynamo  # noqa: F401 - what the first optimizer imports (seconds, once)

        import agencerdas.inference.diarize  # noqa: F401
        import agencerdas.training.loop  # noqa: F401
    _warm_up(FeatureConfig())
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(command)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(json.dumps({"pid": pid, "status": code}), flush=True)


if __name__ == "__main__":
    serve()
