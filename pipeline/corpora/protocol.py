"""``--protocol NAME``: a pyannote.database protocol (``Database.SpeakerDiarization.Protocol``), read with
pyannote.database itself from ``--database-yml FILE``, else from ``PYANNOTE_DATABASE_CONFIG`` (paths
separated by ``;``), else from ``./database.yml`` and ``~/.pyannote/database.yml``, as pyannote does.

Its subsets are the view's splits: train -> train, development -> validation; test is left out of a
training view and read by ``evaluate --protocol NAME --subset test``. Audio is found through the
``Databases`` section (pyannote's ``FileFinder``); turns come from ``annotation`` and the UEM from
``annotated``. pyannote.database cuts the turns to the annotated regions, and times are rounded to the
microsecond (RTTM's milliseconds come back exactly).
"""

from __future__ import annotations

import os
from pathlib import Path

from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.segments import Segment

from ..discover import Discovery, Recording
from .common import Corpus

SUBSETS = {"train": "train", "development": "validation", "test": "test"}


def config_files(database_yml: Path | None) -> list[Path]:
    """The database.yml files to load, in pyannote.database's order of precedence."""
    if database_yml is not None:
        if not Path(database_yml).is_file():
            raise AgencerdasError(f"--database-yml {database_yml} does not exist or is not a file; nothing was written")
        return [Path(database_yml)]
    env = os.environ.get("PYANNOTE_DATABASE_CONFIG", "")
    if env:
        paths = [Path(p).expanduser() for p in env.split(";") if p]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise AgencerdasError(f"PYANNOTE_DATABASE_CONFIG names {', '.join(missing)}, which does not exist; "
                                  "nothing was written")
        return paths
    paths = [p for p in (Path.cwd() / "database.yml", Path("~/.pyannote/database.yml").expanduser()) if p.is_file()]
    if not paths:
        raise AgencerdasError("--protocol needs a pyannote.database config: pass --database-yml FILE or set "
                              "PYANNOTE_DATABASE_CONFIG; nothing was written")
    return paths


def _protocol(name: str, files: list[Path]):
    """The protocol ``name`` with audio found by pyannote's FileFinder; AgencerdasError naming the config."""
    try:
        from pyannote.database import FileFinder
        from pyannote.database.registry import Registry
    except ImportError:
        raise AgencerdasError("--protocol reads pyannote.database protocols with the pyannote.database package, which "
                              "is not installed here: `pip install pyannote.database` (pure Python, no torch)") from None
    registry = Registry()
    for path in files:
        try:
            registry.load_database(path)
        except Exception as exc:  # yaml, missing lists, bad entries: all the user's config
            raise AgencerdasError(f"{path}: cannot load it as a pyannote.database config ({type(exc).__name__}: "
                                  f"{exc}); nothing was written") from None
    try:
        protocol = registry.get_protocol(name, preprocessors={"audio": FileFinder(registry=registry)})
    except (ValueError, KeyError, AttributeError, TypeError):
        known = ", ".join(sorted(registry)) or "none"
        raise AgencerdasError(f"no pyannote.database protocol {name!r} in {', '.join(str(p) for p in files)} "
                              f"(protocols there: {known}); names are Database.Task.Protocol, nothing was written") \
            from None
    return registry, protocol


def _files(protocol, name: str, subset: str) -> list:
    try:
        return list(getattr(protocol, subset)())
    except NotImplementedError:
        return []
    except Exception as exc:  # a list, RTTM or UEM file the config names is missing or broken
        raise AgencerdasError(f"protocol {name}, subset {subset}: {type(exc).__name__}: {exc}; nothing was written") \
            from None


def _turns(file) -> list[Segment] | None:
    if "annotation" not in file:
        return None
    turns = {Segment(round(seg.start, 6), round(seg.end - seg.start, 6), str(label))
             for seg, _, label in file["annotation"].itertracks(yield_label=True) if seg.end > seg.start}
    return sorted(turns) or None


def _uem(file) -> list[tuple[float, float]] | None:
    annotated = file["annotated"] if "annotated" in file else None
    return [(round(s.start, 6), round(s.end, 6)) for s in annotated] or None if annotated is not None else None


def read_protocol(name: str, database_yml: Path | None, parts: tuple[str, ...]) -> Discovery:
    """The recordings of the protocol's subsets that map to ``parts``; every subset is checked for overlap."""
    files = config_files(database_yml)
    _, protocol = _protocol(name, files)
    corpus = Corpus("pyannote.database config", parts)
    for subset, part in SUBSETS.items():
        for file in _files(protocol, name, subset):
            uri, where = str(file["uri"]), f"protocol {name}, subset {subset}"
            if part not in parts:
                corpus.declare(uri, f"{where}, uri {uri!r}", part)  # only its id: for the overlap check
                continue
            try:
                path = Path(file["audio"])
            except (FileNotFoundError, KeyError) as exc:
                reason = (exc.args[0] if isinstance(exc, FileNotFoundError) else
                          f"the config's Databases section has no entry for database {file['database']!r}")
                corpus.problem(uri, f"{where}: no audio ({reason}); fix the Databases section of the config")
                continue
            if corpus.audio(path, where, uri, part=part) is None:
                continue
            corpus.add(Recording(uri, path, _turns(file), _uem(file)), f"{where}, uri {uri!r}", part)
    return corpus.finish(f"pyannote.database protocol {name}", parts, {p: s for s, p in SUBSETS.items()},
                         f"agencerdas evaluate --model MODEL --protocol {name}")
