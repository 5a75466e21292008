from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

import lightly_derm
from lightly_derm.plugins import (
    Component,
    PluginLoadWarning,
    Registry,
    flexunet,
    hookimpl,
)
from lightly_derm.segmentation import register_flexunet_backbones

REPO = Path(__file__).resolve().parents[2]
from lightly_derm.plugins.builtin import TIMM_ENCODER_MODELS  # noqa: E402

OURS = sorted(
    [f"lightly-derm-resnet{d}{stem}" for d in (18, 34, 50) for stem in ("", "-cifar")]
    + [f"timm-{m}" for m in TIMM_ENCODER_MODELS]
)


def _run(script: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _lightly_names() -> list[str]:
    return sorted(
        k
        for k in FLEXUNET_BACKBONE.register_dict
        if k.startswith(("lightly-derm-", "timm-"))
    )


@pytest.fixture
def restore_backbones(clean_plugin_env):
    yield
    register_flexunet_backbones()
    assert _lightly_names() == OURS


IMPORT_ORDERS = {
    "segmentation, then MONAI": """
        import lightly_derm.segmentation
        from monai.networks.nets import FlexibleUNet
        """,
    "MONAI, then segmentation": """
        from monai.networks.nets import FlexibleUNet
        import lightly_derm.segmentation
        """,
    "the package, then a segmentation class, then MONAI": """
        import lightly_derm
        from lightly_derm.segmentation import LesionSegmentation
        from monai.networks.nets import FlexibleUNet
        """,
    "MONAI's FlexibleUNet module, then an encoder": """
        from monai.networks.nets.flexible_unet import FlexibleUNet
        from lightly_derm.segmentation.encoders import ResNet50Encoder
        """,
}


@pytest.mark.slow
@pytest.mark.parametrize("order", list(IMPORT_ORDERS))
def test_every_import_order(order: str) -> None:
    """A fresh interpreter per order: FlexibleUNet builds by lightly-derm name."""
    out = _run(
        "import sys, warnings\n"
        'warnings.filterwarnings("error", message=".*(FlexibleUNet|lightly-derm).*")\n'
        + textwrap.dedent(IMPORT_ORDERS[order])
        + textwrap.dedent(
            """
            import torch
            net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet50").eval()
            with torch.no_grad():
                print("shape", tuple(net(torch.zeros(1, 3, 64, 64)).shape))
            """
        )
    )
    assert "shape (1, 1, 64, 64)" in out


@pytest.mark.slow
def test_import_stays_light_reload_and_spawned_worker() -> None:
    """``import lightly_derm`` imports no torch or MONAI and hooks no imports; importing
    twice, reloading and re-registering change nothing; a spawned DataLoader worker whose
    module imports lightly_derm.segmentation gets the backbones."""
    out = _run(
        """
        import importlib, sys
        finders = list(sys.meta_path)
        ours = lambda: [f for f in sys.meta_path if "lightly_derm" in type(f).__module__]
        import lightly_derm
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai"))
        assert not heavy, heavy
        assert sys.meta_path == finders, sys.meta_path
        import lightly_derm.segmentation
        from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
        import torch
        names = sorted(
            k for k in FLEXUNET_BACKBONE.register_dict
            if k.startswith(("lightly-derm-", "timm-"))
        )
        from lightly_derm.plugins.builtin import TIMM_ENCODER_MODELS
        assert names == sorted(
            [f"lightly-derm-resnet{d}{s}" for d in (18, 34, 50) for s in ("", "-cifar")]
            + [f"timm-{m}" for m in TIMM_ENCODER_MODELS]
        ), names
        assert "timm" not in sys.modules  # registering imports no timm
        size = len(FLEXUNET_BACKBONE.register_dict)
        importlib.reload(lightly_derm)
        lightly_derm.registry.reload()
        from lightly_derm.segmentation import register_flexunet_backbones
        assert register_flexunet_backbones() == names
        assert len(FLEXUNET_BACKBONE.register_dict) == size
        assert not ours(), ours()
        from tests.plugins.flexunet_worker import BuildNet
        loader = torch.utils.data.DataLoader(
            BuildNet(), batch_size=None, num_workers=1, multiprocessing_context="spawn"
        )
        print("worker", [tuple(t.tolist()) for t in loader])
        """
    )
    assert "worker [(1, 1, 32, 32)]" in out


def test_registering_again_restores_removed_backbones(restore_backbones) -> None:
    """Registration is idempotent and fills in what is missing."""
    for name in OURS:
        del FLEXUNET_BACKBONE.register_dict[name]
    flexunet._added.clear()
    assert register_flexunet_backbones() == OURS
    assert _lightly_names() == OURS


class TinyEncoder(nn.Module, BaseEncoder):
    """A two-level encoder of a third-party plugin."""

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 3, pretrained: bool = False
    ):
        super().__init__()
        self.a = nn.Conv2d(in_channels, 4, 3, stride=2, padding=1)
        self.b = nn.Conv2d(4, 8, 3, stride=2, padding=1)

    def forward(self, x):
        a = self.a(x)
        return [a, self.b(a)]

    @classmethod
    def get_encoder_names(cls):
        return ["tiny-encoder", "resnet18"]

    @classmethod
    def get_encoder_parameters(cls):
        return [{"spatial_dims": 2, "in_channels": 3, "pretrained": False}] * 2

    @classmethod
    def num_channels_per_output(cls):
        return [(4, 8)] * 2

    @classmethod
    def num_outputs(cls):
        return [2, 2]


