"""Frozen features of a dataset under any backbone.

Builds on :class:`torch.utils.data.DataLoader` and :func:`torch.autocast`; it is the
feature pass of lightly's ``KNNClassifier``/``LinearClassifier`` benchmarks as a plain
function, so the kNN and linear-probe evaluations run on cached features.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


class Features(NamedTuple):
    """The features of a dataset.

    Attributes:
        features: (N, D) float32 on the CPU.
        targets: (N,) int64 (``-1`` = unlabelled), or (N, K) for multi-label data.
        filenames: The N file names (``None`` where the dataset gives none).
    """

    features: Tensor
    targets: Tensor
    filenames: list[str | None]

    def labelled(self) -> Features:
        """The samples with a target ≥ 0."""
        keep = (self.targets >= 0).nonzero().flatten()
        return Features(
            self.features[keep],
            self.targets[keep],
            [self.filenames[i] for i in keep.tolist()],
        )


def _device_of(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def extract_features(
    model: nn.Module,
    data: Dataset[Any] | DataLoader[Any],
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool | str = False,
) -> Features:
    """Runs ``model`` over ``data`` in eval mode without gradients and collects features.

    Args:
        model: Maps (B, C, H, W) images to (B, D) features (or (B, D, 1, 1), flattened),
            e.g. :func:`lightly_derm.models.resnet` or any
            :class:`~lightly_derm.methods.SSLMethod` (its ``forward``).
        data: A dataset yielding ``(image tensor, target[, filename])`` — give it an
            evaluation transform that ends in a tensor — or a ready ``DataLoader``.
        batch_size: Batch size when ``data`` is a dataset.
        num_workers: DataLoader workers when ``data`` is a dataset.
        device: Where to run; default the model's device. The model is moved there for
            the pass and moved back afterwards; its train/eval mode is restored.
        autocast_dtype: Run under :func:`torch.autocast` with this dtype (e.g.
            ``torch.bfloat16`` on a GPU); features are returned as float32.
        channels_last: Feed images in channels-last memory format (faster on GPUs).
        progress: Show a tqdm progress bar (the library behind Lightning's bars); a
            string is its description.

    Returns:
        :class:`Features` on the CPU, in dataset order.

    Raises:
        TypeError: The batches do not hold image tensors.

    Example:
        >>> import torch
        >>> from torchvision.transforms import v2
        >>> from lightly_derm.data import SyntheticLesions
        >>> from lightly_derm.models import resnet
        >>> to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        >>> data = SyntheticLesions(num_images=6, image_size=32, transform=to_tensor)
        >>> result = extract_features(resnet("resnet18"), data, batch_size=4)
        >>> result.features.shape, result.targets.tolist(), result.filenames[0]
        (torch.Size([6, 512]), [0, 1, 2, 0, 1, 2], 'synthetic_000000.png')
    """
    if isinstance(data, DataLoader):
        loader = data
    else:
        target_device = (
            torch.device(device) if device is not None else _device_of(model)
        )
        loader = DataLoader(
            data,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=target_device.type == "cuda",
        )
    original_device = _device_of(model)
    run_device = torch.device(device) if device is not None else original_device
    was_training = model.training
    model.to(run_device)
    model.eval()
    features: list[Tensor] = []
    targets: list[Tensor] = []
    filenames: list[str | None] = []
    try:
        with (
            torch.no_grad(),
            torch.autocast(
                run_device.type,
                dtype=autocast_dtype,
                enabled=autocast_dtype is not None,
            ),
        ):
            batches: Any = loader
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(
                    loader,
                    desc=progress if isinstance(progress, str) else "features",
                    unit="batch",
                )
            for batch in batches:
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise TypeError(
                        "batches must be (images, targets[, filenames]), got "
                        f"{type(batch).__name__}"
                    )
                images = batch[0]
                if not isinstance(images, Tensor) or images.ndim != 4:
                    raise TypeError(
                        "the dataset must yield image tensors (C, H, W); give it a transform "
                        "that ends in a tensor (e.g. v2.ToImage() + v2.ToDtype), got "
                        f"{type(images).__name__}"
                        + (
                            f" of shape {tuple(images.shape)}"
                            if isinstance(images, Tensor)
                            else ""
                        )
                    )
                images = images.to(run_device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                output = model(images)
                features.append(output.flatten(1).float().to("cpu", non_blocking=True))
                target = batch[1]
                targets.append(torch.as_tensor(target).cpu())
                names = batch[2] if len(batch) > 2 else [None] * images.shape[0]
                filenames.extend(list(names))
    finally:
        model.to(original_device)
        model.train(was_training)
    if not features:
        raise ValueError("the data is empty: no batch to extract features from")
    if run_device.type == "cuda":
        torch.cuda.synchronize(run_device)
    return Features(torch.cat(features), torch.cat(targets).long(), filenames)
