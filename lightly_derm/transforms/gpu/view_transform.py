"""A view pipeline that runs on the GPU for a whole batch, and its multi-view form.

Builds on the batched ops of :mod:`lightly_derm.transforms.gpu` and mirrors lightly's
view transforms (``BYOLView1Transform``, ``SimCLRViewTransform``) and lightly-derm's
(:class:`~lightly_derm.transforms.GraVISViewTransform`,
:class:`~lightly_derm.transforms.FGSSLView1Transform`) argument for argument, with the
same parameter distributions; :class:`GPUMultiViewTransform` plays lightly's
``MultiViewTransform``. Input: a batch of images (usually the uint8 canvases of a
:class:`~lightly_derm.data.CanvasBatch`) on any device; output: the views, made with
per-image random parameters in a fixed number of kernels, without Python loops over
images and without host synchronisations.

Order of the ops: geometry (crop, rotation, flips, one ``grid_sample``) → colour jitter
→ grayscale → Gaussian blur → solarisation → normalisation → Cutout. This is the CPU
transforms' order, since flips commute with the colour ops and the (symmetric,
reflect-padded) blur. Differences to the CPU transforms, all by design and documented
where they live: one bilinear interpolation for crop and rotation, without antialiasing
on down-scaling (:mod:`~lightly_derm.transforms.gpu.geometry`); float arithmetic
between the colour ops where PIL rounds to uint8 after each; a true Gaussian kernel
where lightly's ``GaussianBlur`` uses PIL's box-blur approximation
(:mod:`~lightly_derm.transforms.gpu.blur`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import Tensor

from lightly_derm.transforms.gpu._common import check_images, check_probability, rand
from lightly_derm.transforms.gpu.blur import default_kernel_size, gaussian_blur
from lightly_derm.transforms.gpu.color import (
    color_jitter,
    grayscale,
    sample_color_jitter,
    solarize,
)
from lightly_derm.transforms.gpu.cutout import cutout_mask, sample_cutout
from lightly_derm.transforms.gpu.geometry import (
    full_boxes,
    resized_crop,
    sample_resized_crop,
)
from lightly_derm.transforms.gpu.translate import gpu_view_kwargs, view_transforms
from lightly_derm.utils.validation import check_int

__all__ = ["GPUMultiViewTransform", "GPUViewTransform"]


class GPUViewTransform:
    """One kind of view, made for a whole image batch on its device.

    The arguments are those of lightly's ``BYOLView1Transform`` (and default to its
    values) plus GraVIS's Cutout and ``crop="resize"`` for FG-SSL's plain resize.

    Args:
        input_size: Side of the square views.
        crop: ``"random_resized"`` (RandomResizedCrop over the whole image, with
            ``min_scale``/``ratio``) or ``"resize"`` (the whole image resized to a square,
            ``Resize((input_size, input_size))``).
        min_scale: Smallest crop area, relative to the image.
        ratio: Range of the crop aspect ratio.
        rr_prob: Probability of a rotation.
        rr_degrees: ``d``: angle uniform in [−d, d]; ``(lo, hi)``: uniform in it;
            ``None``: 90° (lightly's convention).
        hf_prob: Probability of a horizontal flip.
        vf_prob: Probability of a vertical flip.
        flip_first: Flip before the rotation (lightly's transforms) instead of after it
            (GraVIS's).
        cj_prob: Probability of colour jitter.
        cj_strength: Multiplies the four jitter strengths.
        cj_bright: Brightness jitter.
        cj_contrast: Contrast jitter.
        cj_sat: Saturation jitter.
        cj_hue: Hue jitter.
        random_gray_scale: Probability of grayscale.
        gaussian_blur: Probability of Gaussian blur.
        sigmas: Range of the blur's σ in pixels.
        blur_kernel_size: Odd kernel side; default 2·⌈3σ_max⌉ + 1.
        solarization_prob: Probability of solarisation.
        solarization_threshold: Values ≥ this are inverted (128/255: lightly's 128).
        normalize: ``{"mean": ..., "std": ...}`` or ``None``.
        cutout_holes: Cutout squares per view (0: none).
        cutout_length: Side of a Cutout square; default round(32 · input_size / 224).
        cutout_value: Value written into the holes (after normalisation).
        rotation_fill: Value of the pixels a rotation brings in, before normalisation.

    Example:
        >>> import torch
        >>> from lightly_derm.transforms.gpu import GPUViewTransform
        >>> images = torch.randint(0, 256, (4, 3, 80, 80), dtype=torch.uint8)
        >>> GPUViewTransform(input_size=64)(images).shape
        torch.Size([4, 3, 64, 64])
    """

    def __init__(
        self,
        input_size: int = 224,
        crop: str = "random_resized",
        min_scale: float = 0.08,
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        hf_prob: float = 0.5,
        vf_prob: float = 0.0,
        flip_first: bool = True,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.2,
        cj_hue: float = 0.1,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 1.0,
        sigmas: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int | None = None,
        solarization_prob: float = 0.0,
        solarization_threshold: float = 128 / 255,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
        cutout_holes: int = 0,
        cutout_length: int | None = None,
        cutout_value: float = 0.0,
        rotation_fill: float = 0.0,
    ) -> None:
        check_int("input_size", input_size)
        if crop not in ("random_resized", "resize"):
            raise ValueError(f"crop must be 'random_resized' or 'resize', got {crop!r}")
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be 0 < min <= max, got {ratio}")
        if not 0 < sigmas[0] <= sigmas[1]:
            raise ValueError(f"sigmas must be 0 < min <= max, got {sigmas}")
        if blur_kernel_size is None:
            blur_kernel_size = default_kernel_size(sigmas[1])
        if blur_kernel_size < 1 or blur_kernel_size % 2 == 0:
            raise ValueError(
                f"blur_kernel_size must be a positive odd int, got {blur_kernel_size}"
            )
        if cutout_holes < 0:
            raise ValueError(f"cutout_holes must be >= 0, got {cutout_holes}")
        if cutout_length is None:
            cutout_length = round(32 * input_size / 224)
        self.input_size = input_size
        self.crop = crop
        self.scale = (float(min_scale), 1.0)
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.rr_prob = check_probability(rr_prob, "rr_prob")
        if rr_degrees is None:
            self.rr_range: tuple[float, float] | None = None
        elif isinstance(rr_degrees, (int, float)):
            self.rr_range = (-float(rr_degrees), float(rr_degrees))
        else:
            self.rr_range = (float(rr_degrees[0]), float(rr_degrees[1]))
        self.hf_prob = check_probability(hf_prob, "hf_prob")
        self.vf_prob = check_probability(vf_prob, "vf_prob")
        self.flip_first = bool(flip_first)
        self.cj_prob = check_probability(cj_prob, "cj_prob")
        self.jitter: tuple[float, float, float, float] = (
            cj_strength * cj_bright,
            cj_strength * cj_contrast,
            cj_strength * cj_sat,
            cj_strength * cj_hue,
        )
        if any(v < 0 for v in self.jitter) or self.jitter[3] > 0.5:
            raise ValueError(
                f"colour jitter strengths must be >= 0 and hue <= 0.5, got {self.jitter}"
            )
        self.gray_prob = check_probability(random_gray_scale, "random_gray_scale")
        self.blur_prob = check_probability(gaussian_blur, "gaussian_blur")
        self.sigmas = (float(sigmas[0]), float(sigmas[1]))
        self.blur_kernel_size = int(blur_kernel_size)
        self.solarize_prob = check_probability(solarization_prob, "solarization_prob")
        self.solarize_threshold = float(solarization_threshold)
        self.normalize = (
            None
            if not normalize
            else (tuple(normalize["mean"]), tuple(normalize["std"]))
        )
        self.cutout_holes = int(cutout_holes)
        self.cutout_length = int(cutout_length)
        self.cutout_value = float(cutout_value)
        self.rotation_fill = float(rotation_fill)

    @classmethod
    def from_view_transform(
        cls, view: Any, ignore: Sequence[type] = ()
    ) -> GPUViewTransform:
        """The GPU form of one CPU view transform, read from its objects.

        See :func:`~lightly_derm.transforms.gpu.gpu_view_kwargs` for what is
        translated; ``ignore`` lists transform types to leave out on purpose.

        Raises:
            ValueError: (:class:`~lightly_derm.transforms.gpu.UntranslatableTransformError`)
                naming the transform that has no GPU form.

        Example:
            >>> from lightly.transforms import BYOLView2Transform
            >>> from lightly_derm.transforms.gpu import GPUViewTransform
            >>> view = GPUViewTransform.from_view_transform(BYOLView2Transform(input_size=64))
            >>> view.blur_prob, view.solarize_prob
            (0.1, 0.2)
        """
        return cls(**gpu_view_kwargs(view, ignore))

    def __repr__(self) -> str:
        parts = [
            f"input_size={self.input_size}",
            f"crop={self.crop!r}",
            f"scale={self.scale}",
            f"rr_prob={self.rr_prob}",
            f"rr_range={self.rr_range}",
            f"hf_prob={self.hf_prob}",
            f"vf_prob={self.vf_prob}",
            f"cj_prob={self.cj_prob}",
            f"jitter={self.jitter}",
            f"gray={self.gray_prob}",
            f"blur={self.blur_prob}",
            f"sigmas={self.sigmas}",
            f"solarize={self.solarize_prob}",
            f"cutout={self.cutout_holes}x{self.cutout_length}",
        ]
        return f"{type(self).__name__}({', '.join(parts)})"

    def _normalize_tensors(
        self, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """−mean/std and 1/std (1, 3, 1, 1), made once per device (no copy per batch)."""
        key = (str(device), dtype)
        cache = self.__dict__.setdefault("_normalize_cache", {})
        if key not in cache:
            assert self.normalize is not None
            mean, std = (
                torch.tensor(v, dtype=torch.float64).view(1, -1, 1, 1)
                for v in self.normalize
            )
            cache[key] = tuple(
                t.to(device=device, dtype=dtype) for t in (-mean / std, 1 / std)
            )
        return cache[key]

    # ------------------------------------------------------------------ steps
    def geometry(
        self,
        images: Tensor,
        sizes: Tensor | None,
        num_views: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Crops, rotations and flips: (B, V, 3, S, S) float in [0, 1]."""
        n, _, height, width = images.shape
        device = images.device
        if sizes is None:
            heights = torch.full((n,), height, device=device)
            widths = torch.full((n,), width, device=device)
        else:
            heights, widths = sizes.to(device).unbind(1)
        if self.crop == "resize":
            boxes = full_boxes(heights, widths, num_views)
        else:
            boxes = sample_resized_crop(
                heights, widths, self.scale, self.ratio, num_views, generator
            )
        u = rand((n, num_views, 4), generator, device)
        angles = None
        if self.rr_prob > 0:
            if self.rr_range is None:
                angle = torch.full_like(u[..., 0], 90.0)
            else:
                low, high = self.rr_range
                angle = low + (high - low) * u[..., 1]
            angles = torch.where(
                u[..., 0] < self.rr_prob, angle, torch.zeros_like(angle)
            )
        hflip = u[..., 2] < self.hf_prob if self.hf_prob > 0 else None
        vflip = u[..., 3] < self.vf_prob if self.vf_prob > 0 else None
        return resized_crop(
            images,
            boxes,
            self.input_size,
            angles=angles,
            hflip=hflip,
            vflip=vflip,
            fill=self.rotation_fill,
            flip_first=self.flip_first,
        )

    def color(self, views: Tensor, generator: torch.Generator | None) -> Tensor:
        """Jitter, grayscale, blur and solarisation of (N, 3, S, S) views in [0, 1]."""
        n = views.shape[0]
        device = views.device
        x = views
        if self.cj_prob > 0 and any(v > 0 for v in self.jitter):
            brightness, contrast, saturation, hue = self.jitter
            factors, order = sample_color_jitter(
                n,
                brightness,
                contrast,
                saturation,
                hue,
                p=self.cj_prob,
                device=device,
                generator=generator,
            )
            ops = (brightness > 0, contrast > 0, saturation > 0, hue > 0)
            x = color_jitter(x, factors, order, ops=ops)
        u = rand((n, 4), generator, device)
        if self.gray_prob > 0:
            x = grayscale(x, u[:, 0] < self.gray_prob)
        if self.blur_prob > 0:
            low, high = self.sigmas
            sigma = low + (high - low) * u[:, 1]
            apply = True if self.blur_prob >= 1 else u[:, 2] < self.blur_prob
            x = gaussian_blur(x, sigma, self.blur_kernel_size, apply)
        if self.solarize_prob > 0:
            x = solarize(x, self.solarize_threshold, u[:, 3] < self.solarize_prob)
        return x

    def finish(
        self,
        views: Tensor,
        generator: torch.Generator | None,
        out: Tensor | None = None,
    ) -> Tensor:
        """Normalisation and Cutout of (…, 3, S, S) float views.

        Normalisation is one fused multiply-add, x·(1/std) − mean/std, written straight
        into ``out`` (any dtype and strides of the views' shape, e.g. a bf16
        channels-last slot of the batch) or in place.
        """
        target = views if out is None else out
        if target.shape != views.shape:
            raise ValueError(
                f"out must be {tuple(views.shape)}, got {tuple(target.shape)}"
            )
        if self.normalize is not None:
            shift, scale = self._normalize_tensors(views.device, views.dtype)
            torch.addcmul(shift, views, scale, out=target)
        elif out is not None:
            out.copy_(views)
        if self.cutout_holes > 0 and self.cutout_length > 0:
            height, width = views.shape[-2:]
            n = views[..., 0, 0, 0].numel()
            centres = sample_cutout(
                n, height, width, self.cutout_holes, views.device, generator
            )
            mask = cutout_mask(centres, self.cutout_length, height, width)
            target.masked_fill_(
                mask.view(*views.shape[:-3], 1, height, width), self.cutout_value
            )
        return target

    def __call__(
        self,
        images: Tensor,
        sizes: Tensor | None = None,
        num_views: int = 1,
        generator: torch.Generator | None = None,
        out: Tensor | None = None,
    ) -> Tensor:
        """Makes ``num_views`` views of every image.

        Args:
            images: (B, C, H, W) uint8 (0…255) or float (0…1) images, C = 3 (or 1,
                repeated).
            sizes: Optional (B, 2) (height, width) of each image within its canvas
                (the top-left region); default the whole tensor.
            num_views: Views per image, each with its own parameters.
            generator: Random generator on the images' device (default: global).
            out: Optional (B, V, C, S, S) tensor (any dtype and strides) to write the
                views into.

        Returns:
            Float views (B, C, S, S) for one view, (B, V, C, S, S) for several
            (image-major); float32 (float64 for float64 input); or ``out``.
        """
        check_images(images)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[1] != 3:
            raise ValueError(
                f"images must have 1 or 3 channels, got shape {tuple(images.shape)}"
            )
        n = images.shape[0]
        size = self.input_size
        if out is not None and tuple(out.shape) != (n, num_views, 3, size, size):
            raise ValueError(
                f"out must be {(n, num_views, 3, size, size)}, got {tuple(out.shape)}"
            )
        with torch.autocast(images.device.type, enabled=False):
            views = self.geometry(images, sizes, num_views, generator)
            flat = views.view(n * num_views, *views.shape[2:])
            flat = self.color(flat, generator)
            if out is not None:
                # The coloured views (color() returns new tensors), shaped as ``out``.
                self.finish(flat.view(views.shape), generator, out)
                return out
            flat = self.finish(flat, generator)
        result = flat.view(n, num_views, *flat.shape[1:])
        return result if num_views > 1 else result[:, 0]


class GPUMultiViewTransform:
    """Several GPU view transforms on one image batch: lightly's ``MultiViewTransform``.

    View k of every image comes from ``transforms[k]``; consecutive entries that are
    the same object (``[view] * K``, as GraVIS) run as one pass over B·K views. The
    result is one image-major tensor (B·K, C, S, S) — the ``views`` of a
    :class:`~lightly_derm.data.GroupedBatch` — in the requested dtype and memory format.

    Args:
        transforms: One :class:`GPUViewTransform` per view; all with one ``input_size``.

    Example:
        >>> import torch
        >>> from lightly_derm.transforms.gpu import GPUMultiViewTransform, GPUViewTransform
        >>> view = GPUViewTransform(input_size=32)
        >>> images = torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8)
        >>> GPUMultiViewTransform([view, view])(images).shape   # image-major
        torch.Size([8, 3, 32, 32])
    """

    def __init__(self, transforms: Sequence[GPUViewTransform]) -> None:
        transforms = list(transforms)
        if not transforms or not all(
            isinstance(t, GPUViewTransform) for t in transforms
        ):
            raise TypeError("transforms must be a non-empty list of GPUViewTransform")
        sizes = {t.input_size for t in transforms}
        if len(sizes) != 1:
            raise ValueError(
                f"all views need one input_size to batch them, got {sorted(sizes)}"
            )
        self.transforms = transforms
        self.input_size = transforms[0].input_size
        # Runs of the same transform object: (transform, first view, number of views).
        self.groups: list[tuple[GPUViewTransform, int, int]] = []
        for k, transform in enumerate(transforms):
            if self.groups and self.groups[-1][0] is transform:
                t, first, count = self.groups[-1]
                self.groups[-1] = (t, first, count + 1)
            else:
                self.groups.append((transform, k, 1))

    @classmethod
    def from_view_transform(
        cls, transform: Any, ignore: Sequence[type] = ()
    ) -> GPUMultiViewTransform:
        """The GPU pipeline of a CPU multi-view transform: one GPU view per CPU view.

        ``transform`` is what a method's ``augment="cpu"`` path runs per image:
        lightly's ``MultiViewTransform`` (``SimCLRTransform``, ``BYOLTransform``, …,
        lightly-derm's :class:`~lightly_derm.transforms.GraVISTransform` and
        :class:`~lightly_derm.transforms.FGSSLTransform`), optionally wrapped in
        :class:`~lightly_derm.transforms.RGBInput`, or a single view transform. Each
        view is read by :meth:`GPUViewTransform.from_view_transform`; views that
        translate to the same arguments share one object, so that they run as one
        pass (GraVIS's K views).

        Raises:
            ValueError: (:class:`~lightly_derm.transforms.gpu.UntranslatableTransformError`)
                naming the view and the transform that has no GPU form.

        Example:
            >>> from lightly.transforms import SimCLRTransform
            >>> from lightly_derm.transforms.gpu import GPUMultiViewTransform
            >>> pipeline = GPUMultiViewTransform.from_view_transform(
            ...     SimCLRTransform(input_size=32)
            ... )
            >>> pipeline.num_views, len(pipeline.groups), pipeline.input_size
            (2, 1, 32)
        """
        views: list[GPUViewTransform] = []
        made: list[tuple[dict[str, Any], GPUViewTransform]] = []
        name = type(transform).__name__
        for k, view in enumerate(view_transforms(transform)):
            kwargs = gpu_view_kwargs(view, ignore, where=f"{name} view {k}")
            same = next((t for args, t in made if args == kwargs), None)
            if same is None:
                same = GPUViewTransform(**kwargs)
                made.append((kwargs, same))
            views.append(same)
        return cls(views)

    @property
    def num_views(self) -> int:
        """K, the views per image."""
        return len(self.transforms)

    def __repr__(self) -> str:
        inner = ", ".join(f"{count}× {t!r}" for t, _, count in self.groups)
        return f"{type(self).__name__}([{inner}])"

    def __call__(
        self,
        images: Tensor,
        sizes: Tensor | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> Tensor:
        """The K views of every image, image-major (B·K, C, S, S).

        Args:
            images: (B, C, H, W) uint8 or float images (e.g. ``CanvasBatch.images``).
            sizes: Optional (B, 2) image sizes within the canvases.
            generator: Random generator on the images' device.
            dtype: Output dtype (e.g. ``torch.bfloat16`` under bf16 mixed precision);
                default float32 (float64 for float64 input). The views are computed
                in float32 either way.
            memory_format: ``torch.channels_last`` or ``torch.contiguous_format``
                (of the (B·K, C, S, S) result).
        """
        check_images(images)
        n = images.shape[0]
        views, size = self.num_views, self.input_size
        if dtype is None:
            dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        shape = (n * views, 3, size, size)
        if memory_format not in (torch.channels_last, torch.contiguous_format):
            raise ValueError(
                "memory_format must be torch.channels_last or torch.contiguous_format, "
                f"got {memory_format}"
            )
        out = torch.empty(
            shape, dtype=dtype, device=images.device, memory_format=memory_format
        )
        slots = out.unflatten(0, (n, views))  # a view: (B, K, C, S, S)
        for transform, first, count in self.groups:
            transform(
                images,
                sizes,
                num_views=count,
                generator=generator,
                out=slots[:, first : first + count],
            )
        return out
