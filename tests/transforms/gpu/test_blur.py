from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from lightly_derm.transforms.gpu import default_kernel_size, gaussian_blur


@pytest.mark.parametrize(
    "shape,kernel", [((5, 3, 20, 17), 13), ((3, 1, 9, 9), 5), ((2, 3, 32, 8), 7)]
)
def test_equals_torchvision_per_image(shape, kernel) -> None:
    x = torch.rand(shape, dtype=torch.float64)
    sigmas = torch.rand(shape[0], dtype=torch.float64) * 1.9 + 0.1
    apply = torch.arange(shape[0]) % 3 != 1
    out = gaussian_blur(x, sigmas, kernel, apply)
    for i in range(shape[0]):
        ref = TF.gaussian_blur(x[i], [kernel, kernel], [float(sigmas[i])] * 2)
        torch.testing.assert_close(
            out[i], ref if apply[i] else x[i], rtol=0, atol=1e-12
        )
    assert torch.equal(out[~apply], x[~apply])


def test_uint8_scalar_sigma_and_errors() -> None:
    x8 = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    out = gaussian_blur(x8, 1.0, 5)
    torch.testing.assert_close(out, gaussian_blur(x8.float() / 255, torch.ones(2), 5))
    assert default_kernel_size(2.0) == 13
    with pytest.raises(ValueError, match="kernel_size"):
        gaussian_blur(x8, 1.0, 4)
    with pytest.raises(ValueError, match="larger"):
        gaussian_blur(x8, 1.0, 41)
    with pytest.raises(ValueError, match="sigmas"):
        gaussian_blur(x8, torch.ones(3), 5)
