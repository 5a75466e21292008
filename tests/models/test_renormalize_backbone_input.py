"""renormalize_backbone_input: a backbone sees its weights' input scaling."""

from __future__ import annotations

import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE

from lightly_derm.models import renormalize_backbone_input


def test_renormalize_backbone_input_maps_imagenet_to_the_weights_scaling() -> None:
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
