"""Corpora as practitioners already describe them: a pyannote.database protocol, Lhotse or NeMo manifests,
a Kaldi data directory. One reader per format, each yielding the records an audio directory yields
(:class:`~pipeline.discover.Recording`: id, audio path, optional region, turns, UEM, declared split), so
the rest of the pipeline, and the store's content keys, cannot tell which way a recording came in.

Never imports torch: Lhotse and NeMo manifests are read as the JSON lines they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agencerdas.stores.errors import AgencerdasError

from ..discover import Discovery
from .common import PARTS

__all__ = ["CorpusSource", "MANIFEST_FORMATS", "PARTS", "TRAINING_PARTS"]

#: ``--manifest-format``: ``auto`` tells Lhotse from NeMo by each file's first line.
MANIFEST_FORMATS = ("auto", "lhotse", "nemo")

#: The parts a features run reads: a declared test subset is left for `evaluate`.
TRAINING_PARTS = ("train", "validation")


@dataclass
class CorpusSource:
    """A corpus description to read instead of an audio directory; exactly one kind is given.

    ``manifests`` and ``kaldi_dirs`` are ``[SPLIT=]PATH`` texts (``train=``, ``dev=``/``development=``,
    ``test=``): a split prefix declares the file's recordings to be in that split. ``parts`` are the
    view's parts to read (``train``, ``validation``, ``test``) when the corpus declares splits.
    """

    protocol: str | None = None
    database_yml: Path | None = None
    manifests: list[str] = field(default_factory=list)
    manifest_format: str = "auto"
    kaldi_dirs: list[str] = field(default_factory=list)
    parts: tuple[str, ...] = TRAINING_PARTS

    def __post_init__(self) -> None:
        given = [flag for flag, value in (("--protocol", self.protocol), ("--manifest", self.manifests),
                                          ("--kaldi-dir", self.kaldi_dirs)) if value]
        if len(given) != 1:
            raise AgencerdasError(f"give one corpus description: --protocol, --manifest or --kaldi-dir (got "
                                  f"{', '.join(given) or 'none'}); nothing was written")
        if self.database_yml is not None and not self.protocol:
            raise AgencerdasError("--database-yml goes with --protocol NAME; nothing was written")
        if self.manifest_format not in MANIFEST_FORMATS:
            raise AgencerdasError(f"--manifest-format must be one of {', '.join(MANIFEST_FORMATS)}, got "
                                  f"{self.manifest_format!r}")
        unknown = [part for part in self.parts if part not in PARTS.values()]
        if unknown:
            raise AgencerdasError(f"unknown subset {unknown[0]!r}; use one of {', '.join(PARTS)}")

    @classmethod
    def from_flags(cls, args, parts: tuple[str, ...] = TRAINING_PARTS) -> "CorpusSource | None":
        """The description the command-line flags give (None when they give none: an audio directory)."""
        if not (args.protocol or args.manifest or args.kaldi_dir):
            if args.database_yml:
                raise AgencerdasError("--database-yml goes with --protocol NAME; nothing was written")
            return None
        return cls(protocol=args.protocol, database_yml=Path(args.database_yml) if args.database_yml else None,
                   manifests=list(args.manifest or []), manifest_format=args.manifest_format,
                   kaldi_dirs=list(args.kaldi_dir or []), parts=parts)

    def describe(self) -> str:
        """The description in words, for reports (e.g. "pyannote.database protocol X")."""
        if self.protocol:
            return f"pyannote.database protocol {self.protocol}"
        if self.manifests:
            return f"manifest {', '.join(self.manifests)}"
        return f"Kaldi data dir {', '.join(self.kaldi_dirs)}"

    def read(self) -> Discovery:
        """The recordings of the parts wanted; AgencerdasError for a description that is wrong."""
        if self.protocol:
            from .protocol import read_protocol

            return read_protocol(self.protocol, self.database_yml, self.parts)
        if self.manifests:
            from .manifests import read_manifests

            return read_manifests(self.manifests, self.manifest_format, self.parts)
        from .kaldi import read_kaldi

        return read_kaldi(self.kaldi_dirs, self.parts)
