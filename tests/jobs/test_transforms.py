from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from lightly_derm.jobs.transforms import (
    SyntheticSegmentationTransform,
    eval_transform,
    finetune_transform,
)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@pytest.mark.parametrize("seed", range(6))
def test_synthetic_segmentation_moves_the_mask_with_the_image(seed) -> None:
    torch.manual_seed(seed)
    mask = torch.zeros(1, 16, 16, dtype=torch.uint8)
    mask[:, 2:7, 3:12] = 1  # asymmetric: flips and rotations change it
    item = {
        "image": tv_tensors.Image((mask * 255).expand(3, -1, -1).clone()),
        "mask": tv_tensors.Mask(mask),
        "filename": "synthetic_000001.png",
    }
    out = SyntheticSegmentationTransform(train=True)(item)
    assert out["id"] == "synthetic_000001.png"
    assert out["image"].dtype == torch.float32 and type(out["image"]) is torch.Tensor
    assert out["label"].shape == (1, 16, 16) and out["label"].dtype == torch.float32
    pixels = out["image"] * STD + MEAN  # back to [0, 1]
    assert torch.equal((pixels[0:1] > 0.5).float(), out["label"])


def test_eval_transform_is_deterministic_and_normalised() -> None:
    image = Image.new("L", (50, 40), 128)
    a, b = eval_transform(32)(image), eval_transform(32)(image)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    torch.testing.assert_close(
        a[:, 0, 0], ((128 / 255 - MEAN) / STD).flatten(), atol=1e-4, rtol=0
    )
    assert finetune_transform(24)(image).shape == (3, 24, 24)


def test_renormalize_backbone_input_maps_imagenet_to_the_weights_scaling() -> None:
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    from lightly_derm.jobs.transforms import renormalize_backbone_input

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    assert renormalize_backbone_input(model, None) is None
    seen: list[torch.Tensor] = []
    model[0].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    handle = renormalize_backbone_input(model, "imagenet:efficientnet-lite0")
    assert handle is not None
    for shape in ((2, 3, 8, 8), (1, 3, 5, 7)):
        raw = torch.rand(*shape, dtype=torch.float64)  # images in [0, 1]
        mean = torch.tensor(IMAGENET_NORMALIZE["mean"], dtype=torch.float64)
        std = torch.tensor(IMAGENET_NORMALIZE["std"], dtype=torch.float64)
        imagenet = (raw - mean.view(3, 1, 1)) / std.view(3, 1, 1)
        model.double()(imagenet)
        expected = torch.empty_like(raw)
        for c in range(3):  # the Lite0 scaling, one channel at a time
            expected[:, c] = (raw[:, c] - 127 / 255) / (128 / 255)
        torch.testing.assert_close(seen[-1], expected)
    handle.remove()
    model(imagenet)
    torch.testing.assert_close(seen[-1], imagenet)


def test_eval_transform_takes_a_normalisation() -> None:
    from PIL import Image

    image = Image.new("RGB", (10, 10), (255, 0, 128))
    out = eval_transform(8, {"mean": [0.5] * 3, "std": [0.5] * 3})
    torch.testing.assert_close(
        out(image)[:, 0, 0], torch.tensor([1.0, -1.0, 0.0039]), atol=1e-3, rtol=0
    )
