from __future__ import annotations

import collections

import pytest
import torch
import torchvision
from monai.networks.nets import FlexibleUNet
from torch import nn

from lightly_derm.methods import SSLMethod
from lightly_derm.segmentation import (
    LesionSegmentation,
    describe_resnet,
    load_ssl_encoder,
)


class HandMadeMethod(SSLMethod):
    """An SSL method as the method plugins build them: backbone plus a head."""

    def __init__(self, backbone: str = "resnet18") -> None:
        super().__init__(backbone)
        self.projection_head = nn.Sequential(nn.Linear(self.feature_dim, 8))
        self.backbone_momentum = torchvision.models.resnet18()


class Pickled:
    """Not a tensor: torch.load(weights_only=True) must refuse it."""


def _random_resnet(name: str = "resnet18", seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision state dict with random weights AND random batch-norm buffers."""
    torch.manual_seed(seed)
    state = getattr(torchvision.models, name)().state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = torch.rand_like(value) + 0.5
        elif value.is_floating_point():
            state[key] = torch.randn_like(value)
        else:
            state[key] = torch.randint_like(value, 1, 100)
    return state


def _backbone(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _assert_encoder_equals(net: FlexibleUNet, state) -> None:
    own = net.encoder.state_dict()
    expected = _backbone(state)
    assert set(own) == set(expected)
    for key, value in own.items():
        assert torch.equal(value, expected[key]), key


def _lightning_file(tmp_path, state):
    method = HandMadeMethod()
    method.backbone.load_state_dict(_backbone(state))
    checkpoint = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": method.state_dict(),
        "hyper_parameters": {"backbone": "resnet18"},
    }
    path = tmp_path / "method.ckpt"
    torch.save(checkpoint, path)
    return path


FORMATS = ["lightning-file", "torchvision", "backbone", "sequential", "ddp"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_encoder_tensor_equals_the_checkpoint(fmt, tmp_path) -> None:
    state = _random_resnet()
    if fmt == "lightning-file":
        checkpoint = _lightning_file(tmp_path, state)
    elif fmt == "torchvision":
        checkpoint = state
    elif fmt == "backbone":
        checkpoint = _backbone(state)
    elif fmt == "sequential":  # lightly's examples: nn.Sequential(*children[:-1])
        reference = torchvision.models.resnet18()
        reference.load_state_dict(state)
        checkpoint = nn.Sequential(*list(reference.children())[:-1]).state_dict()
    else:
        checkpoint = collections.OrderedDict(
            (f"module.{k}", v) for k, v in state.items()
        )
    net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet18")
    decoder = {k: v.clone() for k, v in net.decoder.state_dict().items()}
    report = load_ssl_encoder(net, checkpoint)
    _assert_encoder_equals(net, state)
    assert report.complete and report.missing == [] and report.unexpected == []
    assert report.loaded == sorted(net.encoder.state_dict())
    assert "loaded 120 of 120 encoder tensors" in str(report)
    for key, value in net.decoder.state_dict().items():
        assert torch.equal(value, decoder[key]), f"decoder {key} changed"


def test_resnet50_lightning_checkpoint_into_encoder_module(tmp_path) -> None:
    state = _random_resnet("resnet50", seed=3)
    torch.save(
        {"state_dict": {f"backbone.{k}": v for k, v in state.items()}},
        tmp_path / "a.ckpt",
    )
    net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet50")
    report = load_ssl_encoder(net.encoder, tmp_path / "a.ckpt")
    assert report.complete
    _assert_encoder_equals(net, state)


def test_strict_names_missing_and_unexpected_keys() -> None:
    state = _backbone(_random_resnet())
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    partial["extra.weight"] = torch.zeros(3)
    net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet18")
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_ssl_encoder(net, partial)
    message = str(info.value)
    assert "strict=True" in message and "layer4.0.bn1.bias" in message
    assert "1 unexpected checkpoint keys [extra.weight]" in message
    # nothing was copied
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    report = load_ssl_encoder(net, partial, strict=False)
    assert report.unexpected == ["extra.weight"]
    assert report.missing == sorted(k for k in state if k.startswith("layer4."))
    assert not report.complete
    own = net.encoder.state_dict()
    for key in report.loaded:
        assert torch.equal(own[key], state[key]), key
    for key in report.missing:
        assert torch.equal(own[key], before[key]), key


def test_other_architecture_is_named() -> None:
    net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet18")
    with pytest.raises(
        ValueError, match=r"holds a resnet50 .* use backbone='lightly-derm-resnet50'"
    ):
        load_ssl_encoder(net, torchvision.models.resnet50().state_dict())
    # same block shapes, more blocks: strict names it; non-strict loads what matches
    resnet34 = torchvision.models.resnet34().state_dict()
    with pytest.raises(
        ValueError, match=r"holds a resnet34: use backbone='lightly-derm-resnet34'"
    ):
        load_ssl_encoder(net, resnet34)
    report = load_ssl_encoder(net, resnet34, strict=False)
    assert "layer3.5.conv1.weight" in report.unexpected and not report.missing


def test_no_matching_key_and_bad_arguments(tmp_path) -> None:
    net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet18")
    with pytest.raises(ValueError, match="no tensor in the checkpoint matches"):
        load_ssl_encoder(net, {"head.weight": torch.zeros(2, 2)}, strict=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_ssl_encoder(net, tmp_path / "missing.ckpt")
    with pytest.raises(TypeError, match="net must be a MONAI FlexibleUNet"):
        load_ssl_encoder("net", {})
    # weights_only: a file with pickled objects is refused, not executed
    torch.save({"state_dict": _random_resnet(), "obj": Pickled()}, tmp_path / "p.ckpt")
    with pytest.raises(ValueError, match="was refused: it carries pickled code"):
        load_ssl_encoder(net, tmp_path / "p.ckpt")


def test_describe_resnet() -> None:
    for name in ("resnet18", "resnet34", "resnet50"):
        assert describe_resnet(getattr(torchvision.models, name)().state_dict()) == name
    assert describe_resnet({"conv.weight": torch.zeros(1)}) is None


def test_lesion_segmentation_pretrained(tmp_path) -> None:
    state = _random_resnet(seed=5)
    path = _lightning_file(tmp_path, state)
    model = LesionSegmentation("lightly-derm-resnet18", pretrained=path)
    assert model.transfer_report is not None and model.transfer_report.complete
    _assert_encoder_equals(model.net, state)
    # a module holding the network as .net works as well
    assert load_ssl_encoder(model, path).complete


@pytest.mark.parametrize(
    ("stages", "prefixes"),
    [
        (0, ()),
        (1, ("conv1.", "bn1.")),
        (2, ("conv1.", "bn1.", "layer1.")),
        (5, ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")),
    ],
)
def test_resnet_stage_prefixes(stages: int, prefixes: tuple[str, ...]) -> None:
    from lightly_derm.segmentation.transfer import resnet_stage_prefixes

    assert resnet_stage_prefixes(stages) == prefixes


@pytest.mark.parametrize("bad", [-1, 6, 1.0, True])
def test_resnet_stage_prefixes_bad(bad) -> None:
    from lightly_derm.segmentation.transfer import resnet_stage_prefixes

    with pytest.raises(ValueError, match="stages must be an int in 0..5"):
        resnet_stage_prefixes(bad)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("exclude", [("conv1.", "bn1."), ("conv1.", "bn1.", "layer1.")])
def test_excluded_layers_keep_their_values_and_the_rest_is_loaded(
    name, exclude
) -> None:
    """Key by key against the two sources: the encoder before loading, the checkpoint."""
    torch.manual_seed(1)
    net = FlexibleUNet(3, 1, backbone=f"lightly-derm-{name}")
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    state = _random_resnet(name, seed=2)
    report = load_ssl_encoder(net, state, strict=True, exclude=exclude)
    after = net.encoder.state_dict()
    kept = [k for k in after if k.startswith(exclude)]
    assert kept and sorted(report.ignored) == sorted(kept)
    assert not report.missing and not report.unexpected
    for key, value in after.items():
        expected = before[key] if key.startswith(exclude) else state[key]
        assert torch.equal(value, expected), key
    assert sorted(report.loaded) == sorted(
        k for k in after if not k.startswith(exclude)
    )


def test_random_stages_equal_random_init_of_the_same_seed(tmp_path) -> None:
    path = _lightning_file(tmp_path, _random_resnet(seed=5))
    torch.manual_seed(3)
    random_init = LesionSegmentation("lightly-derm-resnet18")
    torch.manual_seed(3)
    partial = LesionSegmentation(
        "lightly-derm-resnet18", pretrained=path, random_stages=2
    )
    full = LesionSegmentation("lightly-derm-resnet18", pretrained=path)
    ours, theirs = random_init.state_dict(), full.state_dict()
    for key, value in partial.state_dict().items():
        stem_or_layer1 = key.startswith(
            ("net.encoder.conv1.", "net.encoder.bn1.", "net.encoder.layer1.")
        )
        source = (
            ours if stem_or_layer1 or not key.startswith("net.encoder.") else theirs
        )
        assert torch.equal(value, source[key]), key


def test_random_stages_needs_a_resnet_encoder() -> None:
    with pytest.raises(ValueError, match="random_stages is for the ResNet encoders"):
        LesionSegmentation("efficientnet-b0", random_stages=1)
