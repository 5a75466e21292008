"""Shared fixtures: real plugin distributions on temporary paths, shared data folders."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ISIC_DIR = SHARED_DATA / "isic2017-seg-subset"
DERMAMNIST_DIR = SHARED_DATA / "dermamnist-jpg"
PLUGIN_TEMPLATE = REPO / "examples" / "plugin_template"


@pytest.fixture(scope="session")
def plugin_template_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin package installed by pip into a fresh folder (real metadata)."""
    target = tmp_path_factory.mktemp("plugin_template_site")
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
            str(PLUGIN_TEMPLATE),
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
