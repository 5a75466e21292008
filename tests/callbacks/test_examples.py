"""The docstring examples of the callbacks (and to_rgb) run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "lightly_derm.callbacks.non_finite_loss",
    "lightly_derm.callbacks.exact_resume",
    "lightly_derm.callbacks.atomic_checkpoint_io",
    "lightly_derm.transforms.rgb",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.ELLIPSIS
    )
    assert result.failed == 0 and result.attempted > 0
