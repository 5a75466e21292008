"""GraVISLoss against slow float64 references written here (never against itself).

References:
- ``loop_smooth_ap`` / ``loop_attention``: the formulas of the method page
  docs/gravis.rst (section "Loss") with Python loops
  over anchors and positives, in float64, with the authors' clamped sigmoid.
- ``authors_smooth_ap``: the authors' ``loss.py`` formulation (Smooth-AP reference code:
  (N, N, N) difference tensors, contiguous groups of equal size, raw dot products).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightly_derm.loss import GraVISLoss
from tests.utils.distributed import run_distributed


def clamped_sigmoid(x: torch.Tensor, tau: float) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(torch.clamp(-x / tau, -50, 50)))


def loop_smooth_ap(z, g, tau=0.01, normalize=True, exclude_self=False) -> torch.Tensor:
    z = z.double()
    if normalize:
        z = z / z.norm(dim=1, keepdim=True)
    n = z.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for a in range(n):
        group = [j for j in range(n) if g[j] == g[a] and not (exclude_self and j == a)]
        others = [k for k in range(n) if not (exclude_self and k == a)]
        ap = torch.zeros((), dtype=torch.float64)
        for j in group:
            s_aj = z[a] @ z[j]
            r_all = 1 + sum(
                clamped_sigmoid(z[a] @ z[k] - s_aj, tau) for k in others if k != j
            )
            r_pos = 1 + sum(
                clamped_sigmoid(z[a] @ z[k] - s_aj, tau) for k in group if k != j
            )
            ap = ap + r_pos / r_all
        total = total + ap / len(group)
    return 1 - total / n


def loop_attention(z, g, tau=0.1, tau_w=0.1, normalize=True) -> torch.Tensor:
    z = z.double()
    if normalize:
        z = z / z.norm(dim=1, keepdim=True)
    n = z.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for a in range(n):
        positives = [b for b in range(n) if g[b] == g[a] and b != a]
        negatives = [q for q in range(n) if g[q] != g[a]]
        sims = [(z[a] @ z[b]).detach() / tau_w for b in positives]
        top = max(sims)
        norm = sum(torch.exp(s - top) for s in sims)
        for b, s in zip(positives, sims, strict=True):
            s_ab = z[a] @ z[b]
            inner = sum(torch.exp((z[a] @ z[q] - s_ab) / tau) for q in negatives)
            total = total + torch.exp(s - top) / norm * torch.log(1 + inner)
    return total / n


def authors_smooth_ap(preds: torch.Tensor, num_id: int, anneal: float = 0.2):
    """The authors' loss.py (Smooth-AP reference code), with their tensor layout."""
    n = preds.shape[0]
    k = n // num_id
    mask = 1.0 - torch.eye(n, dtype=preds.dtype)
    mask = mask.unsqueeze(dim=0).repeat(n, 1, 1)
    sim_all = preds @ preds.t()
    sim_all_repeat = sim_all.unsqueeze(dim=1).repeat(1, n, 1)
    sim_diff = sim_all_repeat - sim_all_repeat.permute(0, 2, 1)
    sim_sg = clamped_sigmoid(sim_diff, anneal) * mask
    sim_all_rk = torch.sum(sim_sg, dim=-1) + 1
    xs = preds.view(num_id, k, preds.shape[1])
    pos_mask = 1.0 - torch.eye(k, dtype=preds.dtype)
    pos_mask = pos_mask.unsqueeze(dim=0).unsqueeze(dim=0).repeat(num_id, k, 1, 1)
    sim_pos = torch.bmm(xs, xs.permute(0, 2, 1))
    sim_pos_repeat = sim_pos.unsqueeze(dim=2).repeat(1, 1, k, 1)
    sim_pos_diff = sim_pos_repeat - sim_pos_repeat.permute(0, 1, 3, 2)
    sim_pos_sg = clamped_sigmoid(sim_pos_diff, anneal) * pos_mask
    sim_pos_rk = torch.sum(sim_pos_sg, dim=-1) + 1
    ap = torch.zeros(1, dtype=preds.dtype)
    for ind in range(num_id):
        block = slice(ind * k, (ind + 1) * k)
        pos_divide = torch.sum(sim_pos_rk[ind] / sim_all_rk[block, block])
        ap = ap + ((pos_divide / k) / n)
    return (1 - ap)[0]


def _inputs(batch_size: int, num_views: int, dim: int, seed: int, scale: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch_size * num_views, dim, generator=gen, dtype=torch.float64)
    return z * scale, torch.arange(batch_size).repeat_interleave(num_views)


