"""Training steps of the methods do not synchronise the host with the device.

The steps run on the CPU inside a Lightning ``Trainer``; :func:`record_host_syncs`
recognises what would synchronise on a GPU (``.item()``, boolean-mask indexing, copies
of Python data such as ``self.log`` of a float, ...). ``benchmarks/throughput.py``
counts the real synchronisations on a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from lightly_derm import registry
from lightly_derm.utils.host_sync import record_host_syncs

#: Known and accepted, per method: (file, reason).
ALLOWED = {
    # The index range check of AdditionalPositiveLoss runs for CPU tensors only.
    "ap_byol": ["additional_positive_loss.py"],
}


class RecordSecondStep(pl.Callback):
    """Records host syncs of the second batch (after lazy initialisation)."""

    def __init__(self) -> None:
        self.records: Any = None
        self._context: Any = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if batch_idx == 1:
            self._context = record_host_syncs(factories=True)
            self.records = self._context.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if batch_idx == 1:
            self._context.__exit__(None, None, None)


@pytest.mark.parametrize(
    "name,augment,kwargs",
    [
        ("byol", "cpu", {}),
        ("byol", "gpu", {}),
        ("ap_byol", "cpu", {"warmup_steps": 0, "layers": "all"}),
        ("ap_byol", "gpu", {"warmup_steps": 0}),
        ("barlow_twins", "gpu", {}),
        ("gravis", "gpu", {}),
        ("fgssl", "gpu", {}),
        ("fgssl", "gpu", {"schedule": "joint"}),
    ],
)
@pytest.mark.slow
def test_training_step_has_no_host_syncs(name: str, augment: str, kwargs: dict) -> None:
    model = registry.create(
        "method", name, backbone="resnet18", augment=augment, **kwargs
    )
    transform = model.default_transform(64)
    rng = np.random.default_rng(0)
    samples = [
        (
            transform(
                Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8))
            ),
            i % 2,
            f"{i}.png",
        )
        for i in range(8)
    ]
    loader = torch.utils.data.DataLoader(
        samples, batch_size=4, collate_fn=model.default_collate()
    )
    recorder = RecordSecondStep()
    steps_per_batch = (
        4
        if kwargs.get("schedule", "progressive") == "progressive" and name == "fgssl"
        else 1
    )
    pl.Trainer(
        max_steps=2 * steps_per_batch,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    ).fit(model, loader)
    assert recorder.records is not None, "the second step did not run"
    unexpected = [
        r
        for r in recorder.records
        if not any(f in r.location for f in ALLOWED.get(name, []))
    ]
    assert not unexpected, "\n".join(str(r) for r in unexpected)
