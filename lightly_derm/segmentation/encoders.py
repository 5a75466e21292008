"""torchvision ResNets as MONAI FlexibleUNet encoders, with torchvision key names.

Builds on torchvision's ResNet (through :func:`lightly_derm.models.resnet`) and on MONAI's
:class:`~monai.networks.blocks.BaseEncoder` interface. MONAI's own ``resnet*`` FlexibleUNet
backbones (:class:`monai.networks.nets.ResNetEncoder`) are built for 3-D MedicalNet
weights and name their layers differently (``act``, no ``relu``; 3-D convolutions by
default), so an SSL checkpoint of a torchvision ResNet cannot be loaded into them. These
encoders keep torchvision's modules and names (``conv1``, ``bn1``, ``layer1`` …
``layer4``, type-B 1×1 projection shortcuts), so the ``backbone.*`` weights of any
lightly-derm or lightly checkpoint load without renaming
(:func:`~lightly_derm.segmentation.load_ssl_encoder`).

Registered as ``encoder`` plugins and, when ``lightly_derm`` is imported, as MONAI
FlexibleUNet backbones ``lightly-derm-resnet18``, ``lightly-derm-resnet34`` and
``lightly-derm-resnet50``, and, for the backbones with the small-image stem
(``"resnet18-cifar"``, :func:`lightly_derm.models.cifar_stem`),
``lightly-derm-resnet18-cifar``, ``lightly-derm-resnet34-cifar`` and
``lightly-derm-resnet50-cifar`` (:class:`CifarResNetEncoder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from monai.networks.blocks import BaseEncoder
from torch import Tensor, nn

from lightly_derm.models.backbones import CIFAR_SUFFIX, resnet
from lightly_derm.models.resnets import RESNET_SPECS
from lightly_derm.segmentation.encoder_args import check_encoder_args

#: Channels of the five feature maps (strides 2, 4, 8, 16, 32) of each torchvision ResNet
#: (from :data:`lightly_derm.models.resnets.RESNET_SPECS`).
RESNET_FEATURE_CHANNELS: dict[str, tuple[int, ...]] = {
    name: spec.feature_channels for name, spec in RESNET_SPECS.items()
}
#: Prefix of the FlexibleUNet backbone names of these encoders.
BACKBONE_PREFIX = "lightly-derm-"


class TorchvisionResNetEncoder(nn.Module, BaseEncoder):
    """A torchvision ResNet that gives MONAI's FlexibleUNet its five feature maps.

    The feature maps are the stem after ReLU (stride 2, 64 channels) and the outputs of
    ``layer1`` … ``layer4`` (strides 4, 8, 16, 32), each half the size of the one before,
    as ``FlexibleUNet`` requires. The state-dict keys are torchvision's, without ``fc``.

    Use a subclass with a fixed architecture (:class:`ResNet18Encoder`,
    :class:`ResNet34Encoder`, :class:`ResNet50Encoder`), or this class with
    ``model_name`` for the other torchvision ResNets.

    Args:
        model_name: A key of :data:`RESNET_FEATURE_CHANNELS`; fixed by the subclasses.
        spatial_dims: Must be 2 (torchvision ResNets are 2-D; for 3-D volumes use MONAI's
            own ``resnet*`` backbones).
        in_channels: Input channels. Anything but 3 replaces ``conv1`` by a new, randomly
            initialised convolution (RGB checkpoints then do not fit it).
        pretrained: ``False``, or a local checkpoint path to load with
            :func:`~lightly_derm.segmentation.load_ssl_encoder` (strict). Nothing is
            downloaded, so ``True`` is an error; this lets
            ``FlexibleUNet(..., pretrained="ssl.ckpt")`` start from SSL weights.

    Raises:
        ValueError: An unknown ``model_name``, ``spatial_dims != 2``, ``in_channels < 1``
            or ``pretrained=True``.

    Example:
        >>> import torch
        >>> from lightly_derm.segmentation import ResNet18Encoder
        >>> encoder = ResNet18Encoder()
        >>> [tuple(f.shape) for f in encoder(torch.randn(1, 3, 64, 64))]
        [(1, 64, 32, 32), (1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]
    """

    #: The torchvision architectures this class registers (one name each).
    backbone_names: ClassVar[tuple[str, ...]] = tuple(RESNET_FEATURE_CHANNELS)
    #: The ResNet stem (:data:`lightly_derm.models.STEMS`).
    stem: ClassVar[str] = "imagenet"

    def __init__(
        self,
        model_name: str | None = None,
        spatial_dims: int = 2,
        in_channels: int = 3,
        pretrained: bool | str | Path = False,
    ) -> None:
        super().__init__()
        model_name = check_encoder_args(
            type(self).__name__,
            self.backbone_names,
            model_name,
            spatial_dims,
            in_channels,
            pretrained,
            not_2d="torchvision ResNet encoders are 2-D; use MONAI's 'resnet*' "
            "FlexibleUNet backbones for 3-D images",
        )
        self.model_name = model_name
        self.in_channels = in_channels
        self.feature_channels: tuple[int, ...] = RESNET_FEATURE_CHANNELS[model_name]
        base = resnet(model_name, stem=self.stem)
        self.conv1 = (
            base.conv1
            if in_channels == 3
            else nn.Conv2d(
                in_channels,
                64,
                kernel_size=base.conv1.kernel_size,
                stride=base.conv1.stride,
                padding=base.conv1.padding,
                bias=False,
            )
        )
        if in_channels != 3:
            nn.init.kaiming_normal_(
                self.conv1.weight, mode="fan_out", nonlinearity="relu"
            )
        self.bn1 = base.bn1
        self.relu = base.relu
        self.maxpool = base.maxpool
        self.layer1 = base.layer1
        self.layer2 = base.layer2
        self.layer3 = base.layer3
        self.layer4 = base.layer4
        if pretrained and pretrained is not True:  # True was refused above
            from lightly_derm.segmentation.transfer import load_ssl_encoder

            load_ssl_encoder(self, pretrained, strict=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        """The five feature maps of images ``x`` (B, in_channels, H, W), largest first."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects images (B, {self.in_channels}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.layer1(self.maxpool(x))
        features.append(x)
        x = self.layer2(x)
        features.append(x)
        x = self.layer3(x)
        features.append(x)
        x = self.layer4(x)
        features.append(x)
        return features

    # ------------------------------------------------------------ MONAI BaseEncoder
    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """The FlexibleUNet backbone names, ``lightly-derm-<torchvision name>``."""
        return [f"{BACKBONE_PREFIX}{name}" for name in cls.backbone_names]

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """The constructor arguments for each name (FlexibleUNet sets the last three)."""
        return [
            {
                "model_name": name,
                "spatial_dims": 2,
                "in_channels": 3,
                "pretrained": False,
            }
            for name in cls.backbone_names
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """The channels of the five feature maps, for each name."""
        return [RESNET_FEATURE_CHANNELS[name] for name in cls.backbone_names]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Five feature maps for every name."""
        return [5] * len(cls.backbone_names)


class ResNet18Encoder(TorchvisionResNetEncoder):
    """torchvision ResNet-18 as the FlexibleUNet backbone ``lightly-derm-resnet18``.

    Feature channels (64, 64, 128, 256, 512). See :class:`TorchvisionResNetEncoder`.

    Example:
        >>> import lightly_derm.segmentation
        >>> from monai.networks.nets import FlexibleUNet
        >>> net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet18")
    """

    backbone_names = ("resnet18",)


class ResNet34Encoder(TorchvisionResNetEncoder):
    """torchvision ResNet-34 as the FlexibleUNet backbone ``lightly-derm-resnet34``.

    Feature channels (64, 64, 128, 256, 512). See :class:`TorchvisionResNetEncoder`.

    Example:
        >>> import lightly_derm.segmentation
        >>> from monai.networks.nets import FlexibleUNet
        >>> net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet34")
    """

    backbone_names = ("resnet34",)


class ResNet50Encoder(TorchvisionResNetEncoder):
    """torchvision ResNet-50 as the FlexibleUNet backbone ``lightly-derm-resnet50``.

    Feature channels (64, 256, 512, 1024, 2048). See :class:`TorchvisionResNetEncoder`.

    Example:
        >>> import lightly_derm.segmentation
        >>> from monai.networks.nets import FlexibleUNet
        >>> net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet50")
    """

    backbone_names = ("resnet50",)


class CifarResNetEncoder(TorchvisionResNetEncoder):
    """A torchvision ResNet with the small-image stem as a FlexibleUNet encoder.

    The encoder of the backbones ``"resnet18-cifar"`` … (:func:`lightly_derm.models.resnet`
    with ``stem="cifar"``: a 3 × 3 stride-1 ``conv1``, no max-pool), with the same
    torchvision keys, so their SSL checkpoints load tensor by tensor
    (:func:`~lightly_derm.segmentation.load_ssl_encoder`); the checkpoint of an
    ImageNet-stem ResNet does not fit (``conv1`` is 7 × 7) and is an error that says so.

    The stem and ``layer1`` run at full resolution, so the feature maps with the
    stride-halving ladder that FlexibleUNet's decoder expects are those of ``layer2``,
    ``layer3`` and ``layer4`` (strides 2, 4, 8): three maps, three decoder blocks, and
    the output at the input's resolution. Image sides must be multiples of 8 (32 for
    the ImageNet-stem encoders): 32 px for DermaMNIST's 28 px images.

    Example:
        >>> import torch
        >>> from lightly_derm.segmentation import ResNet18CifarEncoder
        >>> encoder = ResNet18CifarEncoder()
        >>> [tuple(f.shape) for f in encoder(torch.randn(1, 3, 32, 32))]
        [(1, 128, 16, 16), (1, 256, 8, 8), (1, 512, 4, 4)]
    """

    stem = "cifar"
    #: The stride of the last feature map; image sides must be multiples of it.
    max_stride: ClassVar[int] = 8

    def forward(self, x: Tensor) -> list[Tensor]:
        """The three feature maps of images ``x`` (B, in_channels, H, W), largest first.

        Raises:
            ValueError: ``x`` is not (B, in_channels, H, W) with H and W multiples of 8.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects images (B, {self.in_channels}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[-2] % self.max_stride or x.shape[-1] % self.max_stride:
            raise ValueError(
                f"{type(self).__name__} needs image sides that are multiples of "
                f"{self.max_stride}, got {x.shape[-2]} x {x.shape[-1]} (resize or pad, "
                "e.g. 28 px to 32 px)"
            )
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        features = []
        for layer in (self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """The FlexibleUNet backbone names, ``lightly-derm-<torchvision name>-cifar``."""
        return [f"{BACKBONE_PREFIX}{name}{CIFAR_SUFFIX}" for name in cls.backbone_names]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """The channels of the three feature maps (``layer2`` … ``layer4``), for each name."""
        return [RESNET_FEATURE_CHANNELS[name][2:] for name in cls.backbone_names]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Three feature maps for every name."""
        return [3] * len(cls.backbone_names)


class ResNet18CifarEncoder(CifarResNetEncoder):
    """ResNet-18 with the small-image stem as the FlexibleUNet backbone ``lightly-derm-resnet18-cifar``.

    Feature channels (128, 256, 512). See :class:`CifarResNetEncoder`.

    Example:
        >>> import lightly_derm
        >>> from monai.networks.nets import FlexibleUNet
        >>> net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet18-cifar")
    """

    backbone_names = ("resnet18",)


class ResNet34CifarEncoder(CifarResNetEncoder):
    """ResNet-34 with the small-image stem as the FlexibleUNet backbone ``lightly-derm-resnet34-cifar``.

    Feature channels (128, 256, 512). See :class:`CifarResNetEncoder`.
    """

    backbone_names = ("resnet34",)


class ResNet50CifarEncoder(CifarResNetEncoder):
    """ResNet-50 with the small-image stem as the FlexibleUNet backbone ``lightly-derm-resnet50-cifar``.

    Feature channels (512, 1024, 2048). See :class:`CifarResNetEncoder`.
    """

    backbone_names = ("resnet50",)
