from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torchvision
from lightly.loss import BarlowTwinsLoss
from PIL import Image

from lightly_derm.data import GroupedViewCollate
from lightly_derm.loss import BarlowTwinsFrobeniusLoss
from lightly_derm.methods import FGSSL, FGSSLClassifier
from lightly_derm.methods.fgssl import LEARNING_RATES, LOSSES
from lightly_derm.models import extract_backbone_state_dict, load_checkpoint_file
from lightly_derm.transforms import FGSSLTransform

GRIDS = (8, 4, 2)
SMALL = {"backbone": "resnet18", "grids": GRIDS, "embedding_dim": 32, "block_dim": 32}


@pytest.fixture(scope="module")
def isic_images(isic_image_paths) -> list[Image.Image]:
    images = []
    for path in isic_image_paths[:16]:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG decodes at 1/8 scale: fast
            images.append(image.convert("RGB").resize((48, 40)))
    return images


class Recorder(pl.Callback):
    """Counts optimizer steps and records the logged losses of every batch."""

    def __init__(self) -> None:
        self.steps = 0
        self.losses: list[float] = []
        self.parts: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        def count(*_) -> None:
            self.steps += 1

        trainer.optimizers[0].register_step_post_hook(count)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = trainer.callback_metrics
        self.losses.append(float(metrics["train_loss"]))
        self.parts.append(
            sum(
                float(metrics[f"train_loss_{p}"])
                for p in ("block1", "block2", "block3", "concat")
            )
        )


def trainer(epochs: int, callbacks=(), **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("schedule", "steps_per_batch"), [("progressive", 4), ("joint", 1)]
)
@pytest.mark.slow
def test_trains_on_isic_with_falling_loss(
    isic_images, tmp_path, schedule, steps_per_batch
) -> None:
    pl.seed_everything(0, verbose=False)
    model = FGSSL(
        **SMALL,
        loss="barlow_twins",
        schedule=schedule,
        lr=0.05,
        backbone_lr=0.01,
        max_epochs=10,
    )
    transform = model.default_transform(input_size=32)
    samples = [(transform(image), 0, f"{i}.jpg") for i, image in enumerate(isic_images)]
    loader = torch.utils.data.DataLoader(
        samples, batch_size=8, collate_fn=model.default_collate()
    )
    recorder = Recorder()
    fit = trainer(4, [recorder])
    fit.fit(model, loader)
    batches = 4 * len(loader)
    assert recorder.steps == steps_per_batch * batches == fit.global_step
    assert all(math.isfinite(x) for x in recorder.losses)
    assert recorder.parts == pytest.approx(recorder.losses, rel=1e-5)
    first, last = recorder.losses[:2], recorder.losses[-2:]
    assert sum(last) < 0.8 * sum(first), recorder.losses
    # the cosine schedule is stepped per epoch, per parameter group
    for group, base in zip(fit.optimizers[0].param_groups, (0.05, 0.01), strict=True):
        assert group["lr"] == pytest.approx(base * (1 + math.cos(math.pi * 4 / 10)) / 2)
    if schedule == "progressive":
        # the checkpoint serves fine-tuning (whole blocks) and any backbone consumer
        path = tmp_path / "fgssl.ckpt"
        fit.save_checkpoint(path)
        assert load_checkpoint_file(path)["hyper_parameters"]["backbone"] == "resnet18"
        backbone = extract_backbone_state_dict(path)
        assert torch.equal(
            backbone["layer4.1.bn2.weight"], model.backbone.layer4[1].bn2.weight
        )
        classifier = FGSSLClassifier(**SMALL, num_classes=3, blocks_weights=path)
        own = model.blocks.state_dict()
        for key, value in classifier.blocks.state_dict().items():
            if not key.startswith("classifiers."):
                assert torch.equal(value, own[key]), key
        restored = FGSSL.load_from_checkpoint(path)
        assert restored.grids == GRIDS and restored.schedule == "progressive"
        assert (restored.lr, restored.backbone_lr) == (0.05, 0.01)


