"""The public surface: the package root exports the building blocks and the jobs."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import lightly_derm

SUBPACKAGES = [
    "callbacks",
    "data",
    "evaluation",
    "jobs",
    "loss",
    "methods",
    "miners",
    "models",
    "plugins",
    "segmentation",
    "transforms",
    "utils",
]


def test_root_exports_the_building_blocks_and_jobs() -> None:
    for name in lightly_derm.__all__:
        assert getattr(lightly_derm, name) is not None, name
    assert set(lightly_derm.__all__) <= set(dir(lightly_derm))
    assert set(lightly_derm.__all__) == {"__version__", "registry", *lightly_derm._LAZY}
    from lightly_derm.jobs import pretrain
    from lightly_derm.methods import GraVIS

    assert lightly_derm.pretrain is pretrain and lightly_derm.GraVIS is GraVIS
    with pytest.raises(AttributeError, match="no attribute 'parse_key_values'"):
        lightly_derm.parse_key_values  # noqa: B018


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(f"lightly_derm.{name}")
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing


@pytest.mark.parametrize(
    "module, name",
    [
        ("lightly_derm.jobs", "parse_key_values"),
        ("lightly_derm.jobs", "ContinuingCSVLogger"),
        ("lightly_derm.jobs", "trainer_options"),
        ("lightly_derm.utils", "record_host_syncs"),
        ("lightly_derm.data", "IDXImageDataset"),
    ],
)
def test_internals_are_not_exported(module: str, name: str) -> None:
    assert name not in importlib.import_module(module).__all__


def test_internals_stay_importable_from_their_modules() -> None:
    from lightly_derm.jobs.config import parse_key_values
    from lightly_derm.jobs.csv_logger import ContinuingCSVLogger
    from lightly_derm.jobs.trainer import trainer_options
    from lightly_derm.utils.host_sync import record_host_syncs

    assert all((parse_key_values, ContinuingCSVLogger, trainer_options))
    assert record_host_syncs is not None


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, lightly_derm; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
