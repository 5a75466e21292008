from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vmap

from lightly_derm.miners import TracInPositiveMiner, pairwise_tracin


def rel_err(actual: Tensor, expected: Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


# ------------------------------------------------------------------ pairwise_tracin
def _mlp(num_layers: int, bias: bool, seed: int) -> nn.ModuleList:
    torch.manual_seed(seed)
    dims = [5, 7, 4, 3][: num_layers + 1]
    return nn.ModuleList(
        nn.Linear(dims[k], dims[k + 1], bias=bias) for k in range(num_layers)
    ).double()


def _mlp_loss(params: dict[str, Tensor], x: Tensor, t: Tensor, layers: int, bias: bool):
    """Loss of one sample, x (V, D0) and t (V, D_last); the views interact."""
    h = x
    for k in range(layers):
        h = h @ params[f"{k}.weight"].T
        if bias:
            h = h + params[f"{k}.bias"]
        if k < layers - 1:
            h = torch.tanh(h)
    return ((h - t) ** 2).sum() + 0.5 * (h[0] * h[-1]).sum() + h.sin().sum()


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("views", [1, 2])
def test_pairwise_tracin_equals_per_sample_gradients(
    num_layers: int, bias: bool, views: int
) -> None:
    batch = 4 + num_layers + views
    mlp = _mlp(num_layers, bias, seed=10 * num_layers + views)
    generator = torch.Generator().manual_seed(num_layers + 7 * views)
    x = torch.randn(batch, views, 5, generator=generator, dtype=torch.float64)
    t = torch.randn(batch, views, mlp[-1].out_features, generator=generator).double()
    params = {k: v.detach() for k, v in mlp.named_parameters()}

    # Reference: per-sample gradients with torch.func, dotted pairwise.
    per_sample = vmap(grad(_mlp_loss), in_dims=(None, 0, 0, None, None))(
        params, x, t, num_layers, bias
    )
    flat = torch.cat([per_sample[k].reshape(batch, -1) for k in params], dim=1)
    expected = flat @ flat.T

    # Layer inputs and output gradients from one batched forward.
    inputs, outputs = [], []
    h = x
    for k, layer in enumerate(mlp):
        inputs.append(h.detach().transpose(0, 1))  # (V, B, D_in)
        h = layer(h)
        outputs.append(h)
        if k < num_layers - 1:
            h = torch.tanh(h)
    loss = ((h - t) ** 2).sum() + 0.5 * (h[:, 0] * h[:, -1]).sum() + h.sin().sum()
    output_grads = [g.transpose(0, 1) for g in torch.autograd.grad(loss, outputs)]

    scores = pairwise_tracin(inputs, output_grads, bias=bias)
    assert scores.dtype == torch.float64 and scores.shape == (batch, batch)
    assert rel_err(scores, expected) < 1e-10


def test_pairwise_tracin_per_layer_bias_flags_and_dtypes() -> None:
    generator = torch.Generator().manual_seed(0)
    a = [torch.randn(2, 6, 4, generator=generator) for _ in range(2)]
    g = [torch.randn(2, 6, 3, generator=generator) for _ in range(2)]
    both = pairwise_tracin(a, g, bias=True)
    mixed = pairwise_tracin(a, g, bias=[True, False])
    expected = pairwise_tracin(a[:1], g[:1], bias=True) + pairwise_tracin(
        a[1:], g[1:], bias=False
    )
    torch.testing.assert_close(mixed, expected)
    assert not torch.allclose(both, mixed)
    # Half-precision inputs are scored in float32, float64 stays float64.
    reference = pairwise_tracin([x.double() for x in a], [y.double() for y in g])
    for dtype in (torch.float16, torch.bfloat16):
        low = pairwise_tracin([x.to(dtype) for x in a], [y.to(dtype) for y in g])
        assert low.dtype == torch.float32
        assert rel_err(low.double(), reference) < 2e-2
    assert reference.dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = pairwise_tracin(a, g)
    assert under_autocast.dtype == torch.float32
    assert rel_err(under_autocast.double(), reference) < 1e-6


def test_pairwise_tracin_bad_input() -> None:
    a, g = torch.randn(2, 5, 4), torch.randn(2, 5, 3)
    with pytest.raises(TypeError, match="inputs must be a list"):
        pairwise_tracin(a, [g])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inputs has 2 layers but output_grads has 1"):
        pairwise_tracin([a, a], [g])
    with pytest.raises(ValueError, match="inputs is empty"):
        pairwise_tracin([], [])
    with pytest.raises(ValueError, match="batch size B must match"):
        pairwise_tracin([a], [torch.randn(2, 6, 3)])
    with pytest.raises(ValueError, match="views V and batch size B must match"):
        pairwise_tracin([a], [torch.randn(1, 5, 3)])
    with pytest.raises(ValueError, match="same batch size: layer 0 has B = 5, layer 1"):
        pairwise_tracin([a, torch.randn(2, 4, 4)], [g, torch.randn(2, 4, 3)])
    with pytest.raises(ValueError, match=r"inputs\[0\] must be \(V, B, D\)"):
        pairwise_tracin([torch.randn(5, 4)], [torch.randn(5, 3)])
    with pytest.raises(TypeError, match="floating-point"):
        pairwise_tracin([a.long()], [g])
    with pytest.raises(ValueError, match="bias has 1 flags for 2 layers"):
        pairwise_tracin([a, a], [g, g], bias=[True])
    with pytest.raises(TypeError, match="bias must be a bool"):
        pairwise_tracin([a], [g], bias=1)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the miner
FEATURES, PROJ_HIDDEN, PROJ, PRED_HIDDEN = 6, 10, 5, 9


def _byol_heads(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    heads = nn.Sequential(
        BYOLProjectionHead(FEATURES, PROJ_HIDDEN, PROJ),
        BYOLPredictionHead(PROJ, PRED_HIDDEN, PROJ),
    ).double()
    # Non-trivial BatchNorm affine parameters and running statistics.
    for module in heads.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    return heads


def _byol_per_sample(p: list[Tensor], z: list[Tensor]) -> Tensor:
    """lightly's BYOL loss, 0.5 * (ncs(p0, z1) + ncs(p1, z0)), per sample."""
    return -0.5 * (F.cosine_similarity(p[0], z[1]) + F.cosine_similarity(p[1], z[0]))


def _batch(batch: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, batch, FEATURES, generator=generator, dtype=torch.float64)
    z = torch.randn(2, batch, PROJ, generator=generator, dtype=torch.float64)
    return x, z


def _exact_scores(
    heads: nn.Sequential, layers: list[nn.Linear], x: Tensor, z: Tensor
) -> Tensor:
    """⟨∇ℓ_i, ∇ℓ_j⟩ from the full Jacobian of the per-sample losses (torch.func)."""
    layer_names = {id(m): n for n, m in heads.named_modules()}
    heads = copy.deepcopy(heads)
    layers = [dict(heads.named_modules())[layer_names[id(m)]] for m in layers]
    for module in heads.modules():
        if isinstance(module, nn.BatchNorm1d) and module.training:
            # Same train-mode output (batch statistics), without the running-stat
            # updates that torch.func cannot trace.
            module.track_running_stats = False
    names = {id(p): n for n, p in heads.named_parameters()}
    chosen = {names[id(p)]: p.detach() for layer in layers for p in layer.parameters()}
    params = {n: p.detach() for n, p in heads.named_parameters()}
    buffers = {n: b.clone() for n, b in heads.named_buffers()}

    def losses(theta: dict[str, Tensor]) -> Tensor:
        state = {**params, **theta, **buffers}
        p = [functional_call(heads, state, (x[s],)) for s in range(2)]
        return _byol_per_sample(p, list(z))

    jacobian = jacrev(losses)(chosen)
    flat = torch.cat([jacobian[n].reshape(x.shape[1], -1) for n in chosen], dim=1)
    return flat @ flat.T


def _mined_scores(miner: TracInPositiveMiner, heads: nn.Module, x: Tensor, z: Tensor):
    with miner.capture():
        p = [heads(x[s]) for s in range(2)]
    loss = _byol_per_sample(p, list(z))
    return miner.scores(loss), loss


def test_last_layer_is_exact_in_train_mode() -> None:
    heads = _byol_heads()
    x, z = _batch(7)
    expected = _exact_scores(heads, [heads[1].layers[-1]], x, z)
    miner = TracInPositiveMiner("last").attach(heads[1], heads[0])
    assert miner.layers == [heads[1].layers[-1]]
    scores, _ = _mined_scores(miner, heads, x, z)
    assert rel_err(scores, expected) < 1e-10
    # The hooks are gone after the block.
    assert all(not layer._forward_hooks for layer in heads.modules())


def test_all_layers_exact_in_eval_mode_and_batch_gradient_shares_in_train_mode() -> (
    None
):
    heads = _byol_heads(seed=3)
    x, z = _batch(6, seed=4)
    miner = TracInPositiveMiner("all").attach(heads[1], heads[0])
    assert len(miner.layers) == 4

    heads.eval()
    expected = _exact_scores(heads, miner.layers, x, z)
    scores, _ = _mined_scores(miner, heads, x, z)
    assert rel_err(scores, expected) < 1e-10

    heads.train()
    exact = _exact_scores(heads, miner.layers, x, z)
    scores, loss = _mined_scores(miner, heads, x, z)
    # Train-mode BatchNorm after a layer couples samples: not the exact inner products,
    # but the Gram matrix of each sample's share of the batch gradient.
    assert rel_err(scores, exact) > 1e-3
    params = [p for layer in miner.layers for p in layer.parameters()]
    batch_grad = torch.autograd.grad(loss.sum(), params)
    squared_norm = sum((g**2).sum() for g in batch_grad)
    torch.testing.assert_close(scores.sum(), squared_norm, rtol=1e-10, atol=0)


def _reference_topk(scores: Tensor, k: int, blocked: Tensor) -> Tensor:
    rows = []
    for i in range(scores.shape[0]):
        candidates = [j for j in range(scores.shape[1]) if not blocked[i, j]]
        candidates.sort(key=lambda j: -float(scores[i, j]))
        rows.append(candidates[:k])
    return torch.tensor(rows)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("top_k", [1, 3])
def test_selection_matches_loop_reference(normalize: bool, top_k: int) -> None:
    heads = _byol_heads(seed=5)
    batch = 9
    x, z = _batch(batch, seed=6)
    exact = _exact_scores(heads, [heads[1].layers[-1]], x, z)
    if normalize:
        exact = exact / torch.outer(exact.diag(), exact.diag()).sqrt()
    group_ids = torch.tensor([0, 1, 0, 2, 3, 4, 2, 5, 6])  # 0 and 2 repeated
    blocked = torch.eye(batch, dtype=torch.bool)
    plain = TracInPositiveMiner(normalize=normalize, top_k=top_k).attach(heads[1])
    for ids in (None, group_ids):
        with plain.capture():
            p = [heads(x[s]) for s in range(2)]
        loss = _byol_per_sample(p, list(z))
        indices = plain(loss, group_ids=ids)
        mask = blocked if ids is None else blocked | (ids[:, None] == ids[None, :])
        assert indices.dtype == torch.int64 and indices.shape == (batch, top_k)
        assert torch.equal(indices, _reference_topk(exact, top_k, mask))
        assert not (indices == torch.arange(batch)[:, None]).any()
    # An explicit exclusion mask.
    exclude = torch.zeros(batch, batch, dtype=torch.bool)
    exclude[:, 0] = True
    with plain.capture():
        p = [heads(x[s]) for s in range(2)]
    indices = plain(_byol_per_sample(p, list(z)), exclude=exclude)
    assert torch.equal(indices, _reference_topk(exact, top_k, blocked | exclude))


def test_miner_leaves_the_graph_and_parameter_gradients_alone() -> None:
    heads = _byol_heads()
    x, z = _batch(5)
    miner = TracInPositiveMiner("predictor").attach(heads[1])
    with miner.capture():
        p = [heads(x[s]) for s in range(2)]
    loss = _byol_per_sample(p, list(z))
    indices = miner(loss)
    assert not indices.requires_grad
    assert all(param.grad is None for param in heads.parameters())
    loss.mean().backward()  # the graph survived the miner's autograd.grad
    expected = copy.deepcopy(heads)
    expected.zero_grad()
    q = [expected(x[s]) for s in range(2)]
    _byol_per_sample(q, list(z)).mean().backward()
    for mine, ref in zip(heads.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, ref.grad)
    with pytest.raises(RuntimeError, match="recorded no forward"):
        miner(loss)  # the recording was consumed


def test_concatenated_views_and_token_dimensions() -> None:
    heads = _byol_heads().eval()
    x, z = _batch(6)
    miner = TracInPositiveMiner("all").attach(heads[1], heads[0])
    per_view, _ = _mined_scores(miner, heads, x, z)
    with miner.capture():
        p = heads(torch.cat([x[0], x[1]])).chunk(2)
    concatenated = miner.scores(_byol_per_sample(list(p), list(z)))
    torch.testing.assert_close(concatenated, per_view, rtol=1e-10, atol=1e-12)

    # A Linear over (B, T, D) tokens: every position counts as a view.
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    tokens = torch.randn(5, 3, 4, dtype=torch.float64)
    target = torch.randn(5, 3, 3, dtype=torch.float64)

    def losses(params: dict[str, Tensor]) -> Tensor:
        out = functional_call(mlp, params, (tokens,))
        return ((out - target) ** 2).sum(dim=(1, 2)) + out.prod(dim=1).sum(dim=1)

    params = {n: q.detach() for n, q in mlp.named_parameters()}
    jacobian = jacrev(losses)(params)
    flat = torch.cat([jacobian[n].reshape(5, -1) for n in params], dim=1)
    tokens_miner = TracInPositiveMiner([mlp[0], mlp[2]])
    with tokens_miner.capture():
        out = mlp(tokens)
    loss = ((out - target) ** 2).sum(dim=(1, 2)) + out.prod(dim=1).sum(dim=1)
    assert rel_err(tokens_miner.scores(loss), flat @ flat.T) < 1e-10


def test_autocast_scores_in_float32() -> None:
    heads = _byol_heads().float()
    x, z = (t.float() for t in _batch(6))
    miner = TracInPositiveMiner("predictor").attach(heads[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with miner.capture():
            p = [heads(x[s]) for s in range(2)]
        loss = _byol_per_sample([q.float() for q in p], list(z))
        scores = miner.scores(loss)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()


def test_miner_bad_input() -> None:
    heads = _byol_heads()
    x, z = _batch(4)
    with pytest.raises(ValueError, match="layers must be one of"):
        TracInPositiveMiner("first")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"layers\[0\] must be an nn.Linear"):
        TracInPositiveMiner([heads[1]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        TracInPositiveMiner(top_k=0)
    with pytest.raises(ValueError, match="needs the projection_head"):
        TracInPositiveMiner("all").attach(heads[1])
    with pytest.raises(ValueError, match="has no nn.Linear"):
        TracInPositiveMiner().attach(nn.ReLU())
    with pytest.raises(ValueError, match="explicit list of layers"):
        TracInPositiveMiner([heads[1].layers[-1]]).attach(heads[1])
    with pytest.raises(RuntimeError, match="call\n?.*attach"):
        with TracInPositiveMiner().capture():
            pass

    miner = TracInPositiveMiner().attach(heads[1])

    def run(batch: int = 4, **kwargs):
        with miner.capture():
            p = [heads(x[s, :batch]) for s in range(2)]
        return miner(_byol_per_sample(p, [t[:batch] for t in z]), **kwargs)

    with pytest.raises(ValueError, match="at least 2 samples.*batch of 1"):
        heads.eval()
        run(batch=1)
    heads.train()
    with pytest.raises(ValueError, match="top_k = 4 needs a batch of more than 4"):
        miner.top_k = 4
        run()
    miner.top_k = 1
    with pytest.raises(ValueError, match="only 0 candidate"):
        run(group_ids=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"group_ids must be an int tensor \(4,\)"):
        run(group_ids=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"exclude must be a bool tensor \(4, 4\)"):
        run(exclude=torch.zeros(4, 3, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="recorded no forward"):
        miner(torch.zeros(4, requires_grad=True))
    with miner.capture():
        p = [heads(x[s]) for s in range(2)]
    with pytest.raises(ValueError, match="does not require grad"):
        miner(_byol_per_sample(p, list(z)).detach())
    with miner.capture():
        p = [heads(x[s]) for s in range(2)]
    with pytest.raises(ValueError, match=r"float tensor \(B,\)"):
        miner(_byol_per_sample(p, list(z)).sum())
    with miner.capture():
        p = [heads(x[s]) for s in range(2)]
    with pytest.raises(ValueError, match="multiple of the batch size B = 3"):
        miner(_byol_per_sample(p, list(z))[:3])
