"""The "add a method" guide's example (examples/add_a_method.py) trains and registers."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "add_a_method.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("add_a_method", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["add_a_method"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["add_a_method"]


def test_the_method_trains(example) -> None:
    torch.manual_seed(0)
    assert math.isfinite(example.main(steps=2, input_size=32))


def test_the_method_gets_gpu_views_without_code(example) -> None:
    method = example.VICReg(backbone="resnet18", projection_dim=16, augment="gpu")
    assert method.gpu_view_transform(32).num_views == 2


def test_the_method_is_found_as_a_plugin(example) -> None:
    from lightly_derm.plugins import Registry

    registry = Registry()
    registry.register_plugin(example, name="add-a-method-example")
    method = registry.create("method", "vicreg", backbone="resnet18", projection_dim=16)
    assert isinstance(method, example.VICReg)
