from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch

from lightly_derm.data import (
    CanvasBatch,
    GroupedBatch,
    SSLDataModule,
    SyntheticLesions,
)
from lightly_derm.data.resumable_loader import sample_seed
from lightly_derm.data.ssl_datamodule import TransformedDataset, first_images
from lightly_derm.errors import DataError
from lightly_derm.methods import SimCLR


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)


def _expected_first_batch(method, data, size: int, batch: int, seed: int):
    """The first batch made by hand: the epoch's order, per-sample seeds, the method's views."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    transform = method.default_transform(input_size=size)
    samples = []
    state = torch.get_rng_state()
    for index in order[:batch].tolist():
        _seed_everything(sample_seed(seed, 0, index))
        image, target, filename = data[index]
        samples.append((transform(image), target, filename))
    torch.set_rng_state(state)
    return method.default_collate()(samples)


@pytest.mark.parametrize(("images", "batch", "seed"), [(8, 4, 0), (10, 3, 7)])
def test_a_batch_is_the_methods_transform_and_collate(images, batch, seed) -> None:
    method = SimCLR(backbone="resnet18")
    data = SyntheticLesions(images, 40, seed=seed)
    module = SSLDataModule(data, method, input_size=32, batch_size=batch, seed=seed)
    module.setup("fit")
    got = next(iter(module.train_dataloader()))
    expected = _expected_first_batch(method, data, 32, batch, seed)
    assert isinstance(got, GroupedBatch)
    torch.testing.assert_close(got.views, expected.views, rtol=0, atol=0)
    assert torch.equal(got.group_ids, expected.group_ids)
    assert torch.equal(got.targets, expected.targets)
    assert list(got.filenames) == list(expected.filenames)
    assert len(module.train_dataloader()) == images // batch  # last batch dropped
    assert module.train_dataloader() is module.train_dataloader()


def test_the_method_is_asked_once() -> None:
    method = SimCLR(backbone="resnet18")
    calls = {"default_transform": 0, "default_collate": 0}
    for name in calls:
        original = getattr(method, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        setattr(method, name, counted)
    module = SSLDataModule(SyntheticLesions(6, 40), method, input_size=32, batch_size=2)
    for _ in range(3):
        module.setup("fit")
        module.train_dataloader()
    assert calls == {"default_transform": 1, "default_collate": 1}


def test_gpu_views_are_made_after_the_transfer_on_cpu_tensors() -> None:
    data = SyntheticLesions(6, 40, seed=2)
    method = SimCLR(backbone="resnet18", augment="gpu")
    module = SSLDataModule(data, method, input_size=32, batch_size=3, seed=1)
    canvases = next(iter(module.train_dataloader()))
    assert isinstance(canvases, CanvasBatch)
    grouped = module.on_after_batch_transfer(canvases, 0)
    assert isinstance(grouped, GroupedBatch)
    assert grouped.views.shape == (6, 3, 32, 32) and grouped.views.is_floating_point()
    assert grouped.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert list(grouped.filenames) == list(canvases.filenames)
    # the method's own views, from a fresh generator seeded alike
    reference = SimCLR(backbone="resnet18", augment="gpu").make_views(canvases)
    torch.testing.assert_close(grouped.views, reference.views, rtol=0, atol=0)
    assert module.on_after_batch_transfer(grouped, 0) is grouped  # already views


def test_cached_canvases_equal_decoded_ones() -> None:
    data = SyntheticLesions(6, 40, seed=3)
    method = SimCLR(backbone="resnet18", augment="gpu")
    plain = SSLDataModule(data, method, input_size=32, batch_size=3, seed=4)
    cached = SSLDataModule(
        data, method, input_size=32, batch_size=3, seed=4, cache_images=True
    )
    for a, b in zip(plain.train_dataloader(), cached.train_dataloader(), strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.sizes, b.sizes)
        assert list(a.filenames) == list(b.filenames)


def test_resume_position_survives_a_state_dict_round_trip() -> None:
    data = SyntheticLesions(12, 40, seed=5)

    def module() -> SSLDataModule:
        return SSLDataModule(
            data, SimCLR(backbone="resnet18"), input_size=32, batch_size=4, seed=9
        )

    first = module().train_dataloader()
    for _ in first:  # epoch 0, then one batch of epoch 1
        pass
    iterator = iter(first)
    next(iterator)
    state = first.state_dict()
    assert (state["epoch"], state["batches"]) == (1, 1)
    rest = list(iterator)
    resumed = module().train_dataloader()
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(again) == len(rest) == 2
    for a, b in zip(again, rest, strict=True):
        assert list(a.filenames) == list(b.filenames)
        torch.testing.assert_close(a.views, b.views, rtol=0, atol=0)


def test_limit_keeps_the_first_images_in_order() -> None:
    data = SyntheticLesions(10, 40)
    module = SSLDataModule(
        data, SimCLR(backbone="resnet18"), input_size=32, batch_size=8, limit=5
    )
    names = [module.source[i][2] for i in range(len(module.source))]
    assert names == [data[i][2] for i in range(5)]
    assert module.batch_size == 5  # lowered to the images there are
    assert first_images(data, 20) is data and first_images(data, None) is data


def test_bad_arguments_are_named() -> None:
    method = SimCLR(backbone="resnet18")
    with pytest.raises(DataError, match="at least 2 images; the data has 1"):
        SSLDataModule(SyntheticLesions(1, 40), method, input_size=32).setup("fit")
    with pytest.raises(ValueError, match="cache_images .* augment='gpu'"):
        SSLDataModule(SyntheticLesions(4, 40), method, cache_images=True)
    with pytest.raises(TypeError, match="method must be an SSLMethod"):
        SSLDataModule(SyntheticLesions(4, 40), object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be a map-style dataset"):
        SSLDataModule(iter([]), method)
    with pytest.raises(ValueError, match="batch_size"):
        SSLDataModule(SyntheticLesions(4, 40), method, batch_size=0)
    with pytest.raises(ValueError, match="limit"):
        SSLDataModule(SyntheticLesions(4, 40), method, limit=0)


def test_transformed_dataset_keeps_the_source() -> None:
    data = SyntheticLesions(3, 40, num_classes=2)
    views = TransformedDataset(data, lambda image: image.size)
    assert views[1] == ((40, 40), data[1][1], data[1][2])
    assert data.transform is None and views.classes == data.classes


def test_a_trainer_gets_the_views_from_the_datamodule(tmp_path) -> None:
    import pytorch_lightning as pl

    method = SimCLR(backbone="resnet18", augment="gpu")
    module = SSLDataModule(SyntheticLesions(4, 40), method, input_size=32, batch_size=2)
    made: list[type] = []
    hook = module.on_after_batch_transfer

    def recorded(batch, dataloader_idx):
        out = hook(batch, dataloader_idx)
        made.append(type(out))
        return out

    module.on_after_batch_transfer = recorded  # type: ignore[method-assign]
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        # Lightning notes (once per process) that the method defines the hook too
        warnings.filterwarnings("ignore", message=".*on_after_batch_transfer` in both")
        trainer.fit(method, datamodule=module)
    assert made == [GroupedBatch, GroupedBatch] and trainer.global_step == 2


def _ddp_fit(rank: int, world_size: int, folder: str) -> dict:
    """Two DDP processes train from one SSLDataModule with GPU views (on CPU tensors)."""
    import pytorch_lightning as pl

    from lightly_derm.methods import GraVIS
    from tests.callbacks.test_non_finite_loss import tiny_backbone
    from tests.utils.distributed import lightning_env

    lightning_env(rank, world_size)  # the process group exists: Lightning joins it
    seen: list[str] = []
    kinds: list[str] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.extend(batch.filenames)
            kinds.append(type(batch).__name__)

    method = GraVIS(backbone=tiny_backbone(), hidden_dim=8, output_dim=4, augment="gpu")
    data = SSLDataModule(
        SyntheticLesions(8, 40), method, input_size=16, batch_size=2, seed=3
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*on_after_batch_transfer` in both")
        pl.Trainer(
            accelerator="cpu",
            devices=world_size,
            strategy="ddp",
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=folder,
            callbacks=[Record()],
        ).fit(method, datamodule=data)
    return {"seen": seen, "kinds": kinds}


@pytest.mark.distributed
def test_ddp_processes_share_the_data(tmp_path) -> None:
    from tests.utils.distributed import run_distributed

    rank0, rank1 = run_distributed(_ddp_fit, 2, args=(str(tmp_path),), timeout_s=120)
    assert len(rank0["seen"]) == len(rank1["seen"]) == 4
    assert sorted(rank0["seen"] + rank1["seen"]) == sorted(
        SyntheticLesions(8, 40)[i][2] for i in range(8)
    )
    assert rank0["kinds"] == rank1["kinds"] == ["GroupedBatch"] * 2
