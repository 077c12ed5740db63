"""The durability section: the same entries written with and without fsync, and its report (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

from agencerdas.bench.durability import RUNS, durability_section
from agencerdas.bench.report import _durability


def test_durability_section_writes_both_ways_and_reports_the_ratio(tmp_path: Path) -> None:
    messages: list[str] = []
    result = durability_section(tmp_path, "tiny", messages.append)
    entries, frames = RUNS["tiny"]
    assert (result["entries"], result["frames"]) == (entries, frames) and messages
    assert result["durable"]["seconds"] > 0 and result["plain"]["seconds"] > 0 and result["ratio"] > 0
    assert result["filesystem"]  # the figure belongs to a filesystem: it is named
    assert not (tmp_path / "durability").exists()  # its stores are scratch
    table = "\n".join(_durability(result))
    assert "## Durability" in table and "durable=False" in table and "x the write time" in table
