"""AP-BYOL: BYOL with an additional positive mined by TracIn.

Builds on :class:`~lightly_derm.methods.BYOL` (lightly's BYOL heads, EMA and schedule),
:class:`~lightly_derm.miners.TracInPositiveMiner`,
:class:`~lightly_derm.loss.AdditionalPositiveLoss` and
:func:`lightly.utils.dist.gather`; the two methods differ only by the miner and L_add.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from lightly.utils import dist as lightly_dist
from torch import Tensor, nn

from lightly_derm.data.grouped_view_collate import GroupedBatch
from lightly_derm.methods._optim import OptimizerName
from lightly_derm.methods.base import Augment
from lightly_derm.methods.byol import BYOL
from lightly_derm.miners.tracin import TracInPositiveMiner

#: Bins of the "times chosen" histogram: 0, 1, …, 15 and ≥ 16.
HISTOGRAM_BINS = 17


def _stable_id(name: str) -> int:
    """A 63-bit id of a file name, equal in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # byteorder is required on Python 3.10


class APBYOL(BYOL):
    """AP-BYOL: BYOL plus the BYOL loss towards a TracIn-mined additional positive.

    Zeng, Wu, Hu, Xu, Hu, Shi, "Additional Positive Enables Better Representation
    Learning for Medical Images", MICCAI 2023, arXiv:2306.00112. No code was released;
    this follows the method page :doc:`/ap_byol` (lightly-derm's own choices are
    arguments here).

    Every step after the warm-up:

    1. The online forward of every view runs inside ``miner.capture()``, which records
       the chosen Linear layers' inputs and outputs (no second forward).
    2. BYOL's per-sample loss ℓ_i (lightly's ``NegativeCosineSimilarity`` form, see
       :class:`~lightly_derm.methods.BYOL`) goes to the
       :class:`~lightly_derm.miners.TracInPositiveMiner`, which returns
       j*(i) = argmax_{j≠i} ⟨∇_Θ ℓ_i, ∇_Θ ℓ_j⟩ (top-k) from Gram matrices under
       ``no_grad``. Θ defaults to the last Linear of the predictor, where the scores are
       exact in train mode (see the miner for ``"predictor"``/``"all"``).
    3. L_add = mean_i ℓ(p_i, sg(z_{j*(i)})) with the same cross-view pairing as BYOL
       (:class:`~lightly_derm.loss.AdditionalPositiveLoss`), and
       L = L_BYOL + λ · L_add, λ = ``lambda_add`` after the warm-up, 0 before (the
       miner does not run then).

    Views of one source image that a sampler repeats in a batch are never mined for
    each other (``exclude_duplicates``, by file name).

    Multi-GPU (``gather_distributed=True``, a no-op on one process): every rank mines
    its local samples over the global batch. It computes the output gradients of its
    own samples, all-gathers layer inputs, output gradients, source ids (inside the
    miner) and target projections and labels (here) with :func:`lightly.utils.dist.gather`
    under ``no_grad``, scores its B samples against all W·B, and computes L_add for its
    own anchors against the gathered (stop-gradient) target projections; DDP's gradient
    averaging then gives the global mean. The result equals single-process mining on
    the concatenated batch wherever the per-sample quantities are equal (e.g. with
    ``SyncBatchNorm``; per-rank BatchNorm statistics differ otherwise, as in any DDP
    BYOL). Every rank needs the same batch size.

    Logged: ``train_loss``, ``train_loss_byol``, ``train_loss_add`` (L_add, not
    weighted), ``train_lambda_add``; per step ``train_mined_max_count`` (the most any
    sample is chosen: hubs) and ``train_mined_unique_fraction`` (share of the batch
    chosen at least once); per epoch ``train_mined_same_label_rate`` (mined pairs whose
    labels agree, over pairs where both labels are known, i.e. ≥ 0) — the method's
    premise; note that lightly's ``LightlyDataset`` labels every image of a flat folder
    0 — and, with a TensorBoard logger, the histogram ``train_mined_times_chosen`` of
    how many times each sample of a batch was chosen (also kept in
    :attr:`mined_count_histogram`; under DDP, choices by each rank's anchors, summed).

    Args:
        backbone: A torchvision ResNet name or a module mapping images to features.
        backbone_weights: Local weights for a named ResNet.
        projection_hidden_dim: Hidden width of the projector.
        projection_dim: Output width of projector and predictor.
        prediction_hidden_dim: Hidden width of the predictor.
        lr: SGD learning rate (cosine decay).
        backbone_lr: Learning rate of the backbone (its own SGD group); ``None``:
            ``lr``. Smaller for continued pretraining from given weights, so that the
            backbone keeps more of them while the new heads learn at ``lr``.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        optimizer: ``"sgd"``, ``"lars"`` or ``"adamw"`` (see
            :class:`~lightly_derm.methods.BYOL`).
        ema_start: Target-network momentum at the first step.
        ema_end: Target-network momentum at the last step.
        lambda_add: λ, the weight of L_add (**ours**: 1).
        warmup_fraction: Share of the training steps without L_add (**ours**: 0.1).
        warmup_steps: Steps without L_add; overrides ``warmup_fraction``.
        layers: Θ of the miner: ``"last"``, ``"predictor"`` or ``"all"``.
        normalize: Cosine-normalised TracIn scores (**ours**, off by default).
        top_k: Positives mined per sample (L_add averages over them).
        exclude_duplicates: Never mine a sample with the same file name.
        gather_distributed: Mine over the global batch under DDP.
        augment: Where the views are made, ``"cpu"`` (DataLoader workers) or ``"gpu"``
            (on the device, see :class:`~lightly_derm.methods.SSLMethod`).

    Example:
        >>> import pytorch_lightning as pl
        >>> from lightly_derm.methods import APBYOL
        >>> model = APBYOL(backbone="resnet18", lambda_add=1.0, warmup_fraction=0.1)
        >>> transform = model.default_transform(input_size=64)   # lightly's BYOLTransform
        >>> # loader = DataLoader(LightlyDataset(folder, transform=transform),
        >>> #                     batch_size=64, collate_fn=model.default_collate())
        >>> # pl.Trainer(max_epochs=100).fit(model, loader)
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        prediction_hidden_dim: int = 4096,
        lr: float = 0.06,
        backbone_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        ema_start: float = 0.996,
        ema_end: float = 1.0,
        lambda_add: float = 1.0,
        warmup_fraction: float = 0.1,
        warmup_steps: int | None = None,
        layers: Literal["last", "predictor", "all"] = "last",
        normalize: bool = False,
        top_k: int = 1,
        exclude_duplicates: bool = True,
        gather_distributed: bool = True,
        augment: Augment = "cpu",
    ) -> None:
        super().__init__(
            backbone=backbone,
            backbone_weights=backbone_weights,
            projection_hidden_dim=projection_hidden_dim,
            projection_dim=projection_dim,
            prediction_hidden_dim=prediction_hidden_dim,
            lr=lr,
            backbone_lr=backbone_lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            ema_start=ema_start,
            ema_end=ema_end,
            augment=augment,
        )
        if lambda_add < 0:
            raise ValueError(f"lambda_add must be >= 0, got {lambda_add}")
        if not 0.0 <= warmup_fraction <= 1.0:
            raise ValueError(
                f"warmup_fraction must lie in [0, 1], got {warmup_fraction}"
            )
        if warmup_steps is not None and (
            isinstance(warmup_steps, bool)
            or not isinstance(warmup_steps, int)
            or warmup_steps < 0
        ):
            raise ValueError(
                f"warmup_steps must be an int >= 0 or None, got {warmup_steps!r}"
            )
        if not isinstance(layers, str):
            raise TypeError(
                "layers must be 'last', 'predictor' or 'all'; for other layers, replace "
                "model.miner with a TracInPositiveMiner(layers=[...])"
            )
        self.miner = TracInPositiveMiner(
            layers=layers,
            normalize=normalize,
            top_k=top_k,
            gather_distributed=gather_distributed,
        ).attach(self.prediction_head, self.projection_head)
        # Per-epoch statistics on the device, outside the state dict.
        self.mined_count_histogram: Tensor
        self._label_stats: Tensor
        self.register_buffer(
            "mined_count_histogram",
            torch.zeros(HISTOGRAM_BINS, dtype=torch.long),
            persistent=False,
        )
        self.register_buffer(
            "_label_stats", torch.zeros(2, dtype=torch.long), persistent=False
        )  # (matches, known pairs)
        #: Indices mined in the last step (B, top_k), into the (global) batch.
        self.last_mined: Tensor | None = None

    # ------------------------------------------------------------------ schedule
    def num_warmup_steps(self) -> int:
        """Optimizer steps before L_add is switched on."""
        hp = self.hparams
        if hp["warmup_steps"] is not None:
            return int(hp["warmup_steps"])
        total = self.total_steps()
        if total is None:
            if hp["warmup_fraction"] > 0 and self._trainer is not None:
                raise ValueError(
                    "warmup_fraction needs a finite number of training steps (set "
                    "max_steps or max_epochs), or give warmup_steps"
                )
            return 0
        return int(hp["warmup_fraction"] * total)

    def on_fit_start(self) -> None:
        """Checks the warm-up against the trainer's number of steps before training."""
        self.num_warmup_steps()

    def lambda_add_now(self) -> float:
        """λ at the current step: 0 during the warm-up, ``lambda_add`` after it."""
        if (
            self.hparams["lambda_add"] == 0
            or self.global_step < self.num_warmup_steps()
        ):
            return 0.0
        return float(self.hparams["lambda_add"])

    # ------------------------------------------------------------------ training
    def forward_views(self, views: Any) -> tuple[list[Tensor], list[Tensor]]:
        """As BYOL; after the warm-up the online forward is recorded for the miner."""
        if self.lambda_add_now() == 0.0:
            return super().forward_views(views)
        with self.miner.capture():
            predictions = [self.forward_online(x) for x in views]
        targets = [self.forward_momentum(x) for x in views]
        return predictions, targets

    def source_ids(self, batch: GroupedBatch) -> Tensor | None:
        """(B,) CPU ids of the samples' source files for duplicate exclusion, or ``None``.

        ``None`` when ``exclude_duplicates`` is off, file names are missing, or (on one
        process) all names differ, so the common case costs nothing.
        """
        if not self.hparams["exclude_duplicates"] or any(
            f is None for f in batch.filenames
        ):
            return None
        names = [str(f) for f in batch.filenames]
        distributed = self.miner.gather_distributed and lightly_dist.world_size() > 1
        if not distributed and len(set(names)) == len(names):
            return None
        return torch.tensor([_stable_id(n) for n in names], dtype=torch.long)

    def additional_positive_loss(
        self,
        predictions: list[Tensor],
        targets: list[Tensor],
        loss_per_sample: Tensor,
        group_ids: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mines positives and computes L_add.

        Args:
            predictions: V online predictions (B, D) of the recorded forward.
            targets: V target projections (B, D).
            loss_per_sample: BYOL's ℓ (B,) from these predictions.
            group_ids: Optional (B,) source ids (see :meth:`source_ids`).

        Returns:
            L_add (scalar), the mined indices (B, top_k) into the global batch, and the
            global target projections (V, W·B, D).
        """
        indices = self.miner(loss_per_sample, group_ids=group_ids)
        with torch.no_grad():
            z = torch.stack(targets)
            if self.miner.gather_distributed and lightly_dist.world_size() > 1:
                z = torch.cat(lightly_dist.gather(z.contiguous()), dim=1)
        return self.criterion(predictions, z, indices), indices, z

    def training_loss(
        self,
        batch: GroupedBatch,
        predictions: list[Tensor],
        targets: list[Tensor],
        loss_per_sample: Tensor,
    ) -> Tensor:
        """L_BYOL + λ · L_add (L_BYOL alone during the warm-up)."""
        loss_byol = loss_per_sample.mean()
        lam = self.lambda_add_now()
        size = batch.batch_size
        self.log(  # a device tensor: see BYOL.training_step
            "train_lambda_add",
            torch.full((), lam, device=loss_byol.device),
            batch_size=size,
        )
        if lam == 0.0:
            return loss_byol
        loss_add, indices, _ = self.additional_positive_loss(
            predictions, targets, loss_per_sample, self.source_ids(batch)
        )
        self.log("train_loss_add", loss_add.detach(), batch_size=size)
        self._record_mining(indices, batch.targets, size)
        return loss_byol + lam * loss_add

    # ------------------------------------------------------------------ statistics
    @torch.no_grad()
    def _record_mining(self, indices: Tensor, labels: Tensor, batch_size: int) -> None:
        """Accumulates mining statistics on the device (no host sync)."""
        self.last_mined = indices.detach()
        global_size = batch_size * (
            lightly_dist.world_size() if self.miner.gather_distributed else 1
        )
        # index_add_, not bincount: bincount on CUDA reads the maximum back to the host.
        flat = indices.reshape(-1)
        counts = torch.zeros(global_size, dtype=torch.long, device=flat.device)
        counts.index_add_(0, flat, torch.ones_like(flat))
        self.log("train_mined_max_count", counts.max().float(), batch_size=batch_size)
        self.log(
            "train_mined_unique_fraction",
            (counts > 0).float().mean(),
            batch_size=batch_size,
        )
        device = indices.device
        bins = counts.clamp(max=HISTOGRAM_BINS - 1)
        self.mined_count_histogram.index_add_(0, bins, torch.ones_like(bins))
        if (
            labels.ndim != 1
            or labels.is_floating_point()
            or labels.shape[0] != batch_size
        ):
            return  # no integer class labels (e.g. tensor targets)
        labels = labels.to(device)
        all_labels = labels
        if global_size != batch_size:
            all_labels = torch.cat(lightly_dist.gather(labels.contiguous()))
        mined = all_labels[indices]  # (B, k)
        anchor = labels[:, None].expand_as(mined)
        known = (anchor >= 0) & (mined >= 0)
        self._label_stats += torch.stack(
            [(known & (anchor == mined)).sum(), known.sum()]
        )

    def on_train_epoch_start(self) -> None:
        """Resets the per-epoch mining statistics."""
        self.mined_count_histogram.zero_()
        self._label_stats.zero_()

    def on_train_epoch_end(self) -> None:
        """Logs the same-label rate of mined pairs and the times-chosen histogram."""
        stats = self._label_stats
        histogram = self.mined_count_histogram
        if self.trainer.world_size > 1:
            stats = self.trainer.strategy.reduce(stats.clone(), reduce_op="sum")
            histogram = self.trainer.strategy.reduce(histogram.clone(), reduce_op="sum")
        matches, known = (int(v) for v in stats.tolist())  # one sync per epoch
        if known > 0:
            self.log("train_mined_same_label_rate", matches / known, sync_dist=False)
        experiment = getattr(self.logger, "experiment", None)
        if (
            int(histogram.sum()) > 0
            and experiment is not None
            and hasattr(experiment, "add_histogram")
        ):
            values = torch.repeat_interleave(
                torch.arange(HISTOGRAM_BINS), histogram.cpu()
            ).float()
            experiment.add_histogram(
                "train_mined_times_chosen", values, global_step=self.global_step
            )
