"""Shared fixtures: real plugin distributions on temporary paths, shared data folders.

Tests write only under their temporary folders: :func:`checkout_unchanged` fails the
session when the checkout has files or changes after it that it did not have before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The shared data folder sits beside the checkout (a git worktree may be deeper);
# LIGHTLY_DERM_SHARED_DATA points elsewhere.
SHARED_DATA = Path(
    os.environ.get("LIGHTLY_DERM_SHARED_DATA")
    or next(
        (
            p / "shared" / "data"
            for p in REPO.parents
            if (p / "shared" / "data").is_dir()
        ),
        REPO.parent / "shared" / "data",
    )
)
ISIC_DIR = SHARED_DATA / "isic2017-seg-subset"
DERMAMNIST_DIR = SHARED_DATA / "dermamnist-jpg"
PLUGIN_TEMPLATE = REPO / "examples" / "plugin_template"


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Skips ``gpu``-marked tests when no CUDA device is present."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # The marker, not ``"gpu" in item.keywords``: keywords also hold the names of
        # the test's packages (tests/transforms/gpu/).
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Every test runs torch on one thread.

    Tiny models train faster and steadier on one thread than on two busy cores, where
    the OpenMP threads of a small convolution spend most of their time waiting for each
    other (measured on the 2-core CI machine: FG-SSL's progressive test 11 s on one
    thread, 100 s on two).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: Caches that running Python and the tools write beside the code (not test output).
TOOL_CACHES = ("__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache")


def checkout_state(repo: Path = REPO) -> set[str] | None:
    """``git status --porcelain`` of the checkout with ignored and untracked files.

    Ignored files count too (a ``*.ckpt`` or ``build/`` a test leaves is ignored by
    git, and still litter); only Python's and the tools' caches are left out. ``None``
    when ``repo`` is no git checkout or git is missing.
    """
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return {
        line
        for line in result.stdout.splitlines()
        if line.strip()
        and not any(part in TOOL_CACHES for part in Path(line[3:]).parts)
        and not line.endswith((".pyc", ".pyo"))
    }


@pytest.fixture(scope="session", autouse=True)
def checkout_unchanged() -> Iterator[None]:
    """Fails the session when the tests left new files or changes in the checkout."""
    before = checkout_state()
    yield
    if before is None:
        return
    after = checkout_state()
    new = sorted((after or set()) - before)
    if new:
        pytest.fail(
            "the tests changed the checkout (write under tmp_path instead): "
            + ", ".join(line[3:] + f" [{line[:2].strip()}]" for line in new[:20])
            + (f", and {len(new) - 20} more" if len(new) > 20 else ""),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def isic_dir() -> Path:
    """The shared ISIC 2017 subset (images/, masks/, labels.csv); skips when absent."""
    if not (ISIC_DIR / "images").is_dir():
        pytest.skip(f"shared ISIC data not found at {ISIC_DIR}")
    return ISIC_DIR


@pytest.fixture(scope="session")
def isic_image_paths(isic_dir: Path) -> list[Path]:
    """The shared ISIC image files, sorted by id."""
    return sorted((isic_dir / "images").glob("ISIC_*.jpg"))


@pytest.fixture(scope="session")
def dermamnist_dir() -> Path:
    """The shared DermaMNIST JPEG export (dermamnist_jpg.zip, labels.csv); skips when absent."""
    if not (DERMAMNIST_DIR / "dermamnist_jpg.zip").is_file():
        pytest.skip(f"shared DermaMNIST data not found at {DERMAMNIST_DIR}")
    return DERMAMNIST_DIR


@pytest.fixture(scope="session")
def plugin_template_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin package installed by pip into a fresh folder (real metadata).

    pip builds a local project in place (``build/``, ``*.egg-info``), so it installs a
    temporary copy of the template, never the checkout's.
    """
    target = tmp_path_factory.mktemp("plugin_template_site")
    source = tmp_path_factory.mktemp("plugin_template_source") / PLUGIN_TEMPLATE.name
    shutil.copytree(
        PLUGIN_TEMPLATE,
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture
def clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Removes the plugin environment variables for one test."""
    for var in (
        "LIGHTLY_DERM_DISABLE_PLUGIN_AUTOLOAD",
        "LIGHTLY_DERM_BLOCK_PLUGINS",
        "LIGHTLY_DERM_PLUGINS",
    ):
        monkeypatch.delenv(var, raising=False)


MakeDist = Callable[..., Path]


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    """Writes an installed distribution (a dist-info folder plus modules) onto sys.path.

    ``make_dist("my-dist", "1.0", entry_points={"ep": "module"}, modules={"module": src})``
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    loaded: list[str] = []

    def make(
        name: str,
        version: str,
        entry_points: dict[str, str],
        modules: dict[str, str],
    ) -> Path:
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        lines = ["[lightly_derm]"] + [
            f"{ep} = {target}" for ep, target in entry_points.items()
        ]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            loaded.append(module)
        return info

    yield make
    for module in loaded:
        sys.modules.pop(module, None)
