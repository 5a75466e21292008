"""Collates K-view samples into one image-major batch with group ids.

Builds on lightly's multi-view data contract (a view transform maps an image to a list
of views; datasets yield ``(views, target[, filename])``, as ``LightlyDataset`` and
torchvision datasets do) and accepts lightly's ``MultiViewCollate`` output. What it
adds: one (B·K, C, H, W) tensor in image-major order with the group id of every view,
the input that grouping losses such as :class:`~lightly_derm.loss.GraVISLoss` take.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor


class GroupedBatch(NamedTuple):
    """A batch of K views per image.

    Attributes:
        views: (B·K, C, H, W), image-major: ``views[b * K + k]`` is view k of image b.
        group_ids: (B·K,) int64, the image index b of every view.
        targets: (B,) the images' targets (int64 labels, ``-1`` where unlabelled), or
            (B, …) when the dataset yields tensor targets.
        filenames: The images' file names, ``None`` where the dataset gives none.
    """

    views: Tensor
    group_ids: Tensor
    targets: Tensor
    filenames: list[str | None]

    @property
    def batch_size(self) -> int:
        """B, the number of images."""
        return int(self.targets.shape[0])

    @property
    def num_views(self) -> int:
        """K, the number of views per image."""
        return self.views.shape[0] // max(self.batch_size, 1)

    def view(self, k: int) -> Tensor:
        """View ``k`` of every image, (B, C, H, W)."""
        return self.views.unflatten(0, (self.batch_size, self.num_views))[:, k]

    def split_views(self) -> list[Tensor]:
        """The K views as a list of (B, C, H, W) tensors (lightly's multi-view layout)."""
        return list(
            self.views.unflatten(0, (self.batch_size, self.num_views)).unbind(1)
        )


def _targets_tensor(targets: Sequence[Any]) -> Tensor:
    if all(t is None for t in targets):
        return torch.full((len(targets),), -1, dtype=torch.long)
    if any(t is None for t in targets):
        raise ValueError(
            "some samples have a target and others have None; give all or none"
        )
    if all(isinstance(t, Tensor) for t in targets):
        return torch.stack([t if t.ndim else t.reshape(()) for t in targets])
    try:
        return torch.as_tensor(list(targets), dtype=torch.long)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"targets must be ints, tensors or None, got {type(targets[0]).__name__}"
        ) from exc


