"""Two gloo processes against one process on the concatenated batch, and DDP smoke runs.

All distributed work of this module runs in ONE spawned group of two CPU processes
(a module-scoped fixture; spawning and importing costs more than the work): the
Barlow Twins reductions (lightly's ``BarlowTwinsLoss`` as FG-SSL and BarlowTwins use
it, and the authors' Frobenius form), the TracIn miner's global mining with the
gradients of AP-BYOL's loss, a Lightning DDP run (``strategy="ddp"``, 2 CPU processes)
of every registered method, the non-finite-loss guard when only one process sees a NaN,
and ExactResume's per-process random states. Each case catches its own errors so that
a failure is reported by its own test. GraVISLoss's gather is tested, gradients
included, in tests/loss/test_gravis_loss.py.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
from lightly.loss import BarlowTwinsLoss

from lightly_derm.loss import BarlowTwinsFrobeniusLoss
from tests.reliability.runs import METHODS
from tests.utils.distributed import lightning_env, run_distributed

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

WORLD_SIZE = 2
BARLOW = {
    "lightly": lambda: BarlowTwinsLoss(lambda_param=0.1, gather_distributed=True),
    "frobenius": lambda: BarlowTwinsFrobeniusLoss(
        lambda_param=0.1, gather_distributed=True
    ),
}


def _case(results: dict[str, Any], name: str, fn, *args) -> None:
    try:
        results[name] = fn(*args)
    except Exception:  # noqa: BLE001 - reported by the test of this case
        results[name] = {"error": traceback.format_exc()}


# ---------------------------------------------------------------- worker (per rank)
def _barlow(rank: int, z_a: torch.Tensor, z_b: torch.Tensor) -> dict:
    part = slice(rank * 4, (rank + 1) * 4)
    out = {}
    for name, make in BARLOW.items():
        a = z_a[part].clone().requires_grad_(True)
        b = z_b[part].clone().requires_grad_(True)
        loss = make()(a, b)
        loss.backward()
        out[name] = {"loss": loss.detach(), "grad_a": a.grad, "grad_b": b.grad}
    return out


def _mine(model, views: list[torch.Tensor], names: list[str]) -> dict:
    """Scores, mined indices, AP-BYOL's loss and its parameter gradients."""
    from lightly_derm.data import to_grouped_batch

    batch = to_grouped_batch((views, torch.zeros(views[0].shape[0]), names))
    with model.miner.capture():
        p = [model.forward_online(x) for x in views]
    z = [model.forward_momentum(x) for x in views]
    scores = model.miner.scores(model.criterion(p, z, reduction="none")).detach()
    model.zero_grad()
    with model.miner.capture():
        p = [model.forward_online(x) for x in views]
    per_sample = model.criterion(p, z, reduction="none")
    loss_add, indices, _ = model.additional_positive_loss(
        p, z, per_sample, model.source_ids(batch)
    )
    total = per_sample.mean() + loss_add
    total.backward()
    grads = {
        n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None
    }
    return {
        "scores": scores,
        "indices": indices,
        "total": total.detach(),
        "grads": grads,
    }


def _miner(rank: int, state: dict, views: list[torch.Tensor], names: list[str]):
    from lightly_derm.methods import APBYOL
    from tests.methods.test_byol import tiny_byol

    local = views[0].shape[0] // WORLD_SIZE
    part = slice(rank * local, (rank + 1) * local)
    model = tiny_byol(APBYOL, warmup_steps=0, layers="all", normalize=True, top_k=2)
    model.load_state_dict(state)
    model.eval()  # BatchNorm per sample: ranks and one process see the same values
    return _mine(model, [v[part] for v in views], names[part])


def _lightning_env(rank: int) -> None:
    """The process group exists: Lightning joins it instead of launching processes."""
    lightning_env(rank, WORLD_SIZE)


