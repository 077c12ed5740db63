"""The house rules of the layout: imports run one way between packages and files, production code
never imports the test suite, and the light subcommands stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.builders import make_corpus
from tests.fresh import loaded_by

ROOT = Path(__file__).resolve().parents[2]
#: Each production package and the packages of ours it may import: the layering, bottom up.
ALLOWED = {
    "stores": set(),
    "pipeline": {"stores"},
    "scoring": {"stores"},
    "training": {"stores", "scoring"},
    "pretrained": {"stores"},
    "inference": {"stores", "pipeline", "scoring", "training", "pretrained"},
    "bench": {"stores", "pipeline", "scoring", "training", "inference"},
    "agencerdas": {"stores", "pipeline", "scoring", "training", "inference", "bench", "pretrained"},
}


def _modules() -> dict[str, Path]:
    """Every production module by its installed name (``training/loop.py`` is ``agencerdas.training.loop``)."""
    found = {}
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts if package == "agencerdas" else ("agencerdas", *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _layer(name: str) -> str:
    """The package of ``agencerdas.training.loop`` (``training``); the console script's modules are ``agencerdas``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else parts[0]


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of ours that ``name`` imports anywhere in its file (lazy imports count)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate.split(".")[0] == "tests":
                targets.add(candidate)
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def test_packages_import_only_the_layers_below_them_and_never_the_tests():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        for target in _imports(name, path, modules):
            top, other = _layer(name), _layer(target)
            if other != top and other not in ALLOWED[top]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_circle_between_files():
    modules = _modules()
    graph = {name: _imports(name, path, modules) & modules.keys() for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (circle := visit(nxt, path + [nxt])):
                return circle
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            circle = visit(name, [name])
            assert circle is None, "import circle: " + " -> ".join(circle)


def test_features_and_store_commands_never_import_torch(tmp_path):
    audio, rttm = make_corpus(tmp_path / "corpus", n=2, seconds=3.0)
    store = tmp_path / "store"
    loaded, _ = loaded_by(
        "from agencerdas.cli import main\n"
        f"assert main(['features', {str(audio)!r}, '--rttm-dir', {str(rttm)!r}, '--store', {str(store)!r},"
        " '--jobs', '1', '--quiet']) == 0\n"
        f"assert main(['store', 'ls', '--store', {str(store)!r}]) == 0\n"
        f"assert main(['store', 'verify', '--store', {str(store)!r}]) == 0\n",
        ("torch",),
    )
    assert loaded == [], loaded[:5]


def test_train_help_never_imports_librosa_and_python_m_agencerdas_works():
    loaded, printed = loaded_by(
        "from agencerdas.cli import main\n"
        "try:\n"
        "    main(['train', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0\n",
        ("librosa", "torch"),
    )
    assert loaded == []
    assert "--preset" in printed
    module = subprocess.run([sys.executable, "-m", "agencerdas", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert module.returncode == 0 and "features" in module.stdout and "train" in module.stdout
