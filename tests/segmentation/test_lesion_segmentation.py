from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torchvision
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightly_derm.data import ISICSegmentationDataModule
from lightly_derm.segmentation import LesionSegmentation

#: A narrow decoder keeps the CPU tests fast; the ISIC test uses the default.
SMALL = {"decoder_channels": (32, 16, 16, 8, 8)}


def _trainer(**kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def _synthetic(n: int = 8, size: int = 32, seed: int = 0) -> TensorDataset:
    """Bright discs (the lesions) on darker noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = []
    for _ in range(n):
        cy, cx = torch.randint(8, size - 8, (2,), generator=g).tolist()
        r = torch.randint(4, 8, (1,), generator=g).item()
        labels.append((((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).float())
    label = torch.stack(labels).unsqueeze(1)
    image = torch.randn(n, 3, size, size, generator=g) * 0.3 + 1.5 * label - 0.5
    return TensorDataset(image, label)


def _loader(**kwargs) -> DataLoader:
    return DataLoader(_synthetic(**kwargs), batch_size=4)


@pytest.mark.slow
def test_training_on_isic_pairs_lowers_the_loss(isic_dir) -> None:
    pl.seed_everything(0)
    data = ISICSegmentationDataModule(
        isic_dir,
        limit=8,
        val_fraction=0,
        image_size=64,
        batch_size=8,
        augment=False,
        cache_rate=1.0,
    )
    batch = next(iter(data.train_dataloader()))
    model = LesionSegmentation("lightly-derm-resnet18", lr=3e-3, scheduler="none")

    def loss() -> float:
        with torch.no_grad():  # train mode: batch statistics, as in the steps
            return model._loss(model(batch["image"]), batch["label"]).item()

    model.train()
    before = loss()
    _trainer(max_steps=6, limit_val_batches=0).fit(model, datamodule=data)
    model.train()
    after = loss()
    assert after < 0.85 * before, (before, after)


def test_validation_scores_match_hand_computation() -> None:
    pl.seed_everything(1)
    model = LesionSegmentation("lightly-derm-resnet18", num_overlays=0, **SMALL)
    loader = _loader(n=6)
    (scores,) = _trainer().validate(model, loader, verbose=False)
    model.eval()
    dice, jac, thr = [], [], []
    with torch.no_grad():
        for image, label in loader:
            pred = (model(image) > 0).numpy()
            for p, g in zip(pred, label.numpy() > 0.5, strict=True):
                inter, union = float((p & g).sum()), float((p | g).sum())
                total = float(p.sum() + g.sum())
                dice.append(2 * inter / total if total else 1.0)
                j = inter / union if union else 1.0
                jac.append(j)
                thr.append(j if j >= 0.65 else 0.0)
    assert scores["val_dice"] == pytest.approx(np.mean(dice), abs=1e-5)
    assert scores["val_jaccard"] == pytest.approx(np.mean(jac), abs=1e-5)
    assert scores["val_jaccard_thresholded"] == pytest.approx(np.mean(thr), abs=1e-5)
    assert np.isfinite(scores["val_loss"])


def test_frozen_encoder_warm_up() -> None:
    def fit(epochs: int) -> tuple[LesionSegmentation, dict, dict]:
        pl.seed_everything(2)
        model = LesionSegmentation(
            "lightly-derm-resnet18", freeze_encoder_epochs=1, num_overlays=0, **SMALL
        )
        encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        decoder = {k: v.clone() for k, v in model.net.decoder.state_dict().items()}
        _trainer(max_epochs=epochs, limit_val_batches=0).fit(model, _loader(n=4))
        return model, encoder, decoder

    model, encoder, decoder = fit(1)
    # parameters AND batch-norm running statistics are untouched during the warm-up
    assert all(
        torch.equal(v, encoder[k]) for k, v in model.encoder.state_dict().items()
    )
    assert any(
        not torch.equal(v, decoder[k])
        for k, v in model.net.decoder.state_dict().items()
    )
    model, encoder, _ = fit(2)
    assert any(
        not torch.equal(v, encoder[k]) for k, v in model.encoder.state_dict().items()
    )
    assert all(p.requires_grad for p in model.encoder.parameters())


def test_overlays_go_to_tensorboard_or_png(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pl.seed_everything(3)
    model = LesionSegmentation("lightly-derm-resnet18", num_overlays=2, **SMALL)
    board = TensorBoardLogger(tmp_path, name="tb")
    _trainer(max_epochs=1, limit_train_batches=1, logger=board).fit(
        model, _loader(n=4), _loader(n=4)
    )
    events = EventAccumulator(board.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "val_overlays" in events.Tags()["images"]
    image = events.Images("val_overlays")[-1]
    assert (image.height, image.width) == (2 * 34 + 2, 3 * 34 + 2)  # 2 rows, 3 panels

    csv = CSVLogger(tmp_path, name="csv")
    _trainer(max_epochs=1, limit_train_batches=1, logger=csv).fit(
        model, _loader(n=4), _loader(n=4)
    )
    png = tmp_path / "csv" / "version_0" / "overlays" / "epoch=000.png"
    with Image.open(png) as written:
        assert written.size == (3 * 34 + 2, 2 * 34 + 2)
    metrics = (
        (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    )
    for name in (
        "train_loss_epoch",
        "val_loss",
        "val_dice",
        "val_jaccard",
        "val_jaccard_thresholded",
    ):
        assert name in metrics


def test_bf16_mixed_test_and_predict() -> None:
    pl.seed_everything(4)
    model = LesionSegmentation("lightly-derm-resnet18", num_overlays=0, **SMALL)
    trainer = _trainer(max_steps=1, precision="bf16-mixed", limit_val_batches=0)
    trainer.fit(model, _loader(n=4))
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    (scores,) = trainer.test(model, _loader(n=4), verbose=False)
    assert {
        "test_loss",
        "test_dice",
        "test_jaccard",
        "test_jaccard_thresholded",
    } <= set(scores)
    images = torch.randn(2, 3, 40, 56)  # not multiples of 32: padded and cropped back
    batches = trainer.predict(
        model, DataLoader([{"image": images, "id": ["a", "b"]}], batch_size=None)
    )
    out = batches[0]
    assert (
        out["probability"].shape == (2, 1, 40, 56)
        and out["probability"].dtype == torch.float32
    )
    assert out["mask"].dtype == torch.bool and out["id"] == ["a", "b"]
    assert ((out["probability"] >= 0) & (out["probability"] <= 1)).all()


def test_restore_without_the_ssl_file(tmp_path) -> None:
    torch.manual_seed(5)
    ssl = tmp_path / "ssl.pth"
    torch.save(torchvision.models.resnet18().state_dict(), ssl)
    model = LesionSegmentation(
        "lightly-derm-resnet18", pretrained=ssl, num_overlays=0, **SMALL
    )
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, _loader(n=4))
    trainer.save_checkpoint(tmp_path / "seg.ckpt")
    ssl.unlink()
    restored = LesionSegmentation.load_from_checkpoint(tmp_path / "seg.ckpt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key
    saved = torch.load(tmp_path / "seg.ckpt", weights_only=True)
    assert saved["pretrained_encoder"]["source"] == str(ssl)
    assert "loaded 120 of 120" in saved["pretrained_encoder"]["report"]


def test_bad_arguments_and_batches() -> None:
    with pytest.raises(
        ValueError,
        match="'resnet-18' is not a FlexibleUNet backbone; choose one of .*lightly-derm-resnet18",
    ):
        LesionSegmentation("resnet-18")
    with pytest.raises(ValueError, match="freeze_encoder_epochs"):
        LesionSegmentation("lightly-derm-resnet18", freeze_encoder_epochs=-1)
    with pytest.raises(ValueError, match="scheduler"):
        LesionSegmentation("lightly-derm-resnet18", scheduler="step")
    model = LesionSegmentation("lightly-derm-resnet18")
    with pytest.raises(TypeError, match="'image' key; it has \\['img'\\]"):
        model.training_step({"img": torch.zeros(1)}, 0)
    with pytest.raises(
        ValueError,
        match=r"labels must be \(B, 1, H, W\) = \(2, 1, 32, 32\) .* got shape \(2, 1, 16, 16\)",
    ):
        model.training_step((torch.zeros(2, 3, 32, 32), torch.zeros(2, 1, 16, 16)), 0)
    with pytest.raises(
        ValueError, match=r"images must be \(B, 3, H, W\), got shape \(2, 32, 32\)"
    ):
        model.training_step((torch.zeros(2, 32, 32), torch.zeros(2, 32, 32)), 0)
    with pytest.raises(ValueError, match="need a 'label'"):
        model.training_step({"image": torch.zeros(2, 3, 32, 32)}, 0)


@pytest.mark.gpu
def test_gpu_bf16_mixed_channels_last() -> None:
    pl.seed_everything(6)
    model = LesionSegmentation("lightly-derm-resnet18", num_overlays=0, **SMALL)
    model = model.to(memory_format=torch.channels_last)
    trainer = _trainer(
        accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=2
    )
    trainer.fit(model, _loader(n=8), _loader(n=4))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train_loss"])
    assert (
        0 <= metrics["val_dice"] <= 1 and 0 <= metrics["val_jaccard_thresholded"] <= 1
    )


def test_adamw_is_fused_in_two_groups() -> None:
    model = LesionSegmentation(
        "lightly-derm-resnet18", lr=2e-3, encoder_lr=1e-4, scheduler="none", **SMALL
    )
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["fused"] is True  # the same update, one kernel a step
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["encoder"]["lr"] == 1e-4 and groups["decoder"]["lr"] == 2e-3
    encoder = {id(p) for p in model.net.encoder.parameters()}
    assert {id(p) for p in groups["encoder"]["params"]} == encoder
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(
        list(model.parameters())
    )
