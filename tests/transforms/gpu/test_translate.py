from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    SimCLRTransform,
)
from lightly.transforms.multi_view_transform import MultiViewTransform
from torchvision.transforms import v2

from lightly_derm.methods import SSLMethod
from lightly_derm.transforms import Cutout, GraVISTransform, RGBInput
from lightly_derm.transforms.gpu import (
    GPUMultiViewTransform,
    GPUViewTransform,
    UntranslatableTransformError,
)
from tests.transforms.gpu.test_view_transform import _cpu_config, _gpu_config


def _mirrors(cpu_transform: Any, input_size: int) -> GPUMultiViewTransform:
    """Checks every view with the test's own walker (an independent reading)."""
    gpu = GPUMultiViewTransform.from_view_transform(cpu_transform)
    inner = getattr(cpu_transform, "transform", cpu_transform)
    cpu_views = list(getattr(inner, "transforms", [inner]))
    assert gpu.num_views == len(cpu_views) and gpu.input_size == input_size
    for k, (cpu_view, gpu_view) in enumerate(
        zip(cpu_views, gpu.transforms, strict=True)
    ):
        cpu = _cpu_config(cpu_view, input_size)
        assert _gpu_config(gpu_view, cpu) == cpu, f"view {k}"
    return gpu


@pytest.mark.parametrize(
    "transform",
    [
        SimCLRTransform(
            input_size=48,
            cj_prob=0.3,
            cj_strength=0.5,
            min_scale=0.3,
            random_gray_scale=0.1,
            gaussian_blur=0.7,
            sigmas=(0.3, 1.5),
            vf_prob=0.25,
            hf_prob=0.1,
            rr_prob=0.4,
            rr_degrees=(-20.0, 5.0),
        ),
        SimCLRTransform(input_size=40, rr_prob=0.6, rr_degrees=None, normalize=None),
        BYOLTransform(
            view_1_transform=BYOLView1Transform(input_size=32, cj_hue=0.3),
            view_2_transform=BYOLView2Transform(
                input_size=32, solarization_prob=0.7, cj_sat=0.0
            ),
        ),
        GraVISTransform(num_views=3, input_size=56, cutout_holes=2, cutout_length=7),
        RGBInput(SimCLRTransform(input_size=24)),
    ],
    ids=["simclr-custom", "simclr-rot90", "byol-custom", "gravis", "rgb-input"],
)
def test_non_default_arguments_are_read(transform: Any) -> None:
    """Not only the defaults: every argument reaches the GPU view (read independently)."""
    size = GPUMultiViewTransform.from_view_transform(transform).input_size
    _mirrors(transform, size)


def test_equal_views_share_one_pass_and_flip_order() -> None:
    gravis = GPUMultiViewTransform.from_view_transform(GraVISTransform(num_views=4))
    assert [count for _, _, count in gravis.groups] == [4]
    assert gravis.transforms[0].flip_first is False  # GraVIS flips after rotating
    rotate_then = v2.Compose(
        [v2.RandomResizedCrop(32), v2.RandomHorizontalFlip(), v2.RandomRotation(5)]
    )
    assert GPUViewTransform.from_view_transform(rotate_then).flip_first is True


