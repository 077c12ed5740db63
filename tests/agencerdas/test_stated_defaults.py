"""Every default the README and docs state as `NAME=VALUE` is the training config's default.

A statement is a backticked span holding NAME=VALUE pairs (NAME a training override) with the word
"default" within a few words of it and no other backticked span in between, e.g. "(on by default:
`AUG_WARP=0.1 AUG_GAIN_DB=6`)" or
"`PSEUDO=include` (default". A stated default that the code no longer has fails here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from agencerdas.training.config import TrainConfig, resolve

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NAMES = {f.name.upper() for f in dataclasses.fields(TrainConfig)} - {"PRESET"}
#: How far (characters) "default" may be from the span to make it a statement of a default.
NEAR = 40
#: Lines about history (the dated log) quote old values on purpose.
HISTORY = ROOT / "docs" / "results.md"


def _says_default(before: str, after: str) -> bool:
    """Whether "default" is near the span with no other backticked span in between (a list of choices
    names the default once, after its own span)."""
    at = before.rfind("default")
    if at >= 0 and not set(before[at:]) & set("`)"):  # "`A=1` (default), `A=2`": the default is A=1
        return True
    at = after.find("default")
    return at >= 0 and not set(after[:at]) & set("`;")  # "`A=2`; by default `B=1`": that default is B's


def statements() -> list[tuple[str, str]]:
    """(where, "NAME=VALUE") of every stated default."""
    found = []
    for document in DOCUMENTS:
        if document == HISTORY:
            continue
        text = document.read_text(encoding="utf-8")
        for span in re.finditer(r"`([^`\n]+)`", text):
            if not _says_default(text[max(0, span.start() - NEAR) : span.start()].lower(),
                                 text[span.end() : span.end() + NEAR].lower()):
                continue
            for pair in re.findall(r"\b([A-Z][A-Z0-9_]*)=([^\s`]+)", span.group(1)):
                if pair[0] in NAMES:
                    line = text.count("\n", 0, span.start()) + 1
                    found.append((f"{document.relative_to(ROOT)}:{line}", "=".join(pair)))
    return found


def test_the_documents_state_some_defaults():
    assert len(statements()) >= 5


@pytest.mark.parametrize("where, pair", statements())
def test_a_stated_default_is_the_config_s(where, pair):
    assert resolve("optimized", [pair]) == resolve("optimized"), f"{where} states {pair} as a default"


def test_a_list_of_choices_states_only_the_one_called_default():
    text = "Training takes `PSEUDO=include` (default), `PSEUDO=exclude` or `PSEUDO=weight=0.5`; by default `EPOCHS=15`"
    spans = [(m.start(), m.end()) for m in re.finditer(r"`[^`]+`", text)]
    said = [_says_default(text[max(0, a - NEAR) : a].lower(), text[b : b + NEAR].lower()) for a, b in spans]
    assert said == [True, False, False, True]
