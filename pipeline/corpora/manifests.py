"""``--manifest [SPLIT=]FILE`` (repeatable): Lhotse and NeMo manifests, told apart by their first line or by
``--manifest-format``, grouped by their split prefix (``train=``, ``dev=``, ``test=``)."""

from __future__ import annotations

from pathlib import Path

from agencerdas.stores.errors import AgencerdasError

from ..discover import Discovery
from .common import PARTS, Corpus, declared_part, json_lines
from .lhotse_json import lhotse_kind, read_lhotse
from .nemo import read_nemo

NEMO = "NeMo manifest"


def manifest_kind(path: Path, manifest_format: str) -> str:
    """What a manifest holds (a Lhotse set or a NeMo manifest), from its first line."""
    for where, item in json_lines(path):
        kind = NEMO if "audio_filepath" in item else lhotse_kind(item)
        if kind is None or (manifest_format == "nemo" and kind != NEMO) or (
                manifest_format == "lhotse" and kind == NEMO):
            expected = {"nemo": "a NeMo manifest ('audio_filepath')", "lhotse": "a Lhotse manifest",
                        "auto": "a Lhotse RecordingSet ('sources'), SupervisionSet ('recording_id'), CutSet "
                                "('recording') or a NeMo manifest ('audio_filepath')"}[manifest_format]
            raise AgencerdasError(f"{where}: expected {expected}, got a line with keys {sorted(item)}; check the "
                                  "file (or --manifest-format), nothing was written")
        return kind
    raise AgencerdasError(f"{path}: the manifest is empty; nothing was written")


def read_manifests(texts: list[str], manifest_format: str, parts: tuple[str, ...]) -> Discovery:
    """The recordings of the ``--manifest`` files, in the declared ``parts`` when they declare splits."""
    corpus = Corpus("manifest", parts)
    groups: dict[str | None, dict[str, list[Path]]] = {}
    names: dict[str, str] = {}
    for text in texts:
        subset, name = declared_part(text)
        path = Path(name)
        if not path.is_file():
            raise AgencerdasError(f"manifest (--manifest) {name} does not exist or is not a file; nothing was written")
        part = PARTS[subset] if subset else None
        if subset:
            names[part] = subset
        groups.setdefault(part, {}).setdefault(manifest_kind(path, manifest_format), []).append(path)
    for part, files in groups.items():
        read_lhotse(corpus, files, part)
        read_nemo(corpus, files.get(NEMO, []), part)
    return corpus.finish("--manifest split prefixes", parts, names,
                         "agencerdas evaluate --model MODEL --manifest SPLIT=FILE ...")
