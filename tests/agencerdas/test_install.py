"""The installed distribution adds one namespace, ``agencerdas``, to site-packages: the repository's
top-level folders (``pipeline/``, ``training/``, ...) are installed as ``agencerdas.pipeline``, ... so
that a user's ``training.py`` or another distribution's ``inference`` package never collides with them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The repository's folders installed under the namespace (``agencerdas/`` itself is the namespace).
MAPPED = ("stores", "pipeline", "scoring", "training", "inference", "bench", "pretrained")


def _package_folders() -> set[str]:
    """Installed names of every package folder in the checkout (a folder with ``__init__.py``)."""
    names = {"agencerdas"} | {".".join(p.parent.relative_to(ROOT / "agencerdas").parts) for p in
                              (ROOT / "agencerdas").rglob("__init__.py") if p.parent != ROOT / "agencerdas"}
    for top in MAPPED:
        for init in (ROOT / top).rglob("__init__.py") if (ROOT / top).is_dir() else ():
            names.add(".".join(("agencerdas", *init.parent.relative_to(ROOT).parts)))
    return names


def test_every_package_folder_is_installed_under_the_namespace():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _package_folders()
    assert all(name.startswith("agencerdas") for name in config["package-dir"])


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory) -> Path:
    """A new virtual environment holding the project's wheel, built from the checkout with no network;
    its dependencies come from this interpreter's site-packages (a ``.pth`` line, which runs none of the
    ``.pth`` files there: the development install's import hook stays out)."""
    tmp = tmp_path_factory.mktemp("install")
    # A copy of the sources: setuptools writes build/ and *.egg-info beside the tree it builds.
    source = shutil.copytree(ROOT, tmp / "source", ignore=shutil.ignore_patterns(
        ".*", "build", "*.egg-info", "__pycache__", "data", "runs", "store", "tests", "docs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp / "wheel"), str(source)], check=True, capture_output=True, timeout=600)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True, timeout=120)
    python = tmp / "venv" / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    wheel = next((tmp / "wheel").glob("agencerdas-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    return tmp


def _top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist()}


def test_the_wheel_holds_one_namespace(fresh_env):
    top = _top_level(next((fresh_env / "wheel").glob("agencerdas-*.whl")))
    assert {name for name in top if not name.endswith(".dist-info")} == {"agencerdas"}


def test_generic_names_do_not_resolve_to_the_project_and_the_commands_work(fresh_env, tmp_path):
    python = fresh_env / "venv" / "bin" / "python"
    # A user's own ``training.py`` beside their script keeps its name; the project still imports.
    (tmp_path / "training.py").write_text("MINE = True\n")
    probe = ("import importlib.util, sys\n"
             "import training\n"
             "assert training.MINE\n"
             "for name in ('inference', 'stores', 'pipeline', 'scoring', 'bench', 'pretrained'):\n"
             "    assert importlib.util.find_spec(name) is None, name\n"
             "import agencerdas\n"
             "from agencerdas import Diarizer, train\n"
             "from agencerdas.training.config import TrainConfig\n"
             "assert callable(train) and hasattr(Diarizer, 'from_checkpoint') and TrainConfig().epochs > 0\n"
             "print(agencerdas.__file__)\n")
    done = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert str(fresh_env / "venv") in done.stdout
    for command in ("features", "train", "evaluate", "diarize"):
        helped = subprocess.run([python, "-m", "agencerdas", command, "--help"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=300)
        assert helped.returncode == 0 and "usage:" in helped.stdout, (command, helped.stderr)