def _smoke(name: str, folder: str) -> dict:
    """Two DDP steps of a registered method, as built by the registry."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.strategies import DDPStrategy

    from lightly_derm.callbacks import (
        AtomicCheckpointIO,
        ExactResume,
        NonFiniteLossGuard,
    )
    from tests.reliability.runs import LossCurve, ViewDataset, build, images

    model = build(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dataset = ViewDataset(images(8), model.default_transform(input_size=32))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, collate_fn=model.default_collate()
    )
    curve = LossCurve()
    checkpoint = ModelCheckpoint(folder, filename=name, save_top_k=-1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=WORLD_SIZE,
        strategy=DDPStrategy(find_unused_parameters=model.ddp_find_unused_parameters),
        max_epochs=1,
        limit_train_batches=2,
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        callbacks=[curve, NonFiniteLossGuard(), ExactResume(), checkpoint],
    )
    trainer.fit(model, loader)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {
        "losses": curve.losses,
        "changed": [k for k, v in state.items() if not torch.equal(v, before[k])],
        "first_param": next(iter(model.parameters())).detach().clone(),
        "checkpoint": str(Path(folder) / f"{name}.ckpt"),
    }


def _guard(rank: int, folder: str) -> dict:
    """Only rank 1 sees a NaN (its third batch): both ranks must stop."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightly_derm.callbacks import NonFiniteLossError, NonFiniteLossGuard
    from lightly_derm.methods import GraVIS
    from tests.callbacks.test_non_finite_loss import samples, tiny_backbone

    # No gathered negatives: rank 0's own loss stays finite at the bad step.
    model = GraVIS(
        backbone=tiny_backbone(), hidden_dim=8, output_dim=4, gather_distributed=False
    )
    data = samples(6, bad=2 if rank == 1 else None)  # each rank its own data
    loader = torch.utils.data.DataLoader(
        data, batch_size=1, collate_fn=model.default_collate()
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=WORLD_SIZE,
        strategy="ddp",
        use_distributed_sampler=False,
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            NonFiniteLossGuard(check_every_n_steps=10),
            ModelCheckpoint(folder, "{step}", every_n_train_steps=2, save_top_k=-1),
        ],
    )
    try:
        trainer.fit(model, loader)
    except NonFiniteLossError as error:
        return {"message": str(error), "step": error.global_step, "value": error.value}
    return {"message": None}


