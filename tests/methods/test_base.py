from __future__ import annotations

import pytest
import torch
from torch import nn

from lightly_derm.data import GroupedViewCollate
from lightly_derm.methods import SSLMethod


def test_named_and_module_backbones() -> None:
    method = SSLMethod(backbone="resnet18")
    assert method.feature_dim == 512
    assert method(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    custom = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1))
    method = SSLMethod(backbone=custom)
    assert method.feature_dim == 5 and method(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert isinstance(method.default_collate(), GroupedViewCollate)
    with pytest.raises(NotImplementedError):
        method.default_transform()


def test_bad_backbone_arguments() -> None:
    with pytest.raises(TypeError, match="backbone must be"):
        SSLMethod(backbone=3)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="backbone_weights is for a backbone given by name"
    ):
        SSLMethod(backbone=nn.Identity(), backbone_weights={})


def test_state_dict_of_another_architecture_or_with_missing_keys() -> None:
    """A clear ValueError naming the keys, instead of torch's RuntimeError."""
    from lightly_derm.methods import GraVIS

    model = GraVIS(backbone="resnet18", hidden_dim=16, output_dim=8)
    wider = GraVIS(backbone="resnet18", hidden_dim=32, output_dim=8).state_dict()
    with pytest.raises(ValueError, match=r"differ in shape.*projection_head.layers.0"):
        model.load_state_dict(wider)
    with pytest.raises(ValueError, match=r"differ in shape"):
        model.load_state_dict(wider, strict=False)  # shapes must fit in any case
    state = model.state_dict()
    del state["backbone.layer4.1.bn2.weight"]
    with pytest.raises(ValueError, match=r"missing keys \(1\) \[backbone.layer4.1"):
        model.load_state_dict(state)
    assert model.load_state_dict(state, strict=False).missing_keys == [
        "backbone.layer4.1.bn2.weight"
    ]
    with pytest.raises(TypeError, match="mapping"):
        model.load_state_dict([1, 2])  # type: ignore[arg-type]


def test_resuming_from_another_methods_checkpoint_names_it(tmp_path) -> None:
    """Trainer.fit(ckpt_path=...) of a checkpoint another method wrote: a ValueError
    that names the writer, before any weight is touched."""
    import pytorch_lightning as pl

    from lightly_derm.methods import GraVIS, SimCLR

    def tiny() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def trainer() -> pl.Trainer:
        return pl.Trainer(
            accelerator="cpu",
            max_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    views = [([torch.rand(3, 8, 8) for _ in range(2)], 0, f"{i}.png") for i in range(4)]
    simclr = SimCLR(backbone=tiny(), hidden_dim=8, output_dim=4)
    loader = torch.utils.data.DataLoader(
        views, batch_size=4, collate_fn=simclr.default_collate()
    )
    fit = trainer()
    fit.fit(simclr, loader)
    fit.save_checkpoint(tmp_path / "simclr.ckpt")
    gravis = GraVIS(backbone=tiny(), hidden_dim=16, output_dim=4)
    with pytest.raises(ValueError, match=r"fit GraVIS: it was written by SimCLR"):
        trainer().fit(gravis, loader, ckpt_path=tmp_path / "simclr.ckpt")


def test_augment_selects_transform_and_collate() -> None:
    from lightly_derm.data import CanvasBatch, CanvasCollate, GroupedBatch
    from lightly_derm.methods import BYOL
    from lightly_derm.transforms.gpu import CanvasTransform

    cpu = BYOL(backbone="resnet18")
    gpu = BYOL(backbone="resnet18", augment="gpu")
    assert gpu.hparams["augment"] == "gpu" and cpu.augment == "cpu"
    assert isinstance(cpu.default_collate(), GroupedViewCollate)
    assert isinstance(gpu.default_collate(), CanvasCollate)
    transform = gpu.default_transform(32)
    assert isinstance(transform, CanvasTransform) and transform.view_size == 32
    images = torch.randint(0, 256, (3, 3, 41, 41), dtype=torch.uint8)
    batch = CanvasBatch(
        images,
        torch.tensor([[36, 41]] * 3),
        torch.tensor([0, 1, -1]),
        ["a", "b", None],
        32,
    )
    grouped = gpu.on_after_batch_transfer(batch, 0)
    assert isinstance(grouped, GroupedBatch)
    assert (
        grouped.views.shape == (6, 3, 32, 32) and grouped.views.dtype == torch.float32
    )
    assert grouped.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert grouped.targets.tolist() == [0, 1, -1] and grouped.filenames == [
        "a",
        "b",
        None,
    ]
    assert grouped.num_views == 2 and grouped.batch_size == 3
    other = gpu.on_after_batch_transfer(batch, 0)
    assert not torch.equal(other.views, grouped.views)  # fresh random views per batch
    # channels_last when the backbone is
    gpu.to(memory_format=torch.channels_last)
    views = gpu.make_views(batch).views
    assert views.is_contiguous(memory_format=torch.channels_last)
    assert cpu.on_after_batch_transfer("unchanged", 0) == "unchanged"


def test_augment_errors() -> None:
    from lightly_derm.methods import BYOL

    with pytest.raises(ValueError, match="augment must be"):
        BYOL(backbone="resnet18", augment="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no GPU view pipeline"):
        SSLMethod(backbone="resnet18", augment="gpu")
    with pytest.raises(TypeError, match="CanvasBatch"):
        BYOL(backbone="resnet18", augment="gpu").make_views(torch.zeros(1))  # type: ignore[arg-type]


def test_gpu_views_reproducible_under_seed() -> None:
    import pytorch_lightning as pl

    from lightly_derm.data import CanvasBatch
    from lightly_derm.methods import SimCLR

    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    batch = CanvasBatch(
        images, torch.tensor([[40, 40]] * 2), torch.tensor([0, 1]), [None] * 2, 32
    )
    views = []
    for _ in range(2):
        pl.seed_everything(7, verbose=False)
        views.append(SimCLR(backbone="resnet18", augment="gpu").make_views(batch).views)
    assert torch.equal(views[0], views[1])
