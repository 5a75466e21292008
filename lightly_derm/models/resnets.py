"""What lightly-derm knows about the torchvision ResNets, in one table.

Builds on :mod:`torchvision.models.resnet`: each ResNet by name, with its blocks per
stage, block type and the width of its first block (He et al., CVPR 2016; ResNeXt,
Xie et al., CVPR 2017; Wide ResNets, Zagoruyko & Komodakis, BMVC 2016). The backbone
names, the FlexibleUNet encoders' feature channels, the recognition of a ResNet from
its state dict and the torchvision order of a ResNet's children all come from here.

Example:
    >>> from lightly_derm.models.resnets import RESNET_SPECS, resnet_from_layout
    >>> RESNET_SPECS["resnet50"].feature_channels
    (64, 256, 512, 1024, 2048)
    >>> resnet_from_layout((2, 2, 2, 2), bottleneck=False, width=64)
    'resnet18'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResNetSpec:
    """The architecture of one torchvision ResNet.

    Attributes:
        blocks: Residual blocks in ``layer1`` … ``layer4``.
        bottleneck: Bottleneck blocks (1×1, 3×3, 1×1 convolutions, channel expansion
            4) rather than basic blocks (two 3×3 convolutions).
        width: Output channels of ``layer1.0.conv1`` (64, or 128 for ResNeXt-50 32×4d
            and Wide ResNet-50-2).
    """

    blocks: tuple[int, int, int, int]
    bottleneck: bool
    width: int = 64

    @property
    def feature_channels(self) -> tuple[int, int, int, int, int]:
        """Channels of the five feature maps (strides 2, 4, 8, 16, 32): stem, layers."""
        e = 4 if self.bottleneck else 1
        return (64, 64 * e, 128 * e, 256 * e, 512 * e)


#: The torchvision ResNets lightly-derm accepts by name, and their architecture.
RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec((2, 2, 2, 2), bottleneck=False),
    "resnet34": ResNetSpec((3, 4, 6, 3), bottleneck=False),
    "resnet50": ResNetSpec((3, 4, 6, 3), bottleneck=True),
    "resnet101": ResNetSpec((3, 4, 23, 3), bottleneck=True),
    "resnet152": ResNetSpec((3, 8, 36, 3), bottleneck=True),
    "resnext50_32x4d": ResNetSpec((3, 4, 6, 3), bottleneck=True, width=128),
    "wide_resnet50_2": ResNetSpec((3, 4, 6, 3), bottleneck=True, width=128),
}

#: The children of a torchvision ResNet's feature extractor, in order (the indices of
#: ``nn.Sequential(*list(resnet.children())[:-2])``).
RESNET_CHILDREN: tuple[str, ...] = (
    "conv1",
    "bn1",
    "relu",
    "maxpool",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
)


def resnet_from_layout(
    blocks: tuple[int, ...], bottleneck: bool, width: int
) -> str | None:
    """The ResNet of this layout, or ``None`` when none or several have it.

    ResNeXt-50 32×4d and Wide ResNet-50-2 share their layout (they differ in the
    grouping of the 3×3 convolutions), so that layout names neither.
    """
    names = [
        name
        for name, spec in RESNET_SPECS.items()
        if (spec.blocks, spec.bottleneck, spec.width)
        == (tuple(blocks), bottleneck, width)
    ]
    return names[0] if len(names) == 1 else None
