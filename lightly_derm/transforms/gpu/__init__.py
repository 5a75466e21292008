"""Batched view augmentation on the GPU: per-image random parameters, no loops, no syncs.

The CPU side (:class:`CanvasTransform`) resizes every image once onto a fixed-size uint8
canvas; on the device, :class:`GPUViewTransform` makes the random views of a whole batch
— crop, rotation and flips as one ``grid_sample``, colour jitter, grayscale, blur,
solarisation, normalisation and Cutout as a few elementwise kernels — with the
distributions of lightly's and lightly-derm's CPU view transforms.
:class:`GPUMultiViewTransform` is the multi-view form; both are derived from a CPU view
transform with ``from_view_transform`` (:mod:`~lightly_derm.transforms.gpu.translate`
reads lightly's and lightly-derm's transforms). Methods select the path with
``augment="gpu"`` (see :class:`~lightly_derm.methods.SSLMethod`).

The functional ops take fixed per-image parameters and equal torchvision's
``transforms.v2.functional`` applied image by image (tested); the samplers draw those
parameters as torchvision's transforms do.
"""

from lightly_derm.transforms.gpu.blur import (
    default_kernel_size,
    gaussian_blur,
    gaussian_kernels,
)
from lightly_derm.transforms.gpu.canvas import (
    CanvasImage,
    CanvasTransform,
    default_canvas_size,
)
from lightly_derm.transforms.gpu.color import (
    JITTER_OPS,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    grayscale,
    rgb_to_grayscale,
    sample_color_jitter,
    solarize,
)
from lightly_derm.transforms.gpu.cutout import cutout, cutout_mask, sample_cutout
from lightly_derm.transforms.gpu.geometry import (
    full_boxes,
    resized_crop,
    sample_resized_crop,
)
from lightly_derm.transforms.gpu.translate import (
    UntranslatableTransformError,
    gpu_view_kwargs,
    view_transforms,
)
from lightly_derm.transforms.gpu.view_transform import (
    GPUMultiViewTransform,
    GPUViewTransform,
)

__all__ = [
    "JITTER_OPS",
    "CanvasImage",
    "CanvasTransform",
    "GPUMultiViewTransform",
    "GPUViewTransform",
    "UntranslatableTransformError",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "color_jitter",
    "cutout",
    "cutout_mask",
    "default_canvas_size",
    "default_kernel_size",
    "full_boxes",
    "gaussian_blur",
    "gaussian_kernels",
    "gpu_view_kwargs",
    "grayscale",
    "resized_crop",
    "rgb_to_grayscale",
    "sample_color_jitter",
    "sample_cutout",
    "sample_resized_crop",
    "solarize",
    "view_transforms",
]
