"""Small builders that write a tiny corpus (synthetic voiced audio + matching RTTM) into a tmp dir.

The tone corpus itself is production code (``bench --size tiny`` uses it too)."""

from agencerdas.pipeline.simulate.tones import PITCHES, conversation, make_corpus, render, voiced

__all__ = ["PITCHES", "conversation", "make_corpus", "render", "voiced"]
