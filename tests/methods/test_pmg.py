"""PMGMethod's progressive steps against a hand-written copy of PMG's training loop."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch

from lightly_derm.data import GroupedViewCollate
from lightly_derm.methods import FGSSL

GRIDS = (4, 2, 1)
SMALL = {"backbone": "resnet18", "grids": GRIDS, "embedding_dim": 8, "block_dim": 8}


def batches(count: int, size: int = 4) -> list:
    """Batches of [a, b, J_4(a), J_2(a), J_1(a)] views (the jigsaws fixed in the batch)."""
    generator = torch.Generator().manual_seed(0)
    collate = GroupedViewCollate()
    return [
        collate(
            [
                ([torch.rand(3, 16, 16, generator=generator) for _ in range(5)], 0)
                for _ in range(size)
            ]
        )
        for _ in range(count)
    ]


def pmg_loop(model: FGSSL, data: list, lr: float, set_to_none: bool = False) -> None:
    """PMG's ``train.py`` loop (Du et al., 2020) with FG-SSL's losses, written out.

    Per batch, 4 times: ``optimizer.zero_grad()`` (PyTorch < 2.0: gradients set to
    zero, not None), the full network on the step's input, one loss, backward, step.
    ``set_to_none=True`` is the variant with gradients set to None instead.
    """
    blocks = model.blocks
    backbone = set(map(id, blocks.backbone.parameters()))
    optimizer = torch.optim.SGD(
        [
            {"params": [p for p in blocks.parameters() if id(p) not in backbone]},
            {"params": list(blocks.backbone.parameters()), "lr": lr},
        ],
        lr=lr,
        momentum=0.9,
        weight_decay=5e-4,
    )
    loss_fn = model.criterion
    if not set_to_none:
        # PMG's state from its second batch on: every parameter holds a gradient
        for p in blocks.parameters():
            p.grad = torch.zeros_like(p)
    for batch in data:
        a, b, j1, j2, j3 = (batch.view(i) for i in range(5))
        for k, jigsaw in enumerate((j1, j2, j3)):
            optimizer.zero_grad(set_to_none=set_to_none)
            loss = loss_fn(blocks(jigsaw).embeddings[k], blocks(b).embeddings[k])
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=set_to_none)
        loss = 2 * loss_fn(blocks(a).embeddings[3], blocks(b).embeddings[3])
        loss.backward()
        optimizer.step()


def fit(model: FGSSL, data: list) -> None:
    trainer = pl.Trainer(
        max_epochs=-1,
        max_steps=4 * len(data),
        accelerator="cpu",
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=None))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("schedule_loss", "lr"), [("authors", 0.05), ("barlow_twins", 1e-3)]
)
def test_progressive_steps_are_pmg_loop(schedule_loss, lr) -> None:
    pl.seed_everything(0, verbose=False)
    model = FGSSL(**SMALL, loss=schedule_loss, lr=lr)
    assert model.backbone_lr == lr  # from scratch: one rate
    reference = copy.deepcopy(model).double()
    reference_none = copy.deepcopy(model).double()
    other = copy.deepcopy(model)
    other.set_grads_to_none = True
    data = batches(2)
    fit(model, data)
    double = [b._replace(views=b.views.double()) for b in data]
    pmg_loop(reference, double, lr)
    ours = dict(model.named_parameters())
    for name, value in reference.named_parameters():
        torch.testing.assert_close(ours[name], value, rtol=1e-9, atol=1e-12, msg=name)
    # set_to_none: parameters a step's loss does not reach skip that step
    fit(other, data)
    theirs = dict(other.named_parameters())
    differs = [
        n for n, v in reference.named_parameters() if not torch.allclose(theirs[n], v)
    ]
    assert any(n.startswith("blocks.embedding_blocks.2") for n in differs), differs
    # ... and are what the loop gives with zero_grad(set_to_none=True)
    pmg_loop(reference_none, double, lr, set_to_none=True)
    for name, value in reference_none.named_parameters():
        torch.testing.assert_close(theirs[name], value, rtol=1e-9, atol=1e-12, msg=name)
