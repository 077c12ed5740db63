"""The README's commands are real: every `make TARGET` that the README or a docs page names is a
target of the Makefile, every `agencerdas SUBCOMMAND --flag` of the README's command table (and of
any command line quoted in the README or docs) is accepted by the real argument parser, and the
table lists every subcommand the parser shows.

A README that names a target, a subcommand, a flag or a choice that does not exist fails here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from agencerdas.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
MAKE = re.compile(r"(?:^|[\s;&(|])make((?:\s+[^\s#;&|]+)+)")
AGENCERDAS = re.compile(r"(?:^|[\s;&(|])agencerdas\s+([a-z][a-z-]*)\b([^#;&]*)")
FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _code(path: Path) -> list[str]:
    """The shell code of a markdown file, one command line per item: the lines of its fenced blocks
    that are not in another language (backslash continuations joined, comments dropped) and its inline
    code spans (``\\|`` unescaped)."""
    text = path.read_text(encoding="utf-8")
    pieces = []
    for language, block in FENCE.findall(text):
        if language.strip() not in ("", "bash", "sh", "shell", "console"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            pieces.append(line.split("#", 1)[0] if not line.lstrip().startswith("#") else "")
    pieces += [span.replace("\\|", "|") for span in INLINE.findall(FENCE.sub("", text))]
    return [piece for piece in pieces if piece.strip()]


def _make_targets(pieces: list[str]) -> set[str]:
    """Goals of every ``make ...`` in ``pieces``: the words after ``make`` that are not ``NAME=VALUE``
    assignments or options."""
    targets = set()
    for piece in pieces:
        for words in MAKE.findall(piece):
            targets |= {word for word in words.split() if "=" not in word and not word.startswith("-")}
    return targets


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _visible_subcommands(parser: argparse.ArgumentParser) -> set[str]:
    (action,) = [a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction)]
    return {choice.dest for choice in action._choices_actions if choice.help != argparse.SUPPRESS}


def _table_rows() -> list[str]:
    """The first cell of each row of the README's command table (section "The command line")."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## The command line", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.match(r"\|\s*`((?:[^`])+)`\s*\|", line)
        if match and match.group(1).startswith("agencerdas "):
            rows.append(match.group(1).replace("\\|", "|"))
    return rows


def _uses(pieces: list[str]) -> set[tuple[str, str]]:
    """(subcommand, flag) for every ``agencerdas SUBCOMMAND ... --flag`` in ``pieces``, and
    (subcommand, "") for every subcommand named."""
    uses = set()
    for piece in pieces:
        for sub, rest in AGENCERDAS.findall(piece):
            uses.add((sub, ""))
            uses |= {(sub, flag) for flag in FLAG.findall(rest)}
    return uses


PARSER = build_parser()
SUBCOMMANDS = _subcommands(PARSER)
README_CODE = _code(README)
TABLE = _table_rows()


def _target_params():
    named = {(path.relative_to(ROOT).as_posix(), target) for path in [README, *DOCS]
             for target in _make_targets(_code(path))}
    return [pytest.param((where, target), id=f"{where}:make {target}") for where, target in sorted(named)]


def _table_params():
    params = []
    for row in TABLE:
        sub = row.split()[1]
        for flag in [""] + FLAG.findall(row):
            params.append(pytest.param((sub, flag), id=f"table:{sub} {flag}".strip()))
    return params


def _quoted_params():
    uses = {(path.relative_to(ROOT).as_posix(), sub, flag) for path in [README, *DOCS]
            for sub, flag in _uses(_code(path))}
    return [pytest.param((where, sub, flag), id=f"{where}:{sub} {flag}".strip()) for where, sub, flag in sorted(uses)]


def test_the_readme_is_parsed():
    """The parsing above finds what the README certainly holds, so the tests below are not vacuous."""
    assert {"demo", "test", "install", "features", "train", "evaluate", "diarize"} <= _make_targets(README_CODE)
    assert [row.split()[1] for row in TABLE][:3] == ["features", "store", "train"]
    assert ("train", "--resume") in _uses(README_CODE)
    assert {"tensorboard"} <= _make_targets(README_CODE) and ("train", "--init-from") in _uses(README_CODE)
    assert {"help", "demo", "test", "install"} <= _makefile_targets()


@pytest.mark.parametrize("named", _target_params())
def test_every_make_target_named_exists(named):
    where, target = named
    assert target in _makefile_targets(), f"{where} names `make {target}`, which the Makefile does not define"


@pytest.mark.parametrize("named", _table_params())
def test_every_flag_of_the_command_table_is_accepted(named):
    sub, flag = named
    assert sub in SUBCOMMANDS, f"the README's command table names `agencerdas {sub}`, which does not exist"
    if flag:
        assert flag in SUBCOMMANDS[sub]._option_string_actions, (
            f"the README's command table names `agencerdas {sub} {flag}`, which the parser does not accept")


@pytest.mark.parametrize("named", _quoted_params())
def test_every_quoted_command_line_uses_real_flags(named):
    where, sub, flag = named
    assert sub in SUBCOMMANDS, f"{where} quotes `agencerdas {sub}`, which does not exist"
    if flag:
        assert flag in SUBCOMMANDS[sub]._option_string_actions, (
            f"{where} quotes `agencerdas {sub} {flag}`, which the parser does not accept")


def test_the_command_table_lists_every_subcommand():
    assert {row.split()[1] for row in TABLE} == _visible_subcommands(PARSER)


def test_the_choices_in_the_command_table_are_the_parsers():
    """Words written as alternatives (`ls | verify | gc`, `--size tiny | small | full`) are choices the
    parser accepts at that place."""
    for row in TABLE:
        sub = row.split()[1]
        parser = SUBCOMMANDS[sub]
        tokens = row.replace("[", " ").replace("]", " ").replace("|", " | ").split()[2:]
        positional = [a for a in parser._actions if not a.option_strings and a.choices]
        words = _alternatives(tokens, 0)
        if positional and words:
            assert set(words) <= set(positional[0].choices), f"`agencerdas {sub}`: {words} vs {positional[0].choices}"
        for i, token in enumerate(tokens):
            action = parser._option_string_actions.get(token)
            if action is not None and action.choices:
                values = _alternatives(tokens, i + 1)
                assert values and set(values) <= set(action.choices), (
                    f"`agencerdas {sub} {token}`: the README offers {values}, the parser {list(action.choices)}")


def _alternatives(tokens: list[str], start: int) -> list[str]:
    """The words ``a | b | c`` beginning at ``tokens[start]`` (none when an option comes first)."""
    words = []
    i = start
    while i < len(tokens) and not tokens[i].startswith("-") and tokens[i] != "|":
        words.append(tokens[i])
        if i + 2 < len(tokens) and tokens[i + 1] == "|" and not tokens[i + 2].startswith("-"):
            i += 2
        else:
            break
    return words