def test_plain_compose_and_random_apply_probabilities() -> None:
    view = v2.Compose(
        [
            v2.Resize((20, 20)),
            v2.RandomApply([v2.RandomHorizontalFlip(p=0.5)], p=0.5),
            v2.RandomApply([v2.ColorJitter(0.2, 0.3, 0.0, 0.05)], p=0.4),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.5, 1.0))], p=0.3),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            Cutout(num_holes=1, length=4),
        ]
    )
    gpu = GPUViewTransform.from_view_transform(view)
    assert gpu.crop == "resize" and gpu.input_size == 20
    assert gpu.hf_prob == pytest.approx(0.25) and gpu.cj_prob == pytest.approx(0.4)
    assert gpu.jitter == pytest.approx((0.2, 0.3, 0.0, 0.05))
    assert gpu.blur_prob == pytest.approx(0.3) and gpu.blur_kernel_size == 5
    assert gpu.normalize is None and (gpu.cutout_holes, gpu.cutout_length) == (1, 4)
    assert gpu.gray_prob == 0 and gpu.solarize_prob == 0 and gpu.rr_prob == 0


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([v2.RandomResizedCrop(32), v2.AugMix()], r"view 0 > Compose\[1\] > AugMix"),
        ([v2.Resize(32)], r"Resize\(size=\[32\]\) resizes the shorter side"),
        ([v2.RandomResizedCrop((32, 24))], "square views"),
        ([v2.RandomResizedCrop(32, scale=(0.2, 0.9))], "scale max 1"),
        (
            [
                v2.RandomResizedCrop(32),
                v2.Normalize([0.5] * 3, [0.2] * 3),
                v2.ColorJitter(0.4),
            ],
            "colour jitter after normalisation",
        ),
        ([v2.RandomResizedCrop(32), v2.ColorJitter((0.5, 1.2))], "not symmetric"),
        (
            [
                v2.RandomResizedCrop(32),
                v2.RandomApply([v2.ColorJitter(0.4), v2.RandomGrayscale(1.0)], p=0.5),
            ],
            "several operations",
        ),
        ([v2.RandomResizedCrop(32), v2.RandomRotation(10, expand=True)], "expand"),
        ([v2.RandomGrayscale(0.2)], "no RandomResizedCrop or Resize"),
        (
            [
                v2.RandomResizedCrop(32),
                v2.RandomHorizontalFlip(),
                v2.RandomHorizontalFlip(),
            ],
            "a second RandomHorizontalFlip",
        ),
        ([v2.RandomResizedCrop(32), v2.RandomGrayscale(0.2)] * 2, "a second crop"),
    ],
)
def test_untranslatable_steps_are_named(steps: list[Any], message: str) -> None:
    transform = MultiViewTransform([v2.Compose(steps)])
    with pytest.raises(UntranslatableTransformError, match=message):
        GPUMultiViewTransform.from_view_transform(transform)
    assert issubclass(UntranslatableTransformError, ValueError)


def test_ignore_leaves_out_chosen_types() -> None:
    view = v2.Compose([v2.RandomResizedCrop(32), v2.AugMix(), v2.RandomVerticalFlip()])
    gpu = GPUViewTransform.from_view_transform(view, ignore=(v2.AugMix,))
    assert gpu.vf_prob == 0.5 and gpu.input_size == 32


class _ThirdParty(SSLMethod):
    """A method written against the base class only: a CPU transform, no GPU twin."""

    def __init__(self, augment: str = "cpu") -> None:
        super().__init__(backbone="resnet18", augment=augment)  # type: ignore[arg-type]

    def cpu_view_transform(self, input_size: int = 224) -> Any:
        return SimCLRTransform(input_size=input_size, rr_prob=0.5, rr_degrees=15.0)


class _Untranslatable(_ThirdParty):
    def cpu_view_transform(self, input_size: int = 224) -> Any:
        return MultiViewTransform(
            [v2.Compose([v2.RandomResizedCrop(input_size), v2.AugMix()])] * 2
        )


def test_third_party_method_gets_gpu_views_for_free() -> None:
    from lightly_derm.data import CanvasBatch
    from lightly_derm.transforms.gpu import CanvasTransform

    method = _ThirdParty(augment="gpu")
    assert isinstance(method.default_transform(32), CanvasTransform)
    _mirrors(method.cpu_view_transform(32), 32)
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    batch = CanvasBatch(
        images, torch.tensor([[40, 40]] * 3), torch.tensor([0, 1, 2]), [None] * 3, 32
    )
    grouped = method.make_views(batch)
    assert grouped.views.shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="AugMix"):
        _Untranslatable(augment="gpu").default_transform(32)
    _Untranslatable(augment="cpu").default_transform(32)  # the CPU path is unaffected
