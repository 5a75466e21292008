"""The docstring examples of the data modules run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "image_io",
    "image_file_dataset",
    "image_folder",
    "label_csv",
    "isic_classification",
    "medmnist",
    "dermamnist_jpeg",
    "synthetic_lesions",
    "make_dataset",
    "resumable_loader",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"lightly_derm.data.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