def _ragged(seed: int, sizes=(2, 3, 5, 2, 4), dim: int = 6):
    """Groups of different sizes, shuffled, with arbitrary (negative, large) ids."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([-7, 3, 10**12, 0, 42])[: len(sizes)]
    g = torch.cat([ids[i].repeat(s) for i, s in enumerate(sizes)])
    perm = torch.randperm(g.numel(), generator=gen)
    return torch.randn(g.numel(), dim, generator=gen, dtype=torch.float64), g[perm]


SHAPES = [(2, 2, 3), (3, 4, 8), (5, 3, 16), (4, 6, 5)]


@pytest.mark.parametrize("batch_size,num_views,dim", SHAPES)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_smooth_ap_matches_loop_reference(
    batch_size, num_views, dim, normalize, exclude_self
) -> None:
    z, g = _inputs(batch_size, num_views, dim, seed=batch_size * 100 + dim)
    if not normalize:
        z = z / math.sqrt(dim)  # raw dot products of order 1, as a trained head gives
    tau = 0.01 if normalize else 0.2  # the defaults
    loss_fn = GraVISLoss(normalize=normalize, exclude_self=exclude_self)
    expected = loop_smooth_ap(z, g, tau, normalize, exclude_self)
    torch.testing.assert_close(loss_fn(z, g), expected, rtol=1e-10, atol=1e-12)
    # float32 in, float32 out, same number to float32 precision.
    got32 = loss_fn(z.float(), g)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "batch_size,num_views,dim", [(2, 2, 3), (4, 5, 8), (3, 20, 16)]
)
def test_authors_settings_give_authors_numbers(batch_size, num_views, dim) -> None:
    """normalize=False, exclude_self=False reproduce the authors' loss.py, even with
    raw dot products large enough that the authors' clamp is active."""
    for scale in (0.3, 3.0):
        z, g = _inputs(batch_size, num_views, dim, seed=dim, scale=scale)
        z.requires_grad_(True)
        expected = authors_smooth_ap(z, batch_size)
        (expected_grad,) = torch.autograd.grad(expected, z)
        got = GraVISLoss(normalize=False, exclude_self=False)(z, g)
        (grad,) = torch.autograd.grad(got, z)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)
    # The loop reference and the authors' code agree too: the references are consistent.
    z, g = _inputs(batch_size, min(num_views, 4), dim, seed=1)
    torch.testing.assert_close(
        loop_smooth_ap(z, g, 0.2, normalize=False), authors_smooth_ap(z, batch_size)
    )


@pytest.mark.parametrize("batch_size,num_views,dim", SHAPES)
@pytest.mark.parametrize("normalize", [True, False])
def test_attention_matches_loop_reference(
    batch_size, num_views, dim, normalize
) -> None:
    z, g = _inputs(batch_size, num_views, dim, seed=dim + 1)
    if not normalize:
        z = z / math.sqrt(dim)
    for tau, tau_w in [(0.1, 0.1), (0.5, 2.0)]:
        loss_fn = GraVISLoss(
            "attention",
            temperature=tau,
            attention_temperature=tau_w,
            normalize=normalize,
        )
        expected = loop_attention(z, g, tau, tau_w, normalize)
        torch.testing.assert_close(loss_fn(z, g), expected, rtol=1e-10, atol=1e-12)


def test_attention_weights_favour_similar_positives() -> None:
    """τ_w → ∞ is the plain mean over positives; small τ_w → the most similar one."""
    z, g = _inputs(3, 4, 8, seed=5)
    loss_uniform = GraVISLoss("attention", attention_temperature=1e9)(z, g)
    z_n = z / z.norm(dim=1, keepdim=True)
    n = z.shape[0]
    expected = 0.0
    for a in range(n):
        pos = [b for b in range(n) if g[b] == g[a] and b != a]
        neg = [q for q in range(n) if g[q] != g[a]]
        for b in pos:
            inner = sum(
                torch.exp((z_n[a] @ z_n[q] - z_n[a] @ z_n[b]) / 0.1) for q in neg
            )
            expected = expected + torch.log(1 + inner) / len(pos)
    torch.testing.assert_close(loss_uniform, expected / n)