def _resumable(folder: str) -> dict:
    """ResumableDataLoader under DDP: Lightning keeps its sampler, which shards."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightly_derm.data import ResumableDataLoader
    from lightly_derm.methods import GraVIS
    from tests.callbacks.test_non_finite_loss import samples, tiny_backbone

    seen: list[str] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.extend(batch.filenames)

    model = GraVIS(backbone=tiny_backbone(), hidden_dim=8, output_dim=4)
    loader = ResumableDataLoader(
        samples(8, bad=None), batch_size=2, seed=3, collate_fn=model.default_collate()
    )
    pl.Trainer(
        accelerator="cpu",
        devices=WORLD_SIZE,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record(), ModelCheckpoint(folder, "resumable")],
    ).fit(model, loader)
    checkpoint = torch.load(Path(folder) / "resumable.ckpt", weights_only=True)
    loops = checkpoint["loops"]["fit_loop"]
    return {"seen": seen, "loader": loops["state_dict"]["combined_loader"]}


def _work(rank: int, world_size: int, data: dict) -> dict:
    results: dict[str, Any] = {}
    _case(results, "barlow", _barlow, rank, data["z_a"], data["z_b"])
    _case(results, "miner", _miner, rank, data["state"], data["views"], data["names"])
    _lightning_env(rank)
    for name in METHODS:
        _case(results, f"smoke/{name}", _smoke, name, data["folder"])
    _case(results, "guard", _guard, rank, data["folder"] + "/guard")
    _case(results, "resumable", _resumable, data["folder"] + "/resumable")
    return results


# ---------------------------------------------------------------- parent process
@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> dict:
    from lightly_derm.methods import APBYOL
    from tests.methods.test_ap_byol import _views
    from tests.methods.test_byol import tiny_byol

    torch.manual_seed(0)
    model = tiny_byol(APBYOL, warmup_steps=0, layers="all", normalize=True, top_k=2)
    names = [f"{i}.jpg" for i in range(8)]
    names[6] = names[1]  # one source image on both ranks: never mined for each other
    gen = torch.Generator().manual_seed(1)
    data = {
        "z_a": torch.randn(8, 3, generator=gen, dtype=torch.float64),
        "z_b": torch.randn(8, 3, generator=gen, dtype=torch.float64),
        "state": model.state_dict(),
        "views": _views(8, seed=3),
        "names": names,
        "folder": str(tmp_path_factory.mktemp("ddp")),
    }
    ranks = run_distributed(_work, WORLD_SIZE, args=(data,), timeout_s=180)
    return {"ranks": ranks, "data": data, "model": model}


def _result(distributed: dict, case: str) -> list[dict]:
    per_rank = [r[case] for r in distributed["ranks"]]
    for rank, result in enumerate(per_rank):
        if isinstance(result, dict) and "error" in result:
            pytest.fail(f"rank {rank}, {case}:\n{result['error']}", pytrace=False)
    return per_rank


def _barlow_reference(z_a, z_b, name: str) -> torch.Tensor:
    """Loops in float64: each process standardises its own half; C is their mean."""
    unbiased, lam = name == "frobenius", 0.1
    halves = []
    for r in range(WORLD_SIZE):
        a, b = z_a[r * 4 : (r + 1) * 4], z_b[r * 4 : (r + 1) * 4]
        n, d = a.shape
        standard = []
        for z in (a, b):
            mean = [sum(z[i, j] for i in range(n)) / n for j in range(d)]
            var = [
                sum((z[i, j] - mean[j]) ** 2 for i in range(n))
                / (n - 1 if unbiased else n)
                for j in range(d)
            ]
            standard.append(
                [
                    [(z[i, j] - mean[j]) / (var[j] + 1e-5) ** 0.5 for j in range(d)]
                    for i in range(n)
                ]
            )
        sa, sb = standard
        halves.append(
            [
                [sum(sa[i][j] * sb[i][k] for i in range(n)) / n for k in range(d)]
                for j in range(d)
            ]
        )
    d = len(halves[0])
    c = [
        [sum(h[j][k] for h in halves) / WORLD_SIZE for k in range(d)] for j in range(d)
    ]
    loss = 0.0
    for j in range(d):
        for k in range(d):
            target = 1.0 if j == k else 0.0
            if unbiased:  # the authors' form: λ² ‖C − I‖²
                loss = loss + lam**2 * (c[j][k] - target) ** 2
            else:  # Barlow Twins: Σ (1 − C_ii)² + λ Σ_{i≠j} C_ij²
                loss = loss + (c[j][k] - target) ** 2 * (1.0 if j == k else lam)
    return loss


@pytest.mark.parametrize("name", list(BARLOW))
def test_barlow_twins_gather_equals_one_process(distributed, name) -> None:
    per_rank = [r[name] for r in _result(distributed, "barlow")]
    z_a = distributed["data"]["z_a"].clone().requires_grad_(True)
    z_b = distributed["data"]["z_b"].clone().requires_grad_(True)
    expected = _barlow_reference(z_a, z_b, name)
    expected.backward()
    tol = {"rtol": 1e-4, "atol": 1e-6} if name == "frobenius" else {}  # float32 inside
    for result in per_rank:
        torch.testing.assert_close(result["loss"].double(), expected.detach(), **tol)
    # Each rank holds W × the whole-batch gradient of its half; DDP divides by W.
    for key, leaf in (("grad_a", z_a), ("grad_b", z_b)):
        grads = torch.cat([r[key] for r in per_rank]).double()
        torch.testing.assert_close(grads, WORLD_SIZE * leaf.grad, **tol)


def test_miner_global_mining_equals_one_process_gradients_included(distributed) -> None:
    per_rank = _result(distributed, "miner")
    data = distributed["data"]
    model = distributed["model"].eval()
    single = _mine(model, data["views"], data["names"])
    torch.testing.assert_close(
        torch.cat([r["scores"] for r in per_rank]), single["scores"]
    )
    indices = torch.cat([r["indices"] for r in per_rank])
    assert torch.equal(indices, single["indices"])
    assert not (indices[6] == 1).any() and not (indices[1] == 6).any()
    total = sum(r["total"] for r in per_rank) / WORLD_SIZE
    torch.testing.assert_close(total, single["total"])
    # DDP averages the ranks' gradients: that must be the one-process gradient.
    assert set(per_rank[0]["grads"]) == set(single["grads"]) != set()
    for name, grad in single["grads"].items():
        mean = sum(r["grads"][name] for r in per_rank) / WORLD_SIZE
        torch.testing.assert_close(mean, grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", METHODS)
def test_ddp_smoke_run(distributed, name) -> None:
    per_rank = _result(distributed, f"smoke/{name}")
    for result in per_rank:
        assert len(result["losses"]) == 2
        assert all(torch.isfinite(torch.tensor(result["losses"])))
        assert any(k.startswith("backbone.") for k in result["changed"])
    # DDP keeps the replicas identical.
    assert torch.equal(per_rank[0]["first_param"], per_rank[1]["first_param"])
    checkpoint = torch.load(per_rank[0]["checkpoint"], weights_only=True)
    states = checkpoint["callbacks"]["ExactResume"]["per_rank"]
    assert len(states) == WORLD_SIZE  # every process's random states


def test_guard_stops_every_rank_when_one_sees_nan(distributed) -> None:
    rank0, rank1 = _result(distributed, "guard")
    assert rank0["message"] is not None and rank1["message"] is not None
    assert rank0["step"] == rank1["step"] == 3  # rank 1's third batch
    # Rank 0's own loss stayed finite; it stops because another rank's loss did, or
    # because DDP's all-reduce carried that rank's NaN gradients to it (the guard also
    # checks gradients before the step), whichever it notices first.
    assert rank0["value"] is None
    assert (
        "on another process" in rank0["message"]
        or "gradients became non-finite" in rank0["message"]
    ), rank0["message"]
    assert rank1["value"] != rank1["value"]  # NaN
    assert "step=2.ckpt (global step 2)" in rank0["message"]


def test_resumable_loader_shards_under_ddp(distributed) -> None:
    rank0, rank1 = _result(distributed, "resumable")
    assert len(rank0["seen"]) == len(rank1["seen"]) == 4
    assert sorted(rank0["seen"] + rank1["seen"]) == [f"{i}.png" for i in range(8)]
    (state,) = rank0["loader"]
    assert state["num_replicas"] == WORLD_SIZE and state["batches"] == 2