class GroupedViewCollate:
    """Turns a list of K-view samples into ``(views, group_ids, targets, filenames)``.

    Part of GraVIS (Zhou et al., "GraVIS: Grouping Augmented Views from Independent
    Sources for Dermatology Analysis", IEEE TMI 2023, arXiv:2301.04410): all views of an
    image form one group.

    Each sample is ``(views, target)`` or ``(views, target, filename)`` with ``views`` a
    list of K tensors (C, H, W) or one tensor (K, C, H, W) — what a dataset with a
    multi-view transform yields. Every sample needs the same K and view shape.

    Example:
        >>> import torch
        >>> from lightly_derm.data import GroupedViewCollate
        >>> samples = [([torch.rand(3, 8, 8) for _ in range(4)], 0, "a.jpg"),
        ...            ([torch.rand(3, 8, 8) for _ in range(4)], 1, "b.jpg")]
        >>> views, group_ids, targets, filenames = GroupedViewCollate()(samples)
        >>> views.shape, group_ids.tolist()
        (torch.Size([8, 3, 8, 8]), [0, 0, 0, 0, 1, 1, 1, 1])
    """

    def __call__(self, samples: Sequence[Any]) -> GroupedBatch:
        """Collates samples; see the class docstring."""
        if not isinstance(samples, Sequence) or len(samples) == 0:
            raise ValueError("GroupedViewCollate needs a non-empty list of samples")
        all_views: list[Sequence[Tensor]] = []
        targets: list[Any] = []
        filenames: list[str | None] = []
        for i, sample in enumerate(samples):
            if not isinstance(sample, (tuple, list)) or len(sample) not in (2, 3):
                raise TypeError(
                    f"sample {i} must be (views, target) or (views, target, filename), "
                    f"got {type(sample).__name__}"
                    + (
                        f" of length {len(sample)}"
                        if isinstance(sample, (tuple, list))
                        else ""
                    )
                )
            views = sample[0]
            if isinstance(views, Tensor):
                if views.ndim != 4:
                    raise ValueError(
                        f"sample {i}: a views tensor must be (K, C, H, W), got {tuple(views.shape)}"
                    )
                views = list(views.unbind(0))
            if not isinstance(views, (list, tuple)) or not all(
                isinstance(v, Tensor) for v in views
            ):
                kinds = (
                    sorted({type(v).__name__ for v in views})
                    if isinstance(views, (list, tuple))
                    else [type(views).__name__]
                )
                raise TypeError(
                    f"sample {i}: views must be a list of tensors, got {', '.join(kinds)}; "
                    "end the view transform with ToTensor"
                )
            all_views.append(views)
            targets.append(sample[1])
            filenames.append(sample[2] if len(sample) == 3 else None)
        num_views = len(all_views[0])
        shape = tuple(all_views[0][0].shape) if num_views else ()
        for i, views in enumerate(all_views):
            if len(views) != num_views:
                raise ValueError(
                    f"all samples need the same number of views: sample 0 has {num_views}, "
                    f"sample {i} has {len(views)}"
                )
            for k, v in enumerate(views):
                if tuple(v.shape) != shape or v.ndim != 3:
                    raise ValueError(
                        f"all views need the same (C, H, W) shape: sample 0 view 0 is {shape}, "
                        f"sample {i} view {k} is {tuple(v.shape)}"
                    )
        if num_views == 0:
            raise ValueError("samples have no views")
        views_tensor = torch.stack([v for views in all_views for v in views])
        group_ids = torch.arange(len(samples)).repeat_interleave(num_views)
        return GroupedBatch(
            views_tensor, group_ids, _targets_tensor(targets), filenames
        )


def to_grouped_batch(batch: Any) -> GroupedBatch:
    """Returns ``batch`` as a :class:`GroupedBatch`, whatever multi-view layout it has.

    Accepts a :class:`GroupedBatch` or a 4-tuple ``(views, group_ids, targets,
    filenames)``, and lightly's ``MultiViewCollate`` (or torch's default collate) output
    ``(list of K (B, C, H, W) tensors, targets[, filenames])``, which it interleaves to
    image-major order.

    Raises:
        ValueError: The layout is none of these, or the views disagree in shape.
    """
    if isinstance(batch, GroupedBatch):
        return batch
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3, 4):
        raise ValueError(
            "expected a GroupedBatch or a MultiViewCollate batch (views, targets[, filenames]), "
            f"got {type(batch).__name__}"
        )
    first = batch[0]
    if isinstance(first, Tensor) and len(batch) == 4:
        views, group_ids, targets, filenames = batch
        if views.ndim != 4 or group_ids.shape != views.shape[:1]:
            raise ValueError(
                f"views must be (N, C, H, W) and group_ids (N,), got {tuple(views.shape)} and "
                f"{tuple(group_ids.shape)}"
            )
        return GroupedBatch(views, group_ids, targets, list(filenames))
    if (
        isinstance(first, (list, tuple))
        and first
        and all(isinstance(v, Tensor) for v in first)
    ):
        shapes = {tuple(v.shape) for v in first}
        if len(shapes) != 1 or first[0].ndim != 4:
            raise ValueError(
                f"the K views must all be (B, C, H, W) of one shape, got {sorted(shapes)}"
            )
        num_views, batch_size = len(first), first[0].shape[0]
        views = torch.stack(list(first), dim=1).flatten(0, 1)
        group_ids = torch.arange(batch_size, device=views.device).repeat_interleave(
            num_views
        )
        targets = (
            batch[1] if isinstance(batch[1], Tensor) else _targets_tensor(batch[1])
        )
        filenames = list(batch[2]) if len(batch) >= 3 else [None] * batch_size
        return GroupedBatch(views, group_ids, targets, filenames)
    raise ValueError(
        "expected a GroupedBatch or a MultiViewCollate batch whose first element is a list of "
        f"K (B, C, H, W) tensors, got a first element of type {type(first).__name__}"
    )
