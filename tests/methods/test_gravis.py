from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from lightly.data.multi_view_collate import MultiViewCollate
from torch import nn

from lightly_derm.data import GroupedViewCollate
from lightly_derm.loss import GraVISLoss
from lightly_derm.methods import GraVIS
from lightly_derm.transforms import GraVISTransform

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log\\(\\)`:UserWarning"
)


def _samples(batch_size: int = 4, num_views: int = 3, size: int = 32):
    gen = torch.Generator().manual_seed(0)
    return [
        (
            [torch.randn(3, size, size, generator=gen) for _ in range(num_views)],
            b,
            f"{b}.png",
        )
        for b in range(batch_size)
    ]


def _trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**defaults, **kwargs})


def test_authors_architecture_and_defaults() -> None:
    model = GraVIS()  # ResNet-50
    layers = list(model.projection_head.layers)
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (layers[0].in_features, layers[0].out_features) == (2048, 2048)
    assert (layers[2].in_features, layers[2].out_features) == (2048, 128)
    assert layers[0].bias is not None and layers[2].bias is not None
    keys = model.backbone.state_dict().keys()
    assert "conv1.weight" in keys and "layer4.2.bn3.running_var" in keys
    assert not any(k.startswith("fc.") for k in keys)
    loss = model.criterion
    assert isinstance(loss, GraVISLoss)
    assert (loss.variant, loss.temperature, loss.normalize, loss.exclude_self) == (
        "smooth_ap",
        0.01,
        True,
        False,
    )
    assert model.hparams["lr"] == 0.02 and model.hparams["momentum"] == 0.9
    assert model.hparams["weight_decay"] == 0.0
    transform = model.default_transform(input_size=48)
    assert isinstance(transform, GraVISTransform) and transform.num_views == 4
    assert isinstance(model.default_collate(), GroupedViewCollate)


def test_training_step_is_the_loss_of_head_embeddings() -> None:
    model = GraVIS(
        backbone="resnet18", hidden_dim=64, output_dim=16, variant="attention"
    )
    samples = _samples()
    batch = GroupedViewCollate()(samples)
    with torch.no_grad():
        z = model.projection_head(model.backbone(batch.views))
        expected = GraVISLoss("attention")(z, torch.arange(4).repeat_interleave(3))
        got = model.training_step(batch, 0)
        # lightly's MultiViewCollate layout gives the same loss.
        got_mvc = model.training_step(MultiViewCollate()(samples), 0)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_mvc, expected)


def test_any_backbone_module() -> None:
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = GraVIS(backbone=backbone, hidden_dim=16, output_dim=4)
    assert model.feature_dim == 8
    assert model.forward_projection(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    assert "backbone" not in model.hparams


@pytest.mark.parametrize(
    "limits,interval,total",
    [
        ({"max_epochs": 7}, "epoch", 7),
        ({"max_epochs": -1, "max_steps": 50}, "step", 50),
        ({"max_epochs": None, "max_steps": 30}, "step", 30),
        ({"max_epochs": -1}, None, None),
    ],
)
def test_optimizer_and_schedule(limits, interval, total) -> None:
    model = GraVIS(backbone="resnet18", lr=0.2, momentum=0.5, weight_decay=1e-4)
    model.trainer = _trainer(**limits)
    if interval is None:
        with pytest.warns(UserWarning, match="learning rate stays constant"):
            config = model.configure_optimizers()
        assert isinstance(config, torch.optim.SGD)
        return
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.2, 0.5, 1e-4)
    assert config["lr_scheduler"]["interval"] == interval
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.2 * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)]
    assert lrs == pytest.approx(expected)


def test_trains_on_cpu_in_bf16_and_round_trips_a_checkpoint(tmp_path) -> None:
    model = GraVIS(backbone="resnet18", hidden_dim=32, output_dim=8, num_views=3)
    loader = torch.utils.data.DataLoader(
        _samples(size=32), batch_size=4, collate_fn=model.default_collate()
    )
    trainer = _trainer(max_steps=1, precision="bf16-mixed")
    trainer.fit(model, loader)
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    trainer.save_checkpoint(tmp_path / "gravis.ckpt")
    restored = GraVIS.load_from_checkpoint(tmp_path / "gravis.ckpt")
    assert restored.num_views == 3 and restored.hparams["backbone"] == "resnet18"
    assert "backbone_weights" not in restored.hparams  # no initial-weights file needed
    for key, value in model.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key


@pytest.mark.slow
def test_loss_falls_on_isic_images(isic_image_paths) -> None:
    """Six steps on 16 real ISIC images (4 views, 64 px, ResNet-18): the loss falls."""
    from PIL import Image

    pl.seed_everything(0, verbose=False)
    transform = GraVISTransform(num_views=4, input_size=64)
    images = []
    for path in isic_image_paths[:16]:
        with Image.open(path) as image:
            image.draft("RGB", (128, 128))  # JPEG decodes at reduced size: fast
            images.append(image.convert("RGB"))

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            return transform(images[i]), 0, isic_image_paths[i].name

    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    model = GraVIS(backbone="resnet18", hidden_dim=256, lr=0.2)
    loader = torch.utils.data.DataLoader(
        Images(), batch_size=16, shuffle=True, collate_fn=model.default_collate()
    )
    trainer = _trainer(max_epochs=6, callbacks=[Record()])  # one step per epoch
    trainer.fit(model, loader)
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    # Fresh augmentations every step, so compare pairs of steps, not single steps.
    # (Seeds 0 and 1 fell by about 0.1 from the first to the last pair.)
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.02, losses


def _tiny_backbone() -> nn.Module:
    """No batch norm, so one process on the whole batch equals DDP exactly."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def _ddp_step_work(rank: int, world_size: int, samples, state, kwargs) -> dict:
    """One Lightning DDP step (``strategy="ddp"``, gloo) in a process of the group."""
    from tests.utils.distributed import lightning_env

    lightning_env(rank, world_size)
    model = GraVIS(backbone=_tiny_backbone(), **kwargs)
    model.load_state_dict(state)
    # DistributedSampler gives rank r the samples r, r + 2, ...: 4 images per rank.
    loader = torch.utils.data.DataLoader(
        samples, batch_size=4, collate_fn=model.default_collate()
    )
    _trainer(max_steps=1, devices=world_size, strategy="ddp").fit(model, loader)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_step_equals_single_process_step_on_the_whole_batch() -> None:
    """Trainer(strategy="ddp", devices=2) on CPU (gloo): after one SGD step the
    weights equal one step of a single process on both ranks' images together."""
    from tests.utils.distributed import run_distributed

    samples = _samples(batch_size=8, num_views=3, size=16)
    kwargs = dict(hidden_dim=16, output_dim=8, lr=0.5, momentum=0.0)
    single = GraVIS(backbone=_tiny_backbone(), **kwargs)
    initial = {k: v.clone() for k, v in single.state_dict().items()}
    ranks = run_distributed(
        _ddp_step_work, 2, (samples, initial, kwargs), timeout_s=120
    )

    optimizer = torch.optim.SGD(single.parameters(), lr=0.5)
    batch = GroupedViewCollate()(samples)  # ids 0..7: ranks' images stay distinct
    single.criterion(single.forward_projection(batch.views), batch.group_ids).backward()
    optimizer.step()
    for state in ranks:
        for (name, got), expected in zip(
            state.items(), single.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(v, initial[k]) for k, v in ranks[0].items())


@pytest.mark.gpu
def test_gpu_ddp_bf16_mixed_trains() -> None:
    """Trainer(accelerator="gpu", devices=N, strategy="ddp(_spawn)", bf16-mixed)."""
    model = GraVIS(backbone="resnet18", hidden_dim=64, output_dim=16)
    loader = torch.utils.data.DataLoader(
        _samples(batch_size=8, num_views=4, size=64),
        batch_size=4,
        collate_fn=model.default_collate(),
    )
    devices = torch.cuda.device_count()
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=devices,
        strategy="ddp_spawn",
        precision="bf16-mixed",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(model, loader)
    assert any(
        not torch.equal(v.cpu(), before[k]) for k, v in model.state_dict().items()
    )


def _bn_backbone() -> nn.Module:
    """With batch norm: per-rank batches and shuffled batches give different statistics."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def _shuffled_ddp_work(rank: int, world_size: int, views, ddp_batchnorm: str) -> dict:
    """One rank of a DDP step: its views, the method's forward, gradients averaged."""
    import torch.distributed as dist

    model = GraVIS(
        backbone=_bn_backbone(),
        hidden_dim=16,
        output_dim=8,
        ddp_batchnorm=ddp_batchnorm,
    )
    n = views.shape[0] // world_size
    mine = views[rank * n : (rank + 1) * n]
    group_ids = torch.arange(n // 2).repeat_interleave(2)  # K = 2, image-major
    embeddings = model.embed_views(mine, torch.Generator().manual_seed(5))
    loss = model.criterion(embeddings, group_ids, group_size=2)
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        dist.all_reduce(p.grad)  # what DDP does: the mean over ranks
        grads[name] = p.grad / world_size
    return {"loss": loss.detach(), "grads": grads}


def _single_process_reference(views, world_size: int, shuffle: bool) -> dict:
    """The whole batch in one process, BatchNorm batches as the ranks would see them."""
    model = GraVIS(backbone=_bn_backbone(), hidden_dim=16, output_dim=8)
    total = views.shape[0]
    n = total // world_size
    order = (
        torch.randperm(total, generator=torch.Generator().manual_seed(5))
        if shuffle
        else torch.arange(total)
    )
    chunks = [
        model.forward_projection(views[order[r * n : (r + 1) * n]])
        for r in range(world_size)
    ]
    outputs = torch.zeros(total, 8).index_add(0, order, torch.cat(chunks))
    group_ids = torch.arange(total // 2).repeat_interleave(2)
    loss = GraVISLoss()(outputs, group_ids)
    loss.backward()
    return {
        "loss": loss.detach(),
        "grads": {name: p.grad for name, p in model.named_parameters()},
    }


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_views_are_shuffled_across_ranks_for_batchnorm() -> None:
    """2 gloo processes: with the default ddp_batchnorm="shuffle", each rank's BatchNorm
    batch is a random half of the global batch (one permutation drawn on rank 0), and
    loss and gradients equal one process running those two BatchNorm batches."""
    from tests.utils.distributed import run_distributed

    views = torch.randn(16, 3, 12, 12)  # 2 ranks x 4 images x 2 views
    shuffled = run_distributed(_shuffled_ddp_work, 2, (views, "shuffle"), timeout_s=120)
    local = run_distributed(_shuffled_ddp_work, 2, (views, "local"), timeout_s=120)
    reference = _single_process_reference(views, 2, shuffle=True)
    per_rank = _single_process_reference(views, 2, shuffle=False)
    assert GraVIS(backbone=_bn_backbone()).ddp_batchnorm == "shuffle"
    for got, want in ((shuffled, reference), (local, per_rank)):
        loss = (got[0]["loss"] + got[1]["loss"]) / 2
        torch.testing.assert_close(loss, want["loss"], rtol=1e-5, atol=1e-6)
        for name, grad in want["grads"].items():
            torch.testing.assert_close(
                got[0]["grads"][name], grad, rtol=1e-4, atol=1e-6
            )
            torch.testing.assert_close(
                got[1]["grads"][name], grad, rtol=1e-4, atol=1e-6
            )
    # the shuffle changes BatchNorm's batches, hence the gradient
    assert not torch.allclose(
        shuffled[0]["grads"]["backbone.0.weight"],
        local[0]["grads"]["backbone.0.weight"],
    )
    with pytest.raises(ValueError, match="ddp_batchnorm must be one of shuffle, sync"):
        GraVIS(backbone=_bn_backbone(), ddp_batchnorm="syncbn")


def _backbone_movement(model: pl.LightningModule, paths, steps: int = 3) -> float:
    """Relative change of the backbone's convolution weights after ``steps`` steps."""
    from lightly_derm.data import make_dataset

    before = {
        k: v.clone() for k, v in model.backbone.state_dict().items() if v.ndim == 4
    }
    dataset = make_dataset(
        str(paths[0].parent.parent),
        transform=model.default_transform(input_size=64),
        decode_size=128,
    )
    subset = torch.utils.data.Subset(dataset, range(16))
    loader = torch.utils.data.DataLoader(
        subset, batch_size=16, shuffle=True, collate_fn=model.default_collate()
    )
    _trainer(max_epochs=100, max_steps=steps).fit(model, loader)
    after = model.backbone.state_dict()
    num = sum(float(((after[k] - v) ** 2).sum()) for k, v in before.items())
    den = sum(float((v**2).sum()) for v in before.values())
    return (num / den) ** 0.5


@pytest.mark.slow
def test_default_lr_moves_the_backbone_as_far_as_lightly_byol(isic_image_paths) -> None:
    """The default lr trains the backbone; the authors' 1e-3 leaves it near its init.

    benchmarks/backbone_movement.py over 20 steps: BYOL 2.1 %, GraVIS at 0.02 about as
    far, at 1e-3 0.1 %. Here 3 steps on 16 ISIC images, ResNet-18, 64 px.
    """
    from lightly_derm.methods import BYOL

    moved = {}
    for name, make in {
        "byol": lambda: BYOL(backbone="resnet18"),
        "gravis": lambda: GraVIS(backbone="resnet18"),
        "gravis_authors_lr": lambda: GraVIS(backbone="resnet18", lr=1e-3),
    }.items():
        pl.seed_everything(0, verbose=False)
        moved[name] = _backbone_movement(make(), isic_image_paths)
    assert moved["gravis"] > 0.25 * moved["byol"], moved  # measured 0.38
    assert moved["gravis_authors_lr"] < 0.1 * moved["byol"], moved  # measured 0.02
