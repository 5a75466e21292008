"""The interface every lightly-derm pretraining method offers.

Builds on :class:`pytorch_lightning.LightningModule`. A method describes its views
(:meth:`SSLMethod.default_transform`, :meth:`SSLMethod.default_collate`,
:meth:`SSLMethod.make_views`); :class:`~lightly_derm.data.SSLDataModule` applies them.
The command line, evaluation and the segmentation transfer rely on these members only,
so any ``method`` plugin that subclasses :class:`SSLMethod` works with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from lightly_derm._version import __version__
from lightly_derm.data.canvas_collate import CanvasBatch, CanvasCollate
from lightly_derm.data.grouped_view_collate import GroupedBatch, GroupedViewCollate
from lightly_derm.models.backbones import build_backbone, feature_dim
from lightly_derm.models.checkpoints import state_dict_fit
from lightly_derm.transforms.gpu.canvas import CanvasTransform
from lightly_derm.transforms.gpu.view_transform import GPUMultiViewTransform

#: Where the views are made: ``"cpu"`` in the DataLoader workers, ``"gpu"`` on the device.
Augment = Literal["cpu", "gpu"]
AUGMENT: tuple[str, ...] = ("cpu", "gpu")

#: Key of the checkpoint entry that names the method which wrote it.
CHECKPOINT_KEY = "lightly_derm"

#: Key (in ``checkpoint[CHECKPOINT_KEY]``) of the GPU views' generator states.
VIEW_GENERATOR_KEY = "gpu_view_generator"


class SSLMethod(pl.LightningModule):
    """Base class of the pretraining methods: a backbone plus what feeds it.

    Conventions every method follows:

    - ``self.backbone`` is the encoder being trained, mapping (B, C, H, W) images to
      (B, ``feature_dim``) features; its state-dict keys are its library's own
      (torchvision's ``conv1`` … ``layer4`` for ResNets, MONAI's and timm's for
      theirs), so the checkpoint's ``backbone.*`` weights move into the FlexibleUNet
      encoder of the same network (:func:`~lightly_derm.segmentation.load_ssl_encoder`).
    - :meth:`default_transform` gives the view transform of the method's data, and
      :meth:`default_collate` the collate function; ``training_step`` accepts its
      output and lightly's ``MultiViewCollate`` output (see
      :func:`~lightly_derm.data.to_grouped_batch`). They describe the views;
      :class:`~lightly_derm.data.SSLDataModule` asks for them once and applies them.
    - The total training loss is logged as ``train_loss``; parts as ``train_loss_<part>``.
    - Checkpoints name the method that wrote them (``checkpoint["lightly_derm"]``), and
      :meth:`load_state_dict` refuses a state dict of another method or architecture
      with a :class:`ValueError` that names both and the keys that do not fit, instead
      of torch's ``RuntimeError`` (Lightning's ``fit(ckpt_path=...)`` and
      ``load_from_checkpoint`` both load through it).

    **Where views are made** (``augment``). ``"cpu"``: :meth:`default_transform` is the
    method's view transform (:meth:`cpu_view_transform`), run per image in the
    DataLoader workers, and :meth:`default_collate` a
    :class:`~lightly_derm.data.GroupedViewCollate`. ``"gpu"``:
    :meth:`default_transform` only resizes each image onto a uint8 canvas
    (:class:`~lightly_derm.transforms.gpu.CanvasTransform`; cache it with
    :class:`~lightly_derm.data.DecodedImageCache`), :meth:`default_collate` stacks the
    canvases (:class:`~lightly_derm.data.CanvasCollate`), and after the batch reaches
    the device :meth:`make_views` makes the views for the whole batch — called by
    :class:`~lightly_derm.data.SSLDataModule`'s ``on_after_batch_transfer``, or by this
    method's own when it is fed by a plain DataLoader — with :meth:`gpu_view_transform`,
    by default derived from
    :meth:`cpu_view_transform` (:meth:`GPUMultiViewTransform.from_view_transform
    <lightly_derm.transforms.gpu.GPUMultiViewTransform.from_view_transform>`), so the
    same augmentations with the same distributions, per-image random parameters, and a
    method whose CPU transform uses the supported operations gets ``augment="gpu"``
    without writing anything — and hands ``training_step`` the same
    :class:`~lightly_derm.data.GroupedBatch` as the CPU path would. The views come in
    the trainer's precision (bfloat16 under ``"bf16-mixed"``) and in channels-last
    layout when the backbone is. Their random numbers come from a generator of the
    method on the device, seeded from ``torch.initial_seed()`` and the global rank (so
    ``seed_everything`` makes them reproducible and DDP ranks differ); its state (of
    every rank) is saved in checkpoints and restored on resuming, so that a resumed run
    makes the views the interrupted one would have made.

    Args:
        backbone: A backbone name for :func:`~lightly_derm.models.build_backbone`
            (``"resnet50"``, ``"monai:efficientnet-b0"``, ``"timm:convnext_tiny"``,
            ``"efficientnet-lite0"``, ...) or any module mapping images to features.
        backbone_weights: Local checkpoint path, state dict or named weights
            (``"imagenet:efficientnet-lite0"``) to initialise a named backbone from
            (never downloaded).
        augment: ``"cpu"`` or ``"gpu"`` (see above).

    Attributes:
        gpu_view_ignore: Transform types of :meth:`cpu_view_transform` that the derived
            GPU views leave out on purpose (e.g. ``(torchvision.transforms.v2.AugMix,)``);
            empty by default, so that any other untranslatable step is an error.
        ddp_find_unused_parameters: Whether a training step leaves parameters without
            gradient, so that DDP must be told
            (``DDPStrategy(find_unused_parameters=method.ddp_find_unused_parameters)``,
            which code building a Trainer for any method should do); ``False`` unless a
            method sets it (FG-SSL's progressive schedule does).
    """

    ddp_find_unused_parameters: bool = False
    gpu_view_ignore: tuple[type, ...] = ()

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        backbone_weights: str | Path | Mapping[str, Tensor] | None = None,
        augment: Augment = "cpu",
    ) -> None:
        super().__init__()
        if augment not in AUGMENT:
            raise ValueError(f"augment must be 'cpu' or 'gpu', got {augment!r}")
        if (
            augment == "gpu"
            and type(self).gpu_view_transform is SSLMethod.gpu_view_transform
            and type(self).cpu_view_transform is SSLMethod.cpu_view_transform
        ):
            raise ValueError(
                f"{type(self).__name__} has no GPU view pipeline: it defines neither "
                "cpu_view_transform (to derive one from) nor gpu_view_transform; use "
                "augment='cpu'"
            )
        self.augment: str = augment
        self._gpu_views: dict[tuple[int, bool], GPUMultiViewTransform] = {}
        self._augment_generator: torch.Generator | None = None
        self._pending_view_state: tuple[str, Tensor] | None = None
        if isinstance(backbone, str):
            self.backbone: nn.Module = build_backbone(
                backbone, weights=backbone_weights
            )
        elif isinstance(backbone, nn.Module):
            if backbone_weights is not None:
                raise ValueError(
                    "backbone_weights is for a backbone given by name; load weights into "
                    "your module before passing it"
                )
            self.backbone = backbone
        else:
            raise TypeError(
                f"backbone must be a backbone name or an nn.Module, got {type(backbone).__name__}"
            )
        self.feature_dim = feature_dim(self.backbone)

    def forward(self, images: Tensor) -> Tensor:
        """Backbone features (B, ``feature_dim``) of images (B, C, H, W)."""
        return self.backbone(images).flatten(1)

    def default_transform(self, input_size: int = 224) -> Callable[[Any], Any]:
        """The transform this method's data needs.

        With ``augment="cpu"`` the view transform (image → list of views, see
        :meth:`cpu_view_transform`); with ``augment="gpu"`` a
        :class:`~lightly_derm.transforms.gpu.CanvasTransform` (image → one uint8
        canvas; the views of ``input_size`` pixels are made on the device).
        """
        if self.augment == "gpu":
            # Built now, so that a CPU transform without GPU form fails before training.
            self._gpu_pipeline(input_size, training=True)
            return CanvasTransform(view_size=input_size)
        return self.cpu_view_transform(input_size)

    def cpu_view_transform(self, input_size: int = 224) -> Callable[[Any], Any]:
        """The per-image view transform (image → list of views) of ``augment="cpu"``."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define cpu_view_transform"
        )

    def gpu_view_transform(self, input_size: int = 224) -> GPUMultiViewTransform:
        """The batched device form of :meth:`cpu_view_transform` (``augment="gpu"``).

        Derived from the CPU transform's objects by
        :meth:`GPUMultiViewTransform.from_view_transform
        <lightly_derm.transforms.gpu.GPUMultiViewTransform.from_view_transform>`
        (leaving out :attr:`gpu_view_ignore`), so the two cannot drift apart. Override
        it only for views the CPU transform cannot describe.

        Raises:
            ValueError: The CPU transform has a step without GPU form; the message
                names it.
        """
        return GPUMultiViewTransform.from_view_transform(
            self.cpu_view_transform(input_size), ignore=self.gpu_view_ignore
        )

    def gpu_eval_view_transform(self, input_size: int = 224) -> GPUMultiViewTransform:
        """The device views of batches outside training (validation, test, predict).

        Default: :meth:`gpu_view_transform` (an SSL validation loss needs the same
        views); classifiers return a deterministic one.
        """
        return self.gpu_view_transform(input_size)

    def default_collate(self) -> Callable[[list[Any]], Any]:
        """The collate function for batches of :meth:`default_transform` samples."""
        return CanvasCollate() if self.augment == "gpu" else GroupedViewCollate()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Records which method (class, module, lightly-derm version) wrote the checkpoint.

        With ``augment="gpu"`` also the state of every rank's GPU-view generator
        (gathered from all processes: Lightning calls this hook on every rank), so that
        a resumed run continues the interrupted run's views.
        """
        checkpoint[CHECKPOINT_KEY] = {
            "method": type(self).__qualname__,
            "module": type(self).__module__,
            "version": __version__,
        }
        if self.augment == "gpu":
            checkpoint[CHECKPOINT_KEY][VIEW_GENERATOR_KEY] = (
                self._view_generator_states()
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keeps the checkpoint's origin for the messages of :meth:`load_state_dict`."""
        origin = checkpoint.get(CHECKPOINT_KEY)
        hparams = checkpoint.get("hyper_parameters")
        self._checkpoint_origin = {
            **(dict(origin) if isinstance(origin, Mapping) else {}),
            "backbone": hparams.get("backbone")
            if isinstance(hparams, Mapping)
            else None,
        }
        states = origin.get(VIEW_GENERATOR_KEY) if isinstance(origin, Mapping) else None
        if self.augment == "gpu" and isinstance(states, Mapping):
            self._restore_view_generator(states)

    def _view_generator_states(self) -> dict[str, Any]:
        """``{"device": type, "per_rank": [state or None, ...]}`` of the GPU views."""
        generator = self._augment_generator
        state = None if generator is None else generator.get_state()
        device = None if generator is None else generator.device.type
        trainer = self._trainer
        per_rank: list[Any] = [(device, state)]
        if (
            trainer is not None
            and trainer.world_size > 1
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            per_rank = [None] * trainer.world_size
            torch.distributed.all_gather_object(per_rank, (device, state))
        return {
            "device": [d for d, _ in per_rank],
            "per_rank": [s for _, s in per_rank],
        }

    def _restore_view_generator(self, states: Mapping[str, Any]) -> None:
        """Keeps this rank's saved generator state for :meth:`augment_generator`."""
        per_rank = list(states.get("per_rank") or [])
        devices = list(states.get("device") or [])
        trainer = self._trainer
        rank = trainer.global_rank if trainer is not None else 0
        world_size = trainer.world_size if trainer is not None else 1
        if len(per_rank) != world_size:
            rank_zero_warn(
                f"the checkpoint holds GPU-view generator states of {len(per_rank)} "
                f"processes, this run has {world_size}; the views are drawn afresh"
            )
            return
        if per_rank[rank] is not None:
            self._pending_view_state = (devices[rank], per_rank[rank])
            self._augment_generator = None  # made again, from the saved state

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Loads a state dict after checking that it fits this method and backbone.

        Raises:
            TypeError: ``state_dict`` is not a mapping.
            ValueError: Tensors differ in shape (another architecture), or, with
                ``strict``, keys are missing or unexpected; the message names the method
                that wrote the checkpoint (when known), a few keys, and what to do.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a mapping of names to tensors, got "
                f"{type(state_dict).__name__}"
            )
        problem = _state_dict_problem(self.state_dict(), state_dict, strict)
        if problem:
            origin = getattr(self, "_checkpoint_origin", None) or {}
            writer = origin.get("method")
            theirs = (
                f"it was written by {writer}"
                + (
                    f" (lightly-derm {origin['version']})"
                    if origin.get("version")
                    else ""
                )
                + (
                    f" with backbone {origin['backbone']!r}"
                    if isinstance(origin.get("backbone"), str)
                    else ""
                )
                + "; "
                if writer
                else ""
            )
            backbone = self.hparams.get("backbone") if self.hparams else None
            ours = type(self).__name__ + (
                f"(backbone={backbone!r})" if isinstance(backbone, str) else ""
            )
            raise ValueError(
                f"the checkpoint does not fit {ours}: {theirs}{problem}. Load it into the "
                "method and backbone it was trained with"
                + (
                    ""
                    if not strict
                    else ", or pass strict=False to load the keys that fit"
                )
                + "."
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------ GPU views
    def augment_generator(self, device: torch.device) -> torch.Generator:
        """The generator of the GPU views on ``device`` (made on first use).

        Seeded from ``torch.initial_seed()`` and the global rank, or, after resuming
        from a checkpoint, set to the state the checkpoint saved for this rank.
        """
        generator = self._augment_generator
        if generator is None or generator.device != device:
            rank = self.global_rank if self._trainer is not None else 0
            generator = torch.Generator(device=device)
            generator.manual_seed((torch.initial_seed() + 1_000_003 * rank) % 2**63)
            pending = self._pending_view_state
            if pending is not None:
                self._pending_view_state = None
                saved_device, state = pending
                if saved_device == generator.device.type:
                    generator.set_state(state.cpu())
                else:
                    rank_zero_warn(
                        f"the checkpoint's GPU-view generator ran on {saved_device}, "
                        f"this run's on {generator.device.type}; the views are drawn "
                        "afresh"
                    )
            self._augment_generator = generator
        return generator

    def view_dtype(self) -> torch.dtype:
        """The dtype of GPU views: the trainer's half type under mixed precision."""
        trainer = self._trainer
        precision = str(trainer.precision) if trainer is not None else "32"
        if precision.startswith("bf16"):
            return torch.bfloat16
        if precision.startswith("16"):
            return torch.float16
        if precision.startswith("64"):
            return torch.float64
        return torch.float32

    def view_memory_format(self) -> torch.memory_format:
        """``torch.channels_last`` when the backbone's first convolution is, else contiguous."""
        for parameter in self.backbone.parameters():
            if parameter.ndim == 4 and parameter.shape[-1] > 1:
                if (
                    parameter.is_contiguous(memory_format=torch.channels_last)
                    and not parameter.is_contiguous()
                ):
                    return torch.channels_last
                break
        return torch.contiguous_format

    def _gpu_pipeline(self, view_size: int, training: bool) -> GPUMultiViewTransform:
        """The (cached) GPU view pipeline of training or evaluation batches."""
        key = (view_size, training)
        pipeline = self._gpu_views.get(key)
        if pipeline is None:
            make = self.gpu_view_transform if training else self.gpu_eval_view_transform
            pipeline = make(view_size)
            self._gpu_views[key] = pipeline
        return pipeline

    def make_views(self, batch: CanvasBatch, training: bool = True) -> GroupedBatch:
        """Makes the views of a :class:`~lightly_derm.data.CanvasBatch` on its device.

        Returns the image-major :class:`~lightly_derm.data.GroupedBatch` that the CPU
        path's collate would give (views in :meth:`view_dtype` and
        :meth:`view_memory_format`), from :meth:`gpu_view_transform` (or
        :meth:`gpu_eval_view_transform` when not ``training``). No host
        synchronisation.
        """
        if not isinstance(batch, CanvasBatch):
            raise TypeError(
                f"make_views needs a CanvasBatch, got {type(batch).__name__}"
            )
        pipeline = self._gpu_pipeline(batch.view_size, training)
        images = batch.images
        views = pipeline(
            images,
            batch.sizes,
            generator=self.augment_generator(images.device),
            dtype=self.view_dtype(),
            memory_format=self.view_memory_format(),
        )
        k = pipeline.num_views
        group_ids = torch.arange(views.shape[0], device=images.device) // k
        return GroupedBatch(views, group_ids, batch.targets, list(batch.filenames))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Turns a :class:`~lightly_derm.data.CanvasBatch` into views (``augment="gpu"``).

        For a method fed by a plain DataLoader (``trainer.fit(method, loader)``); with
        :class:`~lightly_derm.data.SSLDataModule`, Lightning calls the DataModule's hook
        instead, which makes the same views with :meth:`make_views`.
        """
        if isinstance(batch, CanvasBatch):
            trainer = self._trainer
            training = trainer is None or bool(trainer.training)
            return self.make_views(batch, training=training)
        return batch


def _few(keys: Sequence[str], count: int = 4) -> str:
    return "[" + ", ".join(keys[:count]) + (", ..." if len(keys) > count else "") + "]"


def _state_dict_problem(
    own: Mapping[str, Any], theirs: Mapping[str, Any], strict: bool
) -> str:
    """What keeps ``theirs`` from loading into a module with state dict ``own``."""
    parts = []
    fit = state_dict_fit(own, theirs)
    mismatched = fit.mismatched
    if mismatched:
        parts.append(
            f"tensors that differ in shape ({len(mismatched)}) ({'; '.join(mismatched[:3])}"
            f"{'; ...' if len(mismatched) > 3 else ''})"
        )
    if strict:
        if fit.missing:
            parts.append(f"missing keys ({len(fit.missing)}) {_few(fit.missing)}")
        if fit.unexpected:
            parts.append(
                f"unexpected keys ({len(fit.unexpected)}) {_few(fit.unexpected)}"
            )
    return "; ".join(parts)