def test_cpu_jigsaws_under_bf16_mixed_precision(isic_images) -> None:
    pl.seed_everything(0, verbose=False)
    model = FGSSL(**SMALL)
    transform = FGSSLTransform(input_size=32, grids=GRIDS, cpu_jigsaw=True)
    samples = [(transform(image), 0) for image in isic_images[:4]]
    batch = GroupedViewCollate()(samples)
    a, b, jigsaws = model.split_batch(batch)
    assert torch.equal(a, batch.view(0)) and torch.equal(b, batch.view(1))
    assert all(torch.equal(j, batch.view(2 + k)) for k, j in enumerate(jigsaws))
    recorder = Recorder()
    loader = torch.utils.data.DataLoader(
        samples, batch_size=4, collate_fn=GroupedViewCollate()
    )
    fit = trainer(1, [recorder], precision="bf16-mixed")
    fit.fit(model, loader)
    assert recorder.steps == 4 and math.isfinite(recorder.losses[0])


def test_pair_loss_is_float32_under_autocast() -> None:
    model = FGSSL(**SMALL)
    assert isinstance(model.criterion, BarlowTwinsFrobeniusLoss)
    assert model.criterion.lambda_param == 5e-3
    z_a, z_b = torch.randn(6, 8), torch.randn(6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = FGSSL(**SMALL, loss="barlow_twins").pair_loss(
            z_a.bfloat16(), z_b.bfloat16()
        )
    assert loss.dtype == torch.float32
    expected = BarlowTwinsLoss(lambda_param=0.0051)(
        z_a.bfloat16().float(), z_b.bfloat16().float()
    )
    torch.testing.assert_close(loss, expected)


def test_authors_optimiser_defaults(tmp_path) -> None:
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    model = FGSSL(backbone="resnet18", backbone_weights=path, max_epochs=10)
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    head, backbone = optimizer.param_groups
    assert (head["lr"], backbone["lr"]) == (0.002, 0.0002)
    assert head["momentum"] == backbone["momentum"] == 0.9
    assert head["weight_decay"] == backbone["weight_decay"] == 5e-4
    assert {id(p) for p in backbone["params"]} == {
        id(p) for p in model.backbone.parameters()
    }
    every = {id(p) for p in model.parameters()}
    assert {id(p) for p in head["params"]} | {
        id(p) for p in backbone["params"]
    } == every
    assert scheduler.T_max == 10
    assert (
        isinstance(model.criterion, BarlowTwinsFrobeniusLoss)
        and model.criterion.lambda_param == 5e-3
    )


def test_presets_pair_each_loss_with_its_rates(tmp_path) -> None:
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    cases = [
        # (kwargs, loss class, lr, backbone_lr)
        ({}, BarlowTwinsFrobeniusLoss, 0.002, 0.002),  # from scratch: one rate
        ({"backbone_weights": path}, BarlowTwinsFrobeniusLoss, 0.002, 0.0002),
        ({"loss": "barlow_twins"}, BarlowTwinsLoss, 1e-4, 1e-4),
        (
            {"loss": "barlow_twins", "backbone_weights": path},
            BarlowTwinsLoss,
            1e-4,
            1e-5,
        ),
        ({"loss": "barlow_twins", "lr": 0.01}, BarlowTwinsLoss, 0.01, 0.01),
        ({"lr": 0.01, "backbone_lr": 0.003}, BarlowTwinsFrobeniusLoss, 0.01, 0.003),
    ]
    for kwargs, loss_type, lr, backbone_lr in cases:
        model = FGSSL(backbone="resnet18", **kwargs)
        assert isinstance(model.criterion, loss_type), kwargs
        assert (model.lr, model.backbone_lr) == pytest.approx((lr, backbone_lr)), kwargs
        # saved as resolved: a checkpoint reloads with the rates it trained with
        assert (model.hparams["lr"], model.hparams["backbone_lr"]) == pytest.approx(
            (lr, backbone_lr)
        )
        groups = model.configure_optimizers().param_groups
        assert [g["lr"] for g in groups] == pytest.approx([lr, backbone_lr]), kwargs
    assert LEARNING_RATES == {"authors": 0.002, "barlow_twins": 1e-4}
    assert FGSSL(backbone="resnet18").permutations == "cycle"
    # a module backbone may be pretrained or not: the default says so
    with pytest.warns(UserWarning, match=r"pass backbone_lr=0\.0002"):
        model = FGSSL(backbone=torchvision.models.resnet18(), grids=GRIDS)
    assert model.backbone_lr == 0.002
    classifier = FGSSLClassifier(backbone="resnet18", blocks_weights=None)
    assert (classifier.lr, classifier.backbone_lr) == (0.002, 0.002)


class WeightChange(pl.Callback):
    """Largest per-step ‖ΔW‖ / ‖W‖ of each parameter group."""

    def __init__(self) -> None:
        self.largest = {"head": 0.0, "backbone": 0.0}

    def on_train_start(self, trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0]
        before: list[list[torch.Tensor]] = []

        def pre(opt, *_) -> None:
            before[:] = [
                [p.detach().clone() for p in g["params"]] for g in opt.param_groups
            ]

        def post(opt, *_) -> None:
            for group, old in zip(opt.param_groups, before, strict=True):
                new = torch.cat([p.detach().flatten() for p in group["params"]])
                flat = torch.cat([q.flatten() for q in old])
                change = float((new - flat).norm() / flat.norm())
                name = group["name"]
                self.largest[name] = max(self.largest[name], change)

        optimizer.register_step_pre_hook(pre)
        optimizer.register_step_post_hook(post)


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
def test_default_presets_train_stably_on_isic(isic_image_paths, loss) -> None:
    """Each preset's defaults, from scratch: finite, falling loss and small steps.

    The measurement behind the defaults is ``benchmarks/fgssl_learning_rates.py``;
    there Barlow Twins at the authors' rate 0.002 rose in the second batch and moved
    the blocks by 14 % of their norm in one step.
    """
    pl.seed_everything(0, verbose=False)
    model = FGSSL(backbone="resnet18", loss=loss)
    transform = model.default_transform(input_size=48)
    samples = []
    for i, path in enumerate(isic_image_paths[:64]):
        with Image.open(path) as image:
            image.draft("RGB", (96, 96))
            samples.append((transform(image.convert("RGB")), 0, f"{i}.jpg"))
    loader = torch.utils.data.DataLoader(
        samples, batch_size=16, shuffle=True, collate_fn=model.default_collate()
    )
    recorder, change = Recorder(), WeightChange()
    trainer(-1, [recorder, change], max_steps=4 * 8).fit(model, loader)
    losses = recorder.losses
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses), losses
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert change.largest["head"] < 0.05 and change.largest["backbone"] < 0.05, (
        change.largest
    )


