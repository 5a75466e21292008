from __future__ import annotations

import itertools

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lightly_derm.transforms.gpu import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    grayscale,
    rgb_to_grayscale,
    sample_color_jitter,
    solarize,
)

SHAPES = [(6, 3, 5, 7), (3, 3, 16, 16), (1, 3, 2, 33)]
TV = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]


def _images(shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    x[0, :, 0, :] = 0.25  # achromatic pixels (max = min)
    x[0, 1, 1, :] = x[0, 0, 1, :]  # ties between channels
    return x


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "ours,theirs,low,high,atol",
    [
        (adjust_brightness, TF.adjust_brightness, 0.0, 2.0, 1e-12),
        (adjust_contrast, TF.adjust_contrast, 0.0, 2.0, 1e-12),
        (adjust_saturation, TF.adjust_saturation, 0.0, 2.0, 1e-12),
        # torchvision's adjust_hue computes in float32 whatever the input dtype
        (adjust_hue, TF.adjust_hue, -0.5, 0.5, 5e-6),
    ],
)
def test_op_equals_torchvision_per_image(shape, ours, theirs, low, high, atol) -> None:
    x = _images(shape)
    factors = low + (high - low) * torch.rand(shape[0], dtype=torch.float64)
    out = ours(x, factors)
    assert out.dtype == torch.float64 and out.shape == x.shape
    for i in range(shape[0]):
        torch.testing.assert_close(
            out[i], theirs(x[i], float(factors[i])), rtol=0, atol=atol
        )


def test_uint8_and_float32_inputs() -> None:
    x8 = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    f = torch.tensor([0.5, 1.0, 1.5, 0.9])
    out = adjust_saturation(x8, f)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, adjust_saturation(x8.float() / 255, f))
    torch.testing.assert_close(
        adjust_hue(x8.float() / 255, f - 1).double(),
        adjust_hue(x8.double() / 255, f - 1),
        rtol=0,
        atol=1e-6,
    )


def test_grayscale_and_solarize_equal_torchvision() -> None:
    x = _images((5, 3, 4, 6))
    apply = torch.tensor([True, False, True, True, False])
    gray = grayscale(x, apply)
    sol = solarize(x, 0.5, apply)
    for i in range(5):
        ref_gray = (
            TF.rgb_to_grayscale(x[i], num_output_channels=3) if apply[i] else x[i]
        )
        ref_sol = TF.solarize(x[i], 0.5) if apply[i] else x[i]
        torch.testing.assert_close(gray[i], ref_gray, rtol=0, atol=1e-15)
        torch.testing.assert_close(sol[i], ref_sol, rtol=0, atol=0)
    torch.testing.assert_close(
        rgb_to_grayscale(x)[:, 0], TF.rgb_to_grayscale(x)[:, 0], rtol=0, atol=0
    )


def _reference_jitter(x, factors, order):
    out = []
    for i in range(x.shape[0]):
        y = x[i]
        for op in order[i].tolist():
            value = float(factors[i, op])
            if value != (0.0 if op == 3 else 1.0):  # identity: torchvision skips the op
                y = TV[op](y, value)
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize("shape", SHAPES)
def test_color_jitter_per_image_order(shape) -> None:
    """Every image applies its own factors in its own order, as ColorJitter does."""
    x = _images(shape)
    g = torch.Generator().manual_seed(5)
    factors, order = sample_color_jitter(
        shape[0], 0.4, 0.4, 0.4, 0.1, p=0.8, generator=g
    )
    out = color_jitter(x, factors, order)
    torch.testing.assert_close(
        out, _reference_jitter(x, factors, order), rtol=0, atol=5e-6
    )
    # Without hue the blends are exact to rounding, and each of the 24 orders is tested.
    orders = torch.tensor(list(itertools.permutations(range(4))))
    xs = _images((24, 3, 4, 5), seed=1)
    factors = torch.rand(24, 4, dtype=torch.float64) * 1.5 + 0.25
    factors[:, 3] = 0.0
    out = color_jitter(xs, factors, orders, ops=(True, True, True, False))
    torch.testing.assert_close(
        out, _reference_jitter(xs, factors, orders), rtol=0, atol=1e-12
    )


def test_color_jitter_identity_is_exact() -> None:
    x = _images((4, 3, 5, 5))
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]] * 4, dtype=torch.float64)
    order = torch.tensor([[3, 2, 1, 0]] * 4)
    assert torch.equal(color_jitter(x, factors, order), x)


def test_jitter_sampling_matches_torchvision() -> None:
    """Apply rate, factor ranges (uniform) and uniformly random op orders."""
    n = 24000
    factors, order = sample_color_jitter(
        n, 0.4, 0.3, 0.2, 0.1, p=0.8, generator=torch.Generator().manual_seed(0)
    )
    jitter = v2.ColorJitter(0.4, 0.3, 0.2, 0.1)
    applied = factors[:, 0] != 1.0
    assert abs(applied.float().mean() - 0.8) < 0.01
    on = factors[applied]
    ref = torch.tensor(
        [
            [
                jitter.make_params([])[k]
                for k in (
                    "brightness_factor",
                    "contrast_factor",
                    "saturation_factor",
                    "hue_factor",
                )
            ]
            for _ in range(4000)
        ]
    )
    q = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    for column in range(4):
        torch.testing.assert_close(
            torch.quantile(on[:, column], q),
            torch.quantile(ref[:, column].float(), q),
            rtol=0,
            atol=0.02,
        )
    # Identity factors where the jitter does not apply.
    assert torch.equal(
        factors[~applied],
        torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(int((~applied).sum()), 4),
    )
    # Orders: permutations, each of the 24 about equally often.
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    codes = (order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.bincount(codes, minlength=256)[codes.unique()]
    assert len(counts) == 24
    assert (counts.float() / n - 1 / 24).abs().max() < 0.008


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="channels"):
        adjust_hue(torch.rand(2, 1, 4, 4), 0.1)
    with pytest.raises(ValueError, match="factors"):
        adjust_brightness(torch.rand(2, 3, 4, 4), torch.ones(3))
    with pytest.raises(ValueError, match="hue"):
        sample_color_jitter(4, hue=0.7)
    with pytest.raises(ValueError, match="order"):
        color_jitter(
            torch.rand(2, 3, 4, 4),
            torch.ones(2, 4),
            torch.zeros(3, 4, dtype=torch.long),
        )
