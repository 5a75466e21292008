"""FG-SSL's asymmetric views a and b (and, optionally, the jigsaws of a on the CPU).

Builds on lightly's :class:`~lightly.transforms.multi_view_transform.MultiViewTransform`,
:class:`~lightly.transforms.gaussian_blur.GaussianBlur`,
:class:`~lightly.transforms.solarize.RandomSolarization`, ``ToTensor`` and
``IMAGENET_NORMALIZE``, and torchvision's ``Resize``, ``RandomHorizontalFlip`` and
``RandomGrayscale`` — the pieces of lightly's ``BYOLView1Transform`` /
``BYOLView2Transform`` without the random resized crop and colour jitter, which is what
the FG-SSL authors use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightly.transforms.gaussian_blur import GaussianBlur
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.solarize import RandomSolarization
from lightly.transforms.torchvision_v2_compatibility import torchvision_transforms as T
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL.Image import Image
from torch import Tensor

from lightly_derm.transforms.jigsaw import HierarchicalJigsaw, _check_grids
from lightly_derm.transforms.rgb import to_rgb

__all__ = [
    "FGSSLTransform",
    "FGSSLView1Transform",
    "FGSSLView2Transform",
    "check_input_size",
]


def check_input_size(input_size: Any, grids: Sequence[int]) -> int:
    """Checks that every grid divides ``input_size``; returns it.

    Raises:
        TypeError: ``input_size`` is not an int.
        ValueError: A grid does not divide ``input_size`` or exceeds it.
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int):
        raise TypeError(
            f"input_size must be an int, got {type(input_size).__name__} {input_size!r}"
        )
    bad = [g for g in grids if g > input_size or input_size % g]
    if bad:
        raise ValueError(
            f"input_size {input_size} is not divisible by grid(s) {bad} of grids "
            f"{tuple(grids)}: the jigsaw tiles must be equal; choose a multiple of "
            f"{_lcm(grids)} (e.g. {_lcm(grids) * max(1, round(input_size / _lcm(grids)))})"
        )
    return input_size


def _lcm(values: Sequence[int]) -> int:
    import math

    result = 1
    for value in values:
        result = result * value // math.gcd(result, value)
    return result


class _ToRGB:
    """Turns PIL images, (C, H, W) tensors and arrays into RGB PIL images.

    Uses :func:`~lightly_derm.transforms.to_rgb`: PIL modes convert as the datasets
    read them (16-bit scaled, alpha dropped, CMYK converted); float tensors must hold
    values in [0, 1]; one-channel inputs are repeated to three channels, since the
    views are ImageNet-normalised.
    """

    def __call__(self, image: Image | Tensor) -> Image:
        rgb = to_rgb(image)
        if isinstance(rgb, Tensor):
            if rgb.is_floating_point():
                rgb = (rgb.detach().clamp(0, 1) * 255).round().to(torch.uint8)
            rgb = T.functional.to_pil_image(rgb.cpu())
        return rgb

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _view_transform(
    input_size: int,
    hf_prob: float,
    random_gray_scale: float,
    gaussian_blur: float,
    solarization_prob: float,
    sigmas: tuple[float, float],
    normalize: dict[str, list[float]] | None,
) -> T.Compose:
    transform = [
        _ToRGB(),
        T.Resize((input_size, input_size)),
        T.RandomHorizontalFlip(p=hf_prob),
        T.RandomGrayscale(p=random_gray_scale),
        GaussianBlur(prob=gaussian_blur, sigmas=sigmas),
        RandomSolarization(prob=solarization_prob),
        T.ToTensor(),
    ]
    if normalize:
        transform.append(T.Normalize(mean=normalize["mean"], std=normalize["std"]))
    return T.Compose(transform)