def test_backbone_from_a_local_file(tmp_path) -> None:
    source = FGSSL(backbone="resnet18").backbone.state_dict()
    path = tmp_path / "resnet18.pt"
    torch.save(source, path)
    model = FGSSL(backbone="resnet18", backbone_weights=path)
    assert all(
        torch.equal(v, model.backbone.state_dict()[k]) for k, v in source.items()
    )
    assert model.blocks.backbone is model.backbone
    # a torchvision ResNet module with its classifier: the classifier is dropped
    model = FGSSL(backbone=torchvision.models.resnet18(), grids=GRIDS)
    assert model.feature_dim == 512 and model(torch.rand(2, 3, 32, 32)).shape == (
        2,
        512,
    )


def test_bad_arguments_and_batches() -> None:
    with pytest.raises(ValueError, match="schedule must be one of progressive, joint"):
        FGSSL(**SMALL, schedule="both")
    with pytest.raises(ValueError, match="loss must be one of barlow_twins, authors"):
        FGSSL(**SMALL, loss="vicreg")
    with pytest.raises(ValueError, match="3 grids"):
        FGSSL(backbone="resnet18", grids=(8, 4))
    model = FGSSL(**SMALL)
    with pytest.raises(
        ValueError, match=r"input_size 30 is not divisible by grid\(s\) \[8, 4\]"
    ):
        model.default_transform(input_size=30)
    views = [[torch.rand(3, 32, 32) for _ in range(3)] for _ in range(2)]
    with pytest.raises(ValueError, match=r"2 views per image \(\[a, b\]\) or 5"):
        model.split_batch(GroupedViewCollate()([(v, 0) for v in views]))
    odd = [[torch.rand(3, 36, 36) for _ in range(2)] for _ in range(2)]
    with pytest.raises(ValueError, match="grid 8 does not divide the image height 36"):
        model.split_batch(GroupedViewCollate()([(v, 0) for v in odd]))


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_progressive_steps_under_mixed_precision_on_gpu(isic_images, precision) -> None:
    pl.seed_everything(0, verbose=False)
    model = FGSSL(**SMALL)
    transform = model.default_transform(input_size=32)
    samples = [(transform(image), 0) for image in isic_images[:8]]
    loader = torch.utils.data.DataLoader(
        samples, batch_size=8, collate_fn=model.default_collate()
    )
    fit = pl.Trainer(
        max_epochs=1,
        accelerator="gpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    fit.fit(model, loader)
    # the scaler may skip a step on overflow, but every step is taken through Lightning
    assert fit.global_step == 4
    assert math.isfinite(float(fit.callback_metrics["train_loss"]))
