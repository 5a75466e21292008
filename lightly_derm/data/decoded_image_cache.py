"""Decode every image once, keep the canvases: data loading for small datasets.

Builds on :class:`torch.utils.data.Dataset`, :func:`~lightly_derm.data.load_image`
(reduced-size JPEG decoding) and :class:`~lightly_derm.transforms.gpu.CanvasTransform`.
What it adds: the decode + resize that a GPU-augmented run would repeat every epoch is
done once, in threads, and the uint8 canvases are served from memory (or from a
memory-mapped ``.npy`` file in a cache folder, reused by later runs). A DataLoader then
only stacks canvases, and the method makes the random views on its device
(``augment="gpu"``). For the 290-image ISIC subset at 224-pixel views the cache holds
290 × 3 × 293² bytes ≈ 75 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightly_derm.data.image_file_dataset import ImageFileDataset
from lightly_derm.data.image_io import UnreadableImageError, load_image
from lightly_derm.transforms.gpu.canvas import CanvasImage, CanvasTransform

__all__ = ["DecodedImageCache"]


class DecodedImageCache(Dataset[tuple[CanvasImage, int, str | None]]):
    """A dataset's images decoded once onto canvases; items ``(CanvasImage, target, filename)``.

    Wraps a dataset whose items are ``(image, target[, filename])`` (lightly's
    ``LightlyDataset``, :class:`~lightly_derm.data.ImageFolderDataset` and friends,
    without a transform), applies ``transform`` (deterministic) to every image once at
    construction, and keeps the results. For a
    :class:`~lightly_derm.data.ImageFileDataset` the files are read directly with
    :func:`~lightly_derm.data.load_image` at ``decode_size = transform.size`` (JPEGs then
    decode at 1/2–1/8 scale), so the dataset's own decode size does not matter.

    Worker-safe: the in-memory canvases are one tensor that DataLoader workers share
    (fork: copy-on-write pages that nobody writes; spawn: shared memory); a
    memory-mapped cache is reopened in every worker.

    Args:
        dataset: The source dataset (its items are read once).
        transform: The canvas transform, usually ``method.default_transform(size)`` of
            a method with ``augment="gpu"``.
        cache_dir: Optional folder for a ``.npy`` cache named by a hash of the file list
            (names, sizes, modification times) and the canvas geometry; reused when it
            exists, written (atomically) otherwise.
        num_threads: Decoding threads (Pillow releases the GIL); default the CPU count.

    Raises:
        TypeError: ``transform`` is not a :class:`CanvasTransform`, or an item is not
            ``(image, target[, filename])``.
        ValueError: ``dataset`` is empty.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> from lightly_derm.data import DecodedImageCache, ImageFolderDataset
        >>> from lightly_derm.transforms.gpu import CanvasTransform
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for i in range(3):
        ...     Image.new("RGB", (120, 90), (40 * i, 80, 120)).save(root / f"{i}.jpg")
        >>> cache = DecodedImageCache(ImageFolderDataset(root), CanvasTransform(64))
        >>> canvas, target, filename = cache[0]
        >>> tuple(canvas.image.shape), canvas.height, canvas.width, filename
        ((3, 97, 97), 73, 97, '0.jpg')
    """

    def __init__(
        self,
        dataset: Any,
        transform: CanvasTransform,
        cache_dir: str | os.PathLike[str] | None = None,
        num_threads: int | None = None,
    ) -> None:
        if not isinstance(transform, CanvasTransform):
            raise TypeError(
                "transform must be a CanvasTransform (default_transform() of a method "
                f"with augment='gpu'), got {type(transform).__name__}"
            )
        count = len(dataset)
        if count == 0:
            raise ValueError("the dataset is empty: nothing to cache")
        self.transform = transform
        self.num_threads = num_threads or os.cpu_count() or 1
        self.path: Path | None = None
        self._memmap: np.ndarray | None = None
        self.images: Tensor | None = None
        if cache_dir is not None:
            self.path = Path(cache_dir) / f"canvases-{self._key(dataset)}.npy"
        if self.path is not None and self.path.exists():
            meta = json.loads(self.path.with_suffix(".json").read_text())
            self.sizes = torch.tensor(meta["sizes"], dtype=torch.long)
            self.targets: list[Any] = meta["targets"]
            self.filenames: list[str | None] = meta["filenames"]
            self._open()
            return
        images = torch.empty(
            (count, 3, transform.side, transform.side), dtype=torch.uint8
        )
        self.sizes = torch.empty((count, 2), dtype=torch.long)
        self.targets = [None] * count
        self.filenames = [None] * count
        load = self._loader(dataset)

        def fill(index: int) -> None:
            canvas, target, filename = load(index)
            images[index] = canvas.image
            self.sizes[index, 0] = canvas.height
            self.sizes[index, 1] = canvas.width
            self.targets[index] = target
            self.filenames[index] = filename

        with ThreadPoolExecutor(self.num_threads) as pool:
            list(pool.map(fill, range(count)))
        if self.path is None:
            self.images = images.share_memory_()
        else:
            self._save(images)
            self._open()

    # ------------------------------------------------------------------ building
    def _loader(self, dataset: Any) -> Callable[[int], tuple[CanvasImage, Any, Any]]:
        transform = self.transform
        direct = isinstance(dataset, ImageFileDataset) and dataset.transform is None

        def load(index: int) -> tuple[CanvasImage, Any, Any]:
            if direct:
                try:
                    image = load_image(dataset.paths[index], decode_size=transform.size)
                    return (
                        transform(image),
                        int(dataset.targets[index]),
                        dataset.filenames[index],
                    )
                except UnreadableImageError:
                    pass  # the dataset substitutes the next readable image and warns
            item = dataset[index]
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise TypeError(
                    f"item {index} of the dataset must be (image, target[, filename]), "
                    f"got {type(item).__name__}"
                )
            image = item[0]
            canvas = image if isinstance(image, CanvasImage) else transform(image)
            target = item[1]
            if isinstance(target, Tensor) and target.ndim == 0:
                target = target.item()
            return canvas, target, item[2] if len(item) == 3 else None

        return load

    def _key(self, dataset: Any) -> str:
        digest = hashlib.sha256()
        t = self.transform
        digest.update(
            f"{type(dataset).__name__}|{len(dataset)}|{t.size}|{t.max_aspect}".encode()
        )
        paths: Sequence[str] | None = getattr(dataset, "paths", None)
        names = paths if paths is not None else getattr(dataset, "filenames", None)
        if names is None and hasattr(dataset, "get_filenames"):
            names = dataset.get_filenames()
        for name in names or []:
            digest.update(str(name).encode())
            try:
                stat = os.stat(name)
                digest.update(f"{stat.st_size}|{stat.st_mtime_ns}".encode())
            except OSError:
                pass
        return digest.hexdigest()[:16]

    def _save(self, images: Tensor) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "sizes": self.sizes.tolist(),
            "targets": self.targets,
            "filenames": self.filenames,
        }
        # Write both files under temporary names, then rename: readers never see half.
        for suffix, write in (
            (".json", lambda f: f.write(json.dumps(meta).encode())),
            (".npy", lambda f: np.save(f, images.numpy())),
        ):
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=suffix)
            with os.fdopen(fd, "wb") as file:
                write(file)
            os.replace(tmp, self.path.with_suffix(suffix))

    def _open(self) -> None:
        assert self.path is not None
        self._memmap = np.load(self.path, mmap_mode="r")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_memmap"] = None  # reopened in the worker, not pickled as an array
        return state

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.sizes.shape[0])

    def canvas(self, index: int) -> Tensor:
        """The (3, side, side) uint8 canvas of item ``index``."""
        if self.images is not None:
            return self.images[index]
        if self._memmap is None:
            self._open()
        assert self._memmap is not None
        return torch.from_numpy(np.array(self._memmap[index]))

    def __getitem__(self, index: int) -> tuple[CanvasImage, Any, str | None]:
        """``(CanvasImage, target, filename)`` of item ``index``."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for {n} images")
        index %= n
        height, width = (int(v) for v in self.sizes[index])
        canvas = CanvasImage(
            self.canvas(index), height, width, self.transform.view_size
        )
        return canvas, self.targets[index], self.filenames[index]

    def __repr__(self) -> str:
        where = f"memory-mapped {self.path}" if self.path is not None else "in memory"
        return f"{type(self).__name__}(images={len(self)}, {self.transform!r}, {where})"