class NotAnEncoder:
    """Has none of the BaseEncoder class methods."""


class ThirdParty:
    @hookimpl
    def lightly_derm_components(self):
        here = __name__
        return [
            Component("encoder", "tiny-encoder", f"{here}:TinyEncoder"),
            Component("encoder", "broken-import", "no_such_module_xyz:Encoder"),
            Component("encoder", "not-an-encoder", f"{here}:NotAnEncoder"),
            Component("encoder", "wrong-name", f"{here}:TinyEncoder"),
            # claims a MONAI name: must not replace MONAI's own resnet18
            Component("encoder", "resnet18", f"{here}:TinyEncoder"),
        ]


def test_third_party_encoders(restore_backbones) -> None:
    monai_resnet18 = FLEXUNET_BACKBONE.register_dict["resnet18"]
    registry = Registry()
    registry.register_plugin(ThirdParty(), name="third_party")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = register_flexunet_backbones(registry)
    messages = [
        str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)
    ]
    assert names == sorted([*OURS, "tiny-encoder"])
    for name, reason in [
        ("broken-import", "no_such_module_xyz"),
        ("not-an-encoder", "BaseEncoder"),
        ("wrong-name", "does not contain the component name 'wrong-name'"),
        ("resnet18", "MONAI already has a backbone named 'resnet18'"),
    ]:
        assert any(
            f"encoder {name!r} of plugin 'third_party'" in m and reason in m
            for m in messages
        ), (name, messages)
    assert FLEXUNET_BACKBONE.register_dict["resnet18"] is monai_resnet18
    net = FlexibleUNet(3, 1, backbone="tiny-encoder", decoder_channels=(8, 4))
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    # the plugin goes away: so does its backbone; ours stay; MONAI's are untouched
    registry.unregister_plugin("third_party")
    assert register_flexunet_backbones(registry) == OURS
    assert "tiny-encoder" not in FLEXUNET_BACKBONE.register_dict
    assert FLEXUNET_BACKBONE.register_dict["resnet18"] is monai_resnet18


def test_blocking_the_builtin_plugin_removes_ours(
    restore_backbones, monkeypatch
) -> None:
    monkeypatch.setenv("LIGHTLY_DERM_BLOCK_PLUGINS", "lightly_derm")
    assert register_flexunet_backbones(Registry()) == []
    assert _lightly_names() == []
    monkeypatch.delenv("LIGHTLY_DERM_BLOCK_PLUGINS")


def test_registry_kind_lists_our_encoders() -> None:
    assert [
        n
        for n in lightly_derm.registry.names("encoder")
        if n.startswith(("lightly-derm", "timm-"))
    ] == OURS
