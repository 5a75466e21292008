"""MONAI dictionary-transform forms of lightly-derm's transforms.

Builds on :class:`monai.transforms.RandomizableTransform` (local ``np.random.RandomState``
in ``self.R``, honoured by ``set_random_state`` and by ``Compose.set_random_state``) and
:class:`monai.transforms.MapTransform` (``keys``, ``allow_missing_keys``); the tiles are
moved by the same core as :func:`~lightly_derm.transforms.jigsaw_shuffle`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type

from lightly_derm.transforms.jigsaw import (
    _check_grids,
    _permute_tiles,
    check_grid,
    check_permutations,
    cycle_from_order,
)

__all__ = ["RandHierarchicalJigsawd"]


class RandHierarchicalJigsawd(RandomizableTransform, MapTransform):
    """Adds FG-SSL's jigsaw views of ``keys`` to a MONAI data dictionary.

    FG-SSL (Park and Ryu, arXiv:2308.05770): for every grid n in ``grids``, the image
    cut into n × n equal tiles with the tiles shuffled by a random permutation. The
    views are written to new keys (``key_template``), the input stays; with
    ``permutation_key_template`` the (n²,) int64 permutations are stored as well.
    One permutation is drawn per grid and call and shared by all ``keys``, as MONAI's
    random spatial transforms do, so an image and its mask get the same puzzle.

    Randomness comes only from ``self.R`` (a ``numpy.random.RandomState``), so
    ``set_random_state(seed)`` — directly or through ``Compose.set_random_state`` or
    ``monai.data.Dataset`` workers — makes the puzzles reproducible.

    Args:
        keys: Keys of channel-first 2-D images (C, H, W): tensors, MetaTensors or numpy
            arrays. Every grid must divide H and W.
        grids: Tiles per side, one view per grid (authors' ISIC setting (16, 8, 4)).
        prob: Probability of shuffling at a call; otherwise the jigsaw keys get
            unshuffled copies (and identity permutations), so the keys always exist.
        exclude_identity: Redraw permutations that leave the image unchanged (the
            result is uniform over the other permutations).
        permutations: How the permutations are drawn, as in
            :func:`~lightly_derm.transforms.random_tile_permutations`: ``"uniform"``
            (``self.R.permutation``), ``"derangement"`` (uniform permutations redrawn
            until no tile stays in place) or ``"cycle"`` (PMG's and FG-SSL's: the
            uniform ``self.R.permutation`` taken as the visiting order of PMG's
            tile-swap loop, :func:`~lightly_derm.transforms.cycle_from_order`).
        key_template: Name of the output key, formatted with ``key`` and ``grid``.
        permutation_key_template: Name of the permutation key, formatted likewise;
            ``None`` stores no permutations.
        allow_missing_keys: Skip missing keys instead of raising ``KeyError``.

    Raises:
        ValueError: Bad grids (at construction); an image that is not (C, H, W), or a
            grid that does not divide its sides (at call).

    Example:
        >>> import torch
        >>> from monai.transforms import Compose, ScaleIntensityd
        >>> from lightly_derm.transforms import RandHierarchicalJigsawd
        >>> transform = Compose([
        ...     ScaleIntensityd(keys="image"),
        ...     RandHierarchicalJigsawd(keys="image", grids=(8, 4)),
        ... ])
        >>> _ = transform.set_random_state(seed=0)
        >>> out = transform({"image": torch.rand(3, 64, 64)})
        >>> sorted(out)
        ['image', 'image_jigsaw_4', 'image_jigsaw_8']
    """

    def __init__(
        self,
        keys: KeysCollection,
        grids: Sequence[int] = (16, 8, 4),
        prob: float = 1.0,
        exclude_identity: bool = False,
        key_template: str = "{key}_jigsaw_{grid}",
        permutation_key_template: str | None = None,
        allow_missing_keys: bool = False,
        permutations: str = "uniform",
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.grids = _check_grids(grids)
        if exclude_identity and 1 in self.grids:
            raise ValueError(
                f"exclude_identity needs every grid >= 2, got grids {self.grids}"
            )
        for template, name in (
            (key_template, "key_template"),
            (permutation_key_template, "permutation_key_template"),
        ):
            if template is not None and "{grid}" not in template:
                raise ValueError(
                    f"{name} must contain '{{grid}}' so the grids get different keys, "
                    f"got {template!r}"
                )
        self.exclude_identity = exclude_identity
        self.permutations = check_permutations(permutations, self.grids)
        self.key_template = key_template
        self.permutation_key_template = permutation_key_template
        self._permutations: list[np.ndarray] = []

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandHierarchicalJigsawd:
        """Seeds ``self.R``; returns ``self``."""
        super().set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws whether to shuffle and one permutation per grid from ``self.R``."""
        super().randomize(None)
        self._permutations = []
        for grid in self.grids:
            num_tiles = grid * grid
            identity = np.arange(num_tiles)
            perm = self.R.permutation(num_tiles)
            if self.permutations == "cycle":
                order = torch.from_numpy(perm).view(1, -1)
                perm = cycle_from_order(order)[0].numpy()
            elif self.permutations == "derangement":
                while (perm == identity).any():
                    perm = self.R.permutation(num_tiles)
            while self.exclude_identity and np.array_equal(perm, identity):
                perm = self.R.permutation(num_tiles)
            if not self._do_transform:
                perm = np.arange(num_tiles)
            self._permutations.append(perm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Returns a copy of ``data`` with the jigsaw views (and permutations) added."""
        d = dict(data)
        self.randomize(None)
        for key in self.key_iterator(d):
            image = d[key]
            tensor = image.as_tensor() if hasattr(image, "as_tensor") else image
            tensor = torch.as_tensor(tensor)
            if tensor.ndim != 3:
                raise ValueError(
                    f"RandHierarchicalJigsawd: {key!r} must be a channel-first 2-D image "
                    f"(C, H, W), got shape {tuple(tensor.shape)}"
                )
            for grid, perm in zip(self.grids, self._permutations, strict=True):
                check_grid(grid, tensor.shape[-2], tensor.shape[-1])
                permutation = torch.as_tensor(perm, device=tensor.device).view(1, -1)
                shuffled = _permute_tiles(tensor.unsqueeze(0), grid, permutation)[0]
                out, *_ = convert_to_dst_type(shuffled, dst=image)
                d[self.key_template.format(key=key, grid=grid)] = out
                if self.permutation_key_template is not None:
                    d[self.permutation_key_template.format(key=key, grid=grid)] = (
                        torch.as_tensor(perm, dtype=torch.long)
                    )
        return d