class FGSSLView1Transform:
    """FG-SSL's view a = T1(x): Resize, horizontal flip, grayscale 0.2, blur always.

    The Barlow Twins view without random resized crop and colour jitter, as in the
    FG-SSL authors' code (github.com/kalelpark/FG-SSL, ``barlow_transform``): the image
    is resized to a square ``input_size`` × ``input_size`` (so that the jigsaw grids
    divide it), flipped with ``hf_prob``, made gray with ``random_gray_scale``, blurred
    with σ ∈ ``sigmas`` with probability ``gaussian_blur`` and solarised with
    ``solarization_prob``, then ImageNet-normalised.

    Input: a PIL image of any mode, a tensor (C, H, W) (float in [0, 1] or uint8) or a
    NumPy array, as :func:`~lightly_derm.transforms.to_rgb` takes them; grayscale,
    16-bit, RGBA and CMYK inputs become 8-bit RGB. Output: a float tensor
    (3, input_size, input_size).

    Example:
        >>> from PIL import Image
        >>> from lightly_derm.transforms import FGSSLView1Transform
        >>> FGSSLView1Transform(input_size=64)(Image.new("RGB", (100, 80))).shape
        torch.Size([3, 64, 64])
    """

    def __init__(
        self,
        input_size: int = 224,
        hf_prob: float = 0.5,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 1.0,
        solarization_prob: float = 0.0,
        sigmas: tuple[float, float] = (0.1, 2.0),
        normalize: dict[str, list[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        self.transform = _view_transform(
            input_size,
            hf_prob,
            random_gray_scale,
            gaussian_blur,
            solarization_prob,
            sigmas,
            normalize,
        )

    def __call__(self, image: Image | Tensor) -> Tensor:
        """Returns the view of ``image``."""
        view: Tensor = self.transform(image)
        return view


class FGSSLView2Transform(FGSSLView1Transform):
    """FG-SSL's view b = T2(x): Resize, grayscale 0.2, blur 0.1, solarise 0.2.

    As :class:`FGSSLView1Transform` with the authors' second-view probabilities (no
    flip, rare blur, solarisation).
    """

    def __init__(
        self,
        input_size: int = 224,
        hf_prob: float = 0.0,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.1,
        solarization_prob: float = 0.2,
        sigmas: tuple[float, float] = (0.1, 2.0),
        normalize: dict[str, list[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(
            input_size,
            hf_prob,
            random_gray_scale,
            gaussian_blur,
            solarization_prob,
            sigmas,
            normalize,
        )


class FGSSLTransform(MultiViewTransform):
    """FG-SSL's views of one image: a and b, and optionally the jigsaws of a.

    FG-SSL (Park and Ryu, "Fine-Grained Self-Supervised Learning with Jigsaw Puzzles for
    Medical Image Classification", Computers in Biology and Medicine 174, 2024,
    arXiv:2308.05770) trains block k on Barlow Twins between J_{n_k}(a) and b, where
    a = T1(x) (:class:`FGSSLView1Transform`) and b = T2(x)
    (:class:`FGSSLView2Transform`).

    By default the jigsaws are *not* made here: :class:`~lightly_derm.methods.FGSSL`
    shuffles view a of the whole batch on its device with one gather (many times faster
    than per image on the CPU, see ``benchmarks/jigsaw.py``). The view order is then
    ``[a, b]``. With ``cpu_jigsaw=True`` the transform also returns J_n(a) for every
    grid n, in the order of ``grids``: ``[a, b, J_{grids[0]}(a), J_{grids[1]}(a), …]``,
    and the method takes them from the batch.

    Args:
        input_size: Side of the square views; every grid must divide it (checked here,
            also when the method makes the jigsaws).
        grids: The jigsaw grids, finest first (authors' ISIC setting (16, 8, 4)).
        cpu_jigsaw: Make the jigsaw views here, per image (see above).
        exclude_identity: With ``cpu_jigsaw``, never return an unshuffled jigsaw.
        permutations: With ``cpu_jigsaw``, how the jigsaws' permutations are drawn:
            ``"cycle"`` (the authors', from PMG: one grid²-cycle per image, no tile
            in place), ``"derangement"`` or ``"uniform"``; see
            :func:`~lightly_derm.transforms.random_tile_permutations`.
        view_1_transform: Transform for view a; default
            ``FGSSLView1Transform(input_size)``.
        view_2_transform: Transform for view b; default
            ``FGSSLView2Transform(input_size)``.

    Raises:
        ValueError: A grid does not divide ``input_size``.

    Example:
        >>> from PIL import Image
        >>> from lightly_derm.transforms import FGSSLTransform
        >>> views = FGSSLTransform(input_size=64)(Image.new("RGB", (100, 80)))
        >>> len(views), tuple(views[0].shape)
        (2, (3, 64, 64))
        >>> len(FGSSLTransform(input_size=64, cpu_jigsaw=True)(Image.new("RGB", (100, 80))))
        5
    """

    def __init__(
        self,
        input_size: int = 224,
        grids: Sequence[int] = (16, 8, 4),
        cpu_jigsaw: bool = False,
        exclude_identity: bool = False,
        view_1_transform: Any = None,
        view_2_transform: Any = None,
        permutations: str = "cycle",
    ) -> None:
        self.grids = _check_grids(grids)
        self.input_size = check_input_size(input_size, self.grids)
        self.cpu_jigsaw = cpu_jigsaw
        self.jigsaw = HierarchicalJigsaw(
            self.grids, exclude_identity=exclude_identity, permutations=permutations
        )
        super().__init__(
            transforms=[
                view_1_transform or FGSSLView1Transform(input_size=input_size),
                view_2_transform or FGSSLView2Transform(input_size=input_size),
            ]
        )

    def __call__(self, image: Image | Tensor) -> list[Tensor]:  # type: ignore[override]
        """Returns ``[a, b]``, or ``[a, b, J_n(a) for n in grids]`` with ``cpu_jigsaw``."""
        views: list[Tensor] = [t(image) for t in self.transforms]
        if self.cpu_jigsaw:
            jigsaws = self.jigsaw(views[0])
            assert isinstance(jigsaws, list)
            views.extend(jigsaws)
        return views