@pytest.mark.parametrize("variant", ["smooth_ap", "attention"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_variable_group_sizes_in_any_order(variant, exclude_self) -> None:
    z, g = _ragged(seed=3)
    got = GraVISLoss(variant, exclude_self=exclude_self)(z, g)
    if variant == "smooth_ap":
        expected = loop_smooth_ap(z, g, 0.01, exclude_self=exclude_self)
    else:
        expected = loop_attention(z, g)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch_size,num_views,dim", SHAPES)
@pytest.mark.parametrize(
    "variant,exclude_self",
    [("smooth_ap", False), ("smooth_ap", True), ("attention", False)],
)
@pytest.mark.slow
def test_group_size_hint_gives_the_same_loss_and_gradients(
    batch_size, num_views, dim, variant, exclude_self
) -> None:
    """group_size (K views per image, known to the caller) skips the host read-back of
    the group sizes; loss and gradients equal the loop reference, in any view order."""
    z, g = _inputs(batch_size, num_views, dim, seed=dim + 7)
    perm = torch.randperm(g.shape[0], generator=torch.Generator().manual_seed(dim))
    z, g = z[perm].clone().requires_grad_(True), g[perm]
    loss_fn = GraVISLoss(variant, exclude_self=exclude_self)
    got = loss_fn(z, g, group_size=num_views)
    if variant == "smooth_ap":
        expected = loop_smooth_ap(z, g, 0.01, exclude_self=exclude_self)
    else:
        expected = loop_attention(z, g)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(got, z)
    (expected_grad,) = torch.autograd.grad(expected, z)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)


def test_group_size_hint_errors() -> None:
    z, g = _inputs(3, 4, 8, seed=0)
    with pytest.raises(RuntimeError, match="not every group of group_ids has 3 views"):
        GraVISLoss()(z, torch.arange(12) // 3 % 3, group_size=3)  # sizes 6, 3, 3
    z6, _ = _inputs(2, 3, 4, seed=1)
    with pytest.raises(RuntimeError, match="not every group"):
        GraVISLoss()(z6, torch.tensor([0, 0, 0, 0, 1, 1]), group_size=3)
    with pytest.raises(ValueError, match="does not divide"):
        GraVISLoss()(z, g, group_size=5)
    for bad in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="group_size must be an int >= 2"):
            GraVISLoss()(z, g, group_size=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"exclude_self": True},
        {"normalize": False},
        # The attention weights are stop-gradient, which finite differences cannot
        # see; with τ_w → ∞ they are constant and gradcheck applies.
        {"variant": "attention", "attention_temperature": 1e9},
        {"variant": "attention", "normalize": False, "attention_temperature": 1e9},
    ],
)
def test_gradcheck_float64(kwargs) -> None:
    z, g = _ragged(seed=4, sizes=(2, 3, 2), dim=4)
    z = (z / 2).requires_grad_(True)
    loss_fn = GraVISLoss(**kwargs)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, g), (z,))


@pytest.mark.parametrize("variant", ["smooth_ap", "attention"])
def test_gradients_match_loop_reference(variant) -> None:
    """Autograd through the references (with their own stop-gradient for attention)."""
    z, g = _ragged(seed=6)
    z.requires_grad_(True)
    reference = loop_smooth_ap if variant == "smooth_ap" else loop_attention
    (expected,) = torch.autograd.grad(reference(z, g), z)
    (got,) = torch.autograd.grad(GraVISLoss(variant)(z, g), z)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("variant", ["smooth_ap", "attention"])
def test_invariant_to_permuting_the_batch(variant) -> None:
    z, g = _inputs(4, 3, 8, seed=9)
    z.requires_grad_(True)
    loss_fn = GraVISLoss(variant)
    loss = loss_fn(z, g)
    (grad,) = torch.autograd.grad(loss, z)
    perm = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(0))
    z_p = z.detach()[perm].requires_grad_(True)
    loss_p = loss_fn(z_p, g[perm] * 5 - 3)  # relabelled ids too
    (grad_p,) = torch.autograd.grad(loss_p, z_p)
    torch.testing.assert_close(loss_p, loss)
    torch.testing.assert_close(grad_p, grad[perm])


def test_extremes() -> None:
    z, g = _inputs(1, 4, 8, seed=2)  # one group: everything ranks as positive
    assert GraVISLoss()(z, g).item() == pytest.approx(0.0, abs=1e-12)
    z.requires_grad_(True)
    loss = GraVISLoss("attention")(z, g)  # no negatives: nothing to push away
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()
    # Perfectly separated groups: AP = 1 up to the sigmoid's tails.
    sep = torch.eye(3, dtype=torch.float64).repeat_interleave(4, dim=0)
    assert (
        GraVISLoss(temperature=0.01)(sep, torch.arange(3).repeat_interleave(4)) < 1e-6
    )


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("exclude_self", [False, True])
def test_smooth_ap_never_builds_cubic_tensors(exclude_self) -> None:
    batch_size, num_views = 24, 4
    n = batch_size * num_views
    z = torch.randn(n, 32, requires_grad=True)
    g = torch.arange(batch_size).repeat_interleave(num_views)
    with _LargestTensor() as probe:
        GraVISLoss(exclude_self=exclude_self)(z, g).backward()
    assert probe.numel <= n * n * num_views, probe.numel
    # The probe sees the O(N³) formulation (this test can fail).
    with _LargestTensor() as probe:
        authors_smooth_ap(z, batch_size).backward()
    assert probe.numel >= n**3


