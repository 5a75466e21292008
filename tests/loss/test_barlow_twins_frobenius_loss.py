from __future__ import annotations

import pytest
import torch

from lightly_derm.loss import BarlowTwinsFrobeniusLoss
from tests.utils.distributed import run_distributed


def reference_c(z_a: torch.Tensor, z_b: torch.Tensor, eps: float) -> torch.Tensor:
    """Cross-correlation of unbiasedly standardised columns, by loops in float64."""
    n, d = z_a.shape
    a, b = z_a.double(), z_b.double()

    def standardise(z: torch.Tensor, j: int) -> list[float]:
        column = [float(z[i, j]) for i in range(n)]
        mean = sum(column) / n
        var = sum((x - mean) ** 2 for x in column) / (n - 1)
        return [(x - mean) / (var + eps) ** 0.5 for x in column]

    sa = [standardise(a, j) for j in range(d)]
    sb = [standardise(b, j) for j in range(d)]
    c = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d):
        for j in range(d):
            c[i, j] = sum(sa[i][k] * sb[j][k] for k in range(n)) / n
    return c


def reference_loss(c: torch.Tensor, lam: float) -> float:
    d = c.shape[0]
    return sum(
        (lam * (float(c[i, j]) - (1.0 if i == j else 0.0))) ** 2
        for i in range(d)
        for j in range(d)
    )


@pytest.mark.parametrize(("n", "d", "lam"), [(2, 3, 5e-3), (8, 5, 5e-3), (13, 4, 0.3)])
def test_matches_reference(n: int, d: int, lam: float) -> None:
    gen = torch.Generator().manual_seed(n)
    z_a = torch.randn(n, d, generator=gen) * 3 + 1
    z_b = z_a + torch.randn(n, d, generator=gen)
    loss = BarlowTwinsFrobeniusLoss(lambda_param=lam)(z_a, z_b)
    assert loss.dtype == torch.float32
    expected = reference_loss(reference_c(z_a, z_b, 1e-5), lam)
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_float32_under_autocast_and_gradients() -> None:
    z_a = torch.randn(6, 4, requires_grad=True)
    z_b = torch.randn(6, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = BarlowTwinsFrobeniusLoss(lambda_param=1.0)(
            z_a.bfloat16(), z_b.bfloat16()
        )
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(z_a.grad).all() and z_a.grad.abs().sum() > 0
    constant = torch.ones(4, 3)  # constant dimensions stay finite thanks to eps
    assert torch.isfinite(BarlowTwinsFrobeniusLoss()(constant, constant))


def test_bad_input() -> None:
    loss_fn = BarlowTwinsFrobeniusLoss()
    with pytest.raises(ValueError, match=r"same shape, got \(4, 3\) and \(4, 2\)"):
        loss_fn(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(
        ValueError, match=r"z_a must be a 2-D tensor \(N, D\), got \(4,\)"
    ):
        loss_fn(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        loss_fn(torch.randn(1, 3), torch.randn(1, 3))


def _distributed(
    rank: int, world_size: int, z_a: torch.Tensor, z_b: torch.Tensor
) -> dict:
    part = z_a.shape[0] // world_size
    a = z_a[rank * part : (rank + 1) * part].clone().requires_grad_(True)
    b = z_b[rank * part : (rank + 1) * part].clone()
    loss = BarlowTwinsFrobeniusLoss(lambda_param=0.1, gather_distributed=True)(a, b)
    loss.backward()
    return {"loss": loss.detach(), "grad": a.grad}


@pytest.mark.slow
@pytest.mark.distributed
def test_distributed_equals_mean_of_the_per_process_correlations() -> None:
    gen = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(8, 3, generator=gen), torch.randn(8, 3, generator=gen)
    results = run_distributed(_distributed, world_size=2, args=(z_a, z_b))
    # lightly's reduction: every process standardises its own half; C is averaged
    c = (reference_c(z_a[:4], z_b[:4], 1e-5) + reference_c(z_a[4:], z_b[4:], 1e-5)) / 2
    expected = reference_loss(c, 0.1)
    # single-process gradient of the averaged-C loss w.r.t. each half, times world size
    # (DDP averages gradients over processes, which undoes the factor)
    a = z_a.clone().double().requires_grad_(True)

    def corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xs = (x - x.mean(0)) / (x.var(0) + 1e-5).sqrt()
        ys = (y - y.mean(0)) / (y.var(0) + 1e-5).sqrt()
        return xs.T @ ys / x.shape[0]

    c_t = (corr(a[:4], z_b[:4].double()) + corr(a[4:], z_b[4:].double())) / 2
    (0.1**2 * (c_t - torch.eye(3, dtype=torch.float64)).square().sum()).backward()
    for rank, result in enumerate(results):
        assert result["loss"].item() == pytest.approx(expected, rel=1e-4)
        torch.testing.assert_close(
            result["grad"].double(),
            2 * a.grad[rank * 4 : (rank + 1) * 4],
            rtol=1e-4,
            atol=1e-7,
        )


def reference_loss_at_scale(z_a: torch.Tensor, z_b: torch.Tensor, lam: float) -> float:
    """The loop reference on float64 copies whose squares still fit in float64."""
    return reference_loss(reference_c(z_a.double(), z_b.double(), 1e-5), lam)


@pytest.mark.parametrize("scale", [1e19, 1e30, 1e37, 1e-20, 1e-40])
@pytest.mark.parametrize(("n", "d"), [(4, 3), (9, 6)])
def test_exact_at_any_finite_float32_scale(scale: float, n: int, d: int) -> None:
    # float32 variances overflowed from ~1e19: every column standardised to zero and
    # the loss became λ²·D, a wrong finite number
    gen = torch.Generator().manual_seed(n * d)
    z_a64 = torch.randn(n, d, generator=gen, dtype=torch.float64) * 3 + 1
    z_b64 = z_a64 + torch.randn(n, d, generator=gen, dtype=torch.float64)
    z_a = (z_a64 * scale).float().requires_grad_(True)
    z_b = (z_b64 * scale).float()
    lam = 0.3
    loss = BarlowTwinsFrobeniusLoss(lambda_param=lam)(z_a, z_b)
    expected = reference_loss_at_scale(z_a.detach(), z_b, lam)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    # gradients: float64 autograd through the same formula on the same inputs
    a64 = z_a.detach().double().requires_grad_(True)
    b64 = z_b.double()

    def standardise(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0) + 1e-5)

    c = standardise(a64).T @ standardise(b64) / n
    (expected_grad,) = torch.autograd.grad(
        lam**2 * (c - torch.eye(d, dtype=torch.float64)).pow(2).sum(), a64
    )
    (grad,) = torch.autograd.grad(loss, z_a)
    assert torch.isfinite(grad).all()
    top = expected_grad.abs().max()
    torch.testing.assert_close(
        grad.double() / top, expected_grad / top, rtol=1e-4, atol=1e-4
    )


def test_overflow_beyond_float64_is_nan() -> None:
    z = torch.randn(5, 3, dtype=torch.float64)
    loss_fn = BarlowTwinsFrobeniusLoss()
    assert torch.isfinite(loss_fn(z * 1e150, z * 1e150))
    assert torch.isnan(loss_fn(z * 1e160, z))
    inf = z.clone().float()
    inf[0, 0] = float("inf")
    assert torch.isnan(loss_fn(inf, z.float()))
