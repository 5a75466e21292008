"""The GPU view pipeline on a CUDA device: same results as on the CPU, no host syncs.

Skipped without CUDA (the ``gpu`` marker); run with ``pytest -m gpu tests/transforms/gpu``.
"""

from __future__ import annotations

import pytest
import torch

from lightly_derm import registry
from lightly_derm.transforms.gpu import (
    color_jitter,
    gaussian_blur,
    resized_crop,
    sample_color_jitter,
    sample_resized_crop,
)

pytestmark = pytest.mark.gpu


def _images(n: int = 16, size: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(
        0, 256, (n, 3, size, size + 32), dtype=torch.uint8, generator=g
    )


def test_ops_on_cuda_equal_cpu() -> None:
    images = _images()
    n = images.shape[0]
    g = torch.Generator().manual_seed(1)
    boxes = sample_resized_crop(
        torch.full((n,), 96), torch.full((n,), 128), generator=g
    )[:, 0]
    angles = torch.rand(n, generator=g) * 20 - 10
    flips = torch.rand(n, generator=g) < 0.5
    factors, order = sample_color_jitter(n, 0.4, 0.4, 0.4, 0.1, p=0.8, generator=g)
    sigmas = torch.rand(n, generator=g) * 1.9 + 0.1

    def run(device: str) -> torch.Tensor:
        x = resized_crop(
            images.to(device), boxes.to(device), 64, angles.to(device), flips.to(device)
        )
        x = color_jitter(x, factors.to(device), order.to(device))
        return gaussian_blur(x, sigmas.to(device), 13)

    cpu = run("cpu")
    cuda = run("cuda").cpu()
    torch.testing.assert_close(cuda, cpu, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["gravis", "byol", "simclr", "fgssl"])
def test_pipeline_has_no_host_syncs(name: str) -> None:
    method = registry.create("method", name, backbone="resnet18", augment="gpu")
    pipeline = method.gpu_view_transform(224)
    images = _images(32, 256).cuda()
    sizes = torch.tensor([[256, 288]] * 32).cuda()
    generator = torch.Generator("cuda").manual_seed(0)
    pipeline(images, sizes, generator=generator)  # warm-up: constants, kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        views = pipeline(
            images,
            sizes,
            generator=generator,
            dtype=torch.bfloat16,
            memory_format=torch.channels_last,
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert views.shape == (32 * pipeline.num_views, 3, 224, 224)
    assert views.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(views.float()).all()


def test_training_with_gpu_views() -> None:
    """Two bf16-mixed steps of BYOL with views made on the device."""
    import numpy as np
    import pytorch_lightning as pl
    from PIL import Image

    model = registry.create("method", "byol", backbone="resnet18", augment="gpu")
    model = model.to(memory_format=torch.channels_last)
    transform = model.default_transform(64)
    rng = np.random.default_rng(0)
    samples = [
        (
            transform(
                Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
            ),
            0,
            f"{i}",
        )
        for i in range(16)
    ]
    loader = torch.utils.data.DataLoader(
        samples, batch_size=8, collate_fn=model.default_collate(), pin_memory=True
    )
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    batch = next(iter(loader))
    batch = batch._replace(images=batch.images.cuda(), sizes=batch.sizes.cuda())
    views = model.make_views(batch).views  # the trainer's precision and layout
    assert views.dtype == torch.bfloat16 and views.is_cuda
    assert views.is_contiguous(memory_format=torch.channels_last)