def test_float32_under_bf16_autocast() -> None:
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(12, 16, generator=torch.Generator().manual_seed(0))
    g = torch.arange(4).repeat_interleave(3)
    for variant in ("smooth_ap", "attention"):
        loss_fn = GraVISLoss(variant)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = layer(x)
            assert z.dtype == torch.bfloat16
            loss = loss_fn(z, g)
        assert loss.dtype == torch.float32
        # Equal to the float32 loss of the same (bf16-rounded) embeddings: the
        # similarity matmul did not run in bf16.
        torch.testing.assert_close(loss, loss_fn(z.float(), g), rtol=0, atol=0)
        loss.backward()


def test_bad_input_errors() -> None:
    z = torch.randn(6, 4)
    g = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_fn = GraVISLoss()
    with pytest.raises(ValueError, match="group id 9 has a single view"):
        loss_fn(z, torch.tensor([0, 0, 1, 1, 1, 9]))
    with pytest.raises(ValueError, match="group id 5 has a single view"):
        GraVISLoss("attention")(z, torch.tensor([5, 0, 1, 1, 0, 0]))
    with pytest.raises(TypeError, match="group_ids must be an integer tensor.*float32"):
        loss_fn(z, g.float())
    with pytest.raises(TypeError, match="group_ids must be an integer tensor.*bool"):
        loss_fn(z, g > 0)
    with pytest.raises(TypeError, match="group_ids must be an integer tensor.*list"):
        loss_fn(z, g.tolist())
    with pytest.raises(TypeError, match="embeddings must be a floating-point.*int64"):
        loss_fn(z.long(), g)
    with pytest.raises(ValueError, match=r"group_ids must be \(N,\) = \(6,\).*\(5,\)"):
        loss_fn(z, g[:5])
    with pytest.raises(ValueError, match=r"embeddings must be \(N, D\).*\(6, 4, 1\)"):
        loss_fn(z[..., None], g)
    with pytest.raises(ValueError, match="variant must be one of"):
        GraVISLoss("smoothap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature must be positive"):
        GraVISLoss(temperature=0.0)
    with pytest.raises(ValueError, match="attention_temperature must be positive"):
        GraVISLoss(attention_temperature=-1.0)
    assert GraVISLoss().temperature == 0.01  # cosine: Smooth-AP's
    assert GraVISLoss(normalize=False).temperature == 0.2  # raw: the authors'
    assert GraVISLoss(normalize=False, temperature=0.5).temperature == 0.5
    assert GraVISLoss("attention").temperature == 0.1
    assert GraVISLoss("attention", normalize=False).temperature == 0.1


# ------------------------------------------------------------------ distributed
CASES = [
    {"variant": "smooth_ap"},
    {"variant": "smooth_ap", "exclude_self": True, "normalize": False},
    {"variant": "attention"},
]


def _local_groups(rank: int) -> torch.Tensor:
    """Per-rank ids; both ranks use 0, 1, … (they must not be mixed up)."""
    if rank == 0:
        return torch.arange(3).repeat_interleave(4)  # 3 images x 4 views
    return torch.tensor([1, 0, 2, 0, 1, 1, 0, 3, 3, 2, 2, 2])  # sizes 3, 4, 3, 2


def _distributed_work(rank: int, world_size: int, z_full: torch.Tensor):
    n = z_full.shape[0] // world_size
    results = []
    for kwargs in CASES:
        z = z_full[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        loss = GraVISLoss(gather_distributed=True, **kwargs)(z, _local_groups(rank))
        loss.backward()
        results.append({"loss": loss.detach(), "grad": z.grad})
    return results


@pytest.mark.distributed
def test_gather_distributed_equals_single_process_on_concatenated_batch() -> None:
    world_size = 2
    z_full = torch.randn(24, 8, dtype=torch.float64)
    per_rank = run_distributed(_distributed_work, world_size, args=(z_full,))
    # The single process sees the concatenated batch with ids made distinct per rank.
    g_full = torch.cat([_local_groups(0), _local_groups(1) + 100])
    for c, kwargs in enumerate(CASES):
        z = z_full.clone().requires_grad_(True)
        loss = GraVISLoss(**kwargs)(z, g_full)
        loss.backward()
        # Each rank's loss is the mean over its own anchors; with equal view counts
        # the mean over ranks is the loss of the whole batch.
        mean_loss = sum(r[c]["loss"] for r in per_rank) / world_size
        torch.testing.assert_close(mean_loss, loss.detach(), rtol=1e-10, atol=1e-12)
        # gather's backward sums every rank's gradient, so each rank holds the gradient
        # of the SUM of the rank losses = world_size × the whole-batch gradient (DDP's
        # gradient averaging then gives exactly the whole-batch parameter gradient).
        grads = torch.cat([r[c]["grad"] for r in per_rank])
        torch.testing.assert_close(grads, world_size * z.grad, rtol=1e-9, atol=1e-12)


def test_gather_distributed_without_process_group_is_plain() -> None:
    z, g = _inputs(3, 3, 4, seed=1)
    torch.testing.assert_close(
        GraVISLoss(gather_distributed=True)(z, g), GraVISLoss()(z, g)
    )


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["smooth_ap", "attention"])
def test_cuda_bf16_autocast_matches_cpu_float64(variant) -> None:
    z, g = _ragged(seed=8, sizes=(4, 4, 3, 5, 2), dim=32)
    z_bf16 = z.bfloat16()
    # float64 on the CPU from the same bf16-rounded embeddings.
    expected = GraVISLoss(variant)(z_bf16.double(), g)
    z_cuda = z_bf16.cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = GraVISLoss(variant)(z_cuda, g.cuda())
    assert loss.dtype == torch.float32
    loss.backward()
    # Only float32-vs-float64 arithmetic differs: a bf16 matmul would miss by ~1e-2.
    torch.testing.assert_close(loss.double().cpu(), expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(z_cuda.grad.float()).all()


def _unit_rows(z: torch.Tensor) -> torch.Tensor:
    """Independent float64 normalisation: rows scaled by their largest entry first."""
    z = z.double()
    z = z / z.abs().amax(dim=1, keepdim=True)
    return z / z.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("variant", ["smooth_ap", "attention"])
@pytest.mark.parametrize(
    ("scale", "dtype"),
    [
        (1e19, torch.float32),
        (1e37, torch.float32),
        (1e-30, torch.float32),
        (1e-36, torch.float32),
        (1e200, torch.float64),
        (1e-300, torch.float64),
    ],
)
def test_exact_at_any_finite_scale(variant, scale, dtype) -> None:
    # float32 norms overflowed from ~1e19: every row became 0, the loss a constant
    # (0.6667 instead of 0.3555) with zero gradient, and the guard never fired
    for batch_size, num_views, dim in SHAPES[:3]:
        z64, g = _inputs(batch_size, num_views, dim, seed=dim)
        z = (z64 * scale).to(dtype).requires_grad_(True)
        unit = _unit_rows(z.detach()).requires_grad_(True)
        # τ 0.2 for smooth_ap: at the default 0.01 these tiny shapes saturate the
        # sigmoid, and a gradient of ~1e-11 at unit scale underflows float32 at 1e37
        # (float32 range, not the normalisation under test)
        tau = 0.2 if variant == "smooth_ap" else 0.1

        def reference(u, groups, tau=tau):
            return (loop_smooth_ap if variant == "smooth_ap" else loop_attention)(
                u, groups, tau=tau
            )

        expected = reference(unit, g)
        loss = GraVISLoss(variant, temperature=tau)(z, g)
        (grad,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(loss)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
        # the gradient at scale s is the unit-scale gradient projected onto the
        # sphere's tangent, divided by the row norms
        (grad_unit,) = torch.autograd.grad(reference(unit, g), unit)
        rows = z.detach().double()
        largest = rows.abs().amax(dim=1, keepdim=True)
        norms = largest * (rows / largest).norm(dim=1, keepdim=True)
        projected = grad_unit - (grad_unit * unit).sum(1, keepdim=True) * unit
        expected_grad = projected.detach() / norms
        torch.testing.assert_close(
            grad.double() / expected_grad.abs().max(),
            expected_grad / expected_grad.abs().max(),
            rtol=1e-4,
            atol=1e-4,
        )


@pytest.mark.parametrize("variant", ["smooth_ap", "attention"])
def test_raw_dot_products_that_overflow_give_nan_not_a_number(variant) -> None:
    z, g = _inputs(3, 4, 8, seed=1)
    loss_fn = GraVISLoss(variant, normalize=False)
    assert torch.isfinite(loss_fn(z.float() * 1e17, g))
    assert torch.isnan(loss_fn(z.float() * 1e19, g))  # z·z overflows float32
    inf = z.clone()
    inf[0, 0] = math.inf
    assert torch.isnan(GraVISLoss(variant)(inf, g))
