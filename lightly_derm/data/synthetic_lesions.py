"""Synthetic dermoscopy-like lesion images with masks, generated on the fly.

The built-in demo and test data of lightly-derm: **synthetic** images, not patient
data, made procedurally with NumPy and Pillow's ``ImageDraw``. Each image shows skin (a
skin tone with low-frequency texture, illumination gradient, sensor noise and
hair-like strokes) seen through a dermoscope (circular field of view, vignetting), and
one lesion: an irregular blob whose border is a random Fourier series in polar
coordinates, coloured with pigment-network lines, colour variegation and dots. The
lesion's binary mask comes with it.

The class sets the *statistics* of the lesion, loosely after the dermoscopy "ABCD" cues
(asymmetry, border, colour, dermoscopic structures) of the lesions they imitate. The
first three classes (the demo's) share one distribution of colour and size — the lesion's
brightness and tint vary per image whatever its class — and differ in *structure*,
which survives the crops, colour jitter and grey scale of self-supervised views:

- ``nevus-like``: round, smooth border, a regular pigment network;
- ``melanoma-like``: asymmetric, irregular blurred border, distorted network, radial
  streaks and dark dots at the periphery;
- ``seborrheic-keratosis-like``: sharp "stuck-on" border, no network, bright milia-like
  spots, dark comedo-like openings and cerebriform furrows;
- ``basal-cell-carcinoma-like``: pinkish, branching red vessel lines, blue-grey ovoid nests;
- ``vascular-like``: small, red-purple with darker red lacunae.

Every parameter is drawn around its class mean with a spread that makes neighbouring
classes overlap, and skin tone, hair, lighting, size and position vary independently of
the class, so the classes are learnable but not trivially separable
(``class_separation`` scales the distance between class means). Everything is
deterministic per ``(seed, split, index)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

#: The class names, in target order; ``num_classes`` takes the first ones.
SYNTHETIC_CLASSES: tuple[str, ...] = (
    "nevus-like",
    "melanoma-like",
    "seborrheic-keratosis-like",
    "basal-cell-carcinoma-like",
    "vascular-like",
)
_SPLITS = {"train": 0, "val": 1, "test": 2}

# Per-class means of the continuous lesion parameters (see _ClassParams), one row per
# class in SYNTHETIC_CLASSES order, and the spread of each parameter around its mean.
_PARAM_NAMES = (
    "radius",  # mean lesion radius, as a fraction of the half image width
    "irregularity",  # amplitude of the border's high harmonics
    "asymmetry",  # amplitude of the border's 1st and 2nd harmonics
    "edge",  # width of the blurred border
    "red",  # lesion base colour
    "green",
    "blue",
    "variegation",  # strength of the colour patches
    "network",  # pigment-network contrast
    "warp",  # distortion of the network
    "fissures",  # contrast of the cerebriform fissures (curved furrows)
    "dark_dots",  # expected number of dark dots / globules
    "bright_dots",  # expected number of bright (milia-like) dots
    "nests",  # expected number of blue-grey ovoid nests
    "vessels",  # expected number of vessel branches
    "lacunae",  # expected number of red lacunae
    "streaks",  # expected number of radial streaks at the periphery
)
# fmt: off
_MEANS = np.array(
    [
        # rad  irr   asym  edge  red   green blue  var   net   warp  fiss  dd   bd   nest ves  lac  str
        [0.62, 0.02, 0.04, 0.05, 0.46, 0.31, 0.22, 0.15, 0.60, 0.10, 0.00, 0.5, 0.2, 0.1, 0.1, 0.0, 0.0],  # noqa: E501
        [0.62, 0.14, 0.18, 0.07, 0.46, 0.31, 0.22, 0.15, 0.30, 1.00, 0.00, 8.0, 0.3, 0.3, 0.3, 0.1, 10.],  # noqa: E501
        [0.62, 0.05, 0.08, 0.02, 0.46, 0.31, 0.22, 0.15, 0.00, 0.30, 0.60, 3.0, 10., 0.1, 0.2, 0.0, 0.0],  # noqa: E501
        [0.48, 0.07, 0.10, 0.05, 0.74, 0.52, 0.50, 0.15, 0.03, 0.30, 0.00, 0.5, 0.5, 3.0, 3.0, 0.2, 0.0],  # noqa: E501
        [0.40, 0.03, 0.06, 0.04, 0.60, 0.20, 0.28, 0.12, 0.00, 0.20, 0.00, 0.5, 0.2, 0.2, 0.3, 6.0, 0.0],  # noqa: E501
    ],
    dtype=np.float64,
)
_SPREAD = np.array(
    [0.12, 0.04, 0.06, 0.025, 0.06, 0.05, 0.04, 0.10, 0.12, 0.25, 0.15, 0, 0, 0, 0, 0, 0],  # noqa: E501
    dtype=np.float64,
)
# fmt: on
_COUNT_PARAMS = slice(11, 17)  # Poisson means, not Gaussian

# Colours of the variegation patches (per class: up to three); the three brown classes
# share theirs, so that colour does not tell them apart.
_BROWN_PATCHES = ((0.22, 0.14, 0.11), (0.60, 0.44, 0.32))
_PATCHES = (
    _BROWN_PATCHES,
    _BROWN_PATCHES,
    _BROWN_PATCHES,
    ((0.42, 0.45, 0.56), (0.86, 0.66, 0.66)),
    ((0.42, 0.08, 0.16), (0.75, 0.30, 0.40)),
)
_SKIN_LIGHT = np.array([0.94, 0.78, 0.68])
_SKIN_DARK = np.array([0.45, 0.30, 0.22])


class LesionSample(NamedTuple):
    """One synthetic lesion: image, mask and label.

    Attributes:
        image: The PIL RGB image.
        mask: (H, W) uint8, 1 inside the lesion, 0 outside.
        label: The class index.
    """

    image: Image.Image
    mask: np.ndarray
    label: int


def _interpolation_matrix(size: int, grid: int) -> np.ndarray:
    """(size, grid) matrix that linearly interpolates a grid of values to size pixels."""
    positions = np.linspace(0, grid - 1, size)
    lower = np.clip(np.floor(positions).astype(int), 0, grid - 2)
    frac = positions - lower
    matrix = np.zeros((size, grid), dtype=np.float32)
    matrix[np.arange(size), lower] = 1 - frac
    matrix[np.arange(size), lower + 1] = frac
    return matrix


class SyntheticLesions(Dataset[Any]):
    """Synthetic dermoscopy-like lesion images, generated on the fly (see the module).

    A map-style dataset like lightly's ``LightlyDataset``: items are
    ``(transform(image), target, filename)`` with a PIL RGB image of
    ``image_size`` × ``image_size`` pixels, the class index ``index % num_classes``
    (classes are balanced) and the filename ``"synthetic_<index:06d>.png"``. With
    ``return_mask=True`` an item is the dict ``{"image", "mask", "target", "filename"}``
    with ``image`` a ``tv_tensors.Image`` (3, H, W) uint8 and ``mask`` a
    ``tv_tensors.Mask`` (1, H, W) uint8 in {0, 1}, passed as a whole to ``transform``,
    so torchvision v2 transforms move image and mask together and MONAI dictionary
    transforms (``keys=["image", "mask"]``) work on it too.

    Generation costs 1–1.4 ms of CPU per 64-pixel image (see
    ``benchmarks/results/data_loading_cpu.md``). The same ``(seed, split, index)``
    always gives the same image, in any process; the ``split`` names give disjoint
    streams, so ``split="val"`` is held-out data of the same distribution.

    Args:
        num_images: The dataset length.
        image_size: The side of the square images, in pixels (≥ 16).
        num_classes: How many of :data:`SYNTHETIC_CLASSES` to use (1 to 5).
        seed: The random seed.
        transform: Applied to the PIL image (or to the dict, with ``return_mask``);
            ``None`` yields it unchanged.
        return_mask: Yield dicts with image and mask (see above).
        split: ``"train"``, ``"val"`` or ``"test"``: independent image streams.
        class_separation: Scales the distance of the class means from their average:
            ``0`` makes the classes indistinguishable, ``1`` is the default difficulty,
            larger is easier.

    Attributes:
        classes: The class names, ``SYNTHETIC_CLASSES[:num_classes]``.
        targets: (N,) int64 array of the class of every item (without rendering).

    Example:
        >>> from lightly_derm.data import SyntheticLesions
        >>> dataset = SyntheticLesions(num_images=8, image_size=64, seed=0)
        >>> image, target, filename = dataset[1]
        >>> image.size, target, dataset.classes[target], filename
        ((64, 64), 1, 'melanoma-like', 'synthetic_000001.png')
        >>> sample = dataset.sample(1)
        >>> sample.mask.shape, sample.mask.dtype.name, bool(0 < sample.mask.mean() < 1)
        ((64, 64), 'uint8', True)
    """

    def __init__(
        self,
        num_images: int = 1000,
        image_size: int = 64,
        num_classes: int = 3,
        seed: int = 0,
        transform: Callable[[Any], Any] | None = None,
        return_mask: bool = False,
        split: str = "train",
        class_separation: float = 1.0,
    ) -> None:
        for name, value, low in (
            ("num_images", num_images, 1),
            ("image_size", image_size, 16),
            ("num_classes", num_classes, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int ≥ {low}, got {value!r}")
        if num_classes > len(SYNTHETIC_CLASSES):
            raise ValueError(
                f"num_classes must be at most {len(SYNTHETIC_CLASSES)} "
                f"({', '.join(SYNTHETIC_CLASSES)}), got {num_classes}"
            )
        if split not in _SPLITS:
            raise ValueError(
                f"split must be one of {', '.join(_SPLITS)}, got {split!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not class_separation >= 0:
            raise ValueError(f"class_separation must be ≥ 0, got {class_separation!r}")
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform must be callable or None, got {type(transform).__name__}"
            )
        self.num_images = num_images
        self.image_size = image_size
        self.seed = seed
        self.split = split
        self.transform = transform
        self.return_mask = return_mask
        self.class_separation = float(class_separation)
        self.classes = list(SYNTHETIC_CLASSES[:num_classes])
        self.targets: np.ndarray = np.arange(num_images, dtype=np.int64) % num_classes
        means = _MEANS[:num_classes]
        center = means.mean(axis=0, keepdims=True)
        self._means = center + self.class_separation * (means - center)
        size = image_size
        axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
        self._x, self._y = np.meshgrid(axis, axis)
        self._r0 = np.sqrt(self._x**2 + self._y**2)
        self._interp = {g: _interpolation_matrix(size, g) for g in (5, 9)}
        grain = np.random.default_rng([seed, 7919]).standard_normal(
            (2 * size, 2 * size, 3)
        )
        self._grain = (0.012 * grain).astype(np.float32)

    def __len__(self) -> int:
        return self.num_images

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    def get_filenames(self) -> list[str]:
        """``"synthetic_<index:06d>.png"`` for every item."""
        return [f"synthetic_{i:06d}.png" for i in range(self.num_images)]

    def __getitem__(self, index: int) -> Any:
        """``(transform(image), target, filename)``, or a dict with ``return_mask``."""
        image, mask, label = self.sample(index)
        filename = f"synthetic_{index % self.num_images:06d}.png"
        if not self.return_mask:
            if self.transform is not None:
                image = self.transform(image)
            return image, label, filename
        from torchvision import tv_tensors
        from torchvision.transforms.v2.functional import pil_to_tensor

        item: dict[str, Any] = {
            "image": tv_tensors.Image(pil_to_tensor(image)),
            "mask": tv_tensors.Mask(np.ascontiguousarray(mask[None])),
            "target": label,
            "filename": filename,
        }
        return self.transform(item) if self.transform is not None else item

    def sample(self, index: int) -> LesionSample:
        """The image, mask and label of item ``index``, without transform."""
        n = self.num_images
        if isinstance(index, bool) or not -n <= index < n:
            raise IndexError(f"index {index} is out of range for {n} synthetic images")
        index %= n
        label = int(self.targets[index])
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], index])
        image, mask = self._render(rng, label)
        return LesionSample(image, mask, label)

    def _noise(self, rng: np.random.Generator, grid: int) -> np.ndarray:
        """Smooth noise of about unit standard deviation, (S, S) float32."""
        matrix = self._interp[grid]
        return matrix @ rng.standard_normal((grid, grid), dtype=np.float32) @ matrix.T

    def _render(
        self, rng: np.random.Generator, label: int
    ) -> tuple[Image.Image, np.ndarray]:
        size = self.image_size
        x, y = self._x, self._y
        # Python floats throughout: NumPy scalars would promote float32 arrays to float64.
        drawn = self._means[label] + rng.standard_normal(len(_PARAM_NAMES)) * _SPREAD
        p = dict(zip(_PARAM_NAMES, drawn.tolist(), strict=True))
        counts = rng.poisson(np.maximum(self._means[label, _COUNT_PARAMS], 0.0))
        dark_dots, bright_dots, nests, vessels, lacunae, streaks = (
            int(c) for c in counts
        )

        # Skin: tone, low-frequency texture, illumination gradient.
        tone = float(rng.uniform(0.0, 1.0)) ** 1.5
        skin = _SKIN_LIGHT + tone * (_SKIN_DARK - _SKIN_LIGHT) + rng.normal(0, 0.02, 3)
        texture = 1.0 + 0.05 * self._noise(rng, 9)
        image = skin.astype(np.float32)[None, None, :] * texture[..., None]

        # Lesion shape: r(θ) = R (1 + Σ_k Re(c_k e^{ikθ})), evaluated with Horner's rule
        # on z = e^{iθ} (no trigonometric calls per harmonic).
        cx, cy = rng.normal(0.0, 0.12, 2).tolist()
        angle = float(rng.uniform(0.0, 2 * math.pi))
        stretch = math.exp(rng.normal(0.0, 0.15))
        dx, dy = x - cx, y - cy
        cos_a, sin_a = math.cos(angle), math.sin(angle)
        u = (dx * cos_a + dy * sin_a) / stretch
        v = (-dx * sin_a + dy * cos_a) * stretch
        dist = np.sqrt(u * u + v * v) + 1e-6
        z = (u + 1j * v) / dist
        harmonics = np.arange(1, 9)
        amplitude = np.where(
            harmonics <= 2,
            max(p["asymmetry"], 0.0),
            max(p["irregularity"], 0.0) / harmonics**0.7,
        )
        coeffs = (
            amplitude
            * rng.standard_normal(8)
            * np.exp(1j * rng.uniform(0, 2 * math.pi, 8))
        )
        series = np.complex64(coeffs[-1])
        for c in coeffs[-2::-1]:
            series = series * z + np.complex64(c)
        mean_radius = min(max(p["radius"], 0.15), 0.85)
        radius = mean_radius * (1.0 + np.real(series * z))
        radius = np.maximum(radius, 0.05)
        mask = dist < radius
        edge = max(p["edge"], 0.008)
        alpha = np.clip((radius - dist) / edge + 0.5, 0.0, 1.0)
        relative = dist / radius  # 0 at the centre, 1 on the border

        # Lesion colour: base, darker centre, variegation patches, pigment network.
        # Colour nuisance, independent of the class: brightness and a per-channel tint
        # of the lesion as a whole (base, patches and dots).
        shade = math.exp(0.25 * float(rng.standard_normal())) * np.exp(
            rng.normal(0.0, 0.05, 3)
        )
        base = np.clip(shade * np.array([p["red"], p["green"], p["blue"]]), 0.02, 0.98)
        lesion = (
            base.astype(np.float32)[None, None, :]
            * (1.0 - 0.25 * np.clip(1.0 - relative, 0, 1))[..., None]
        )
        var = max(p["variegation"], 0.0)
        for colour in _PATCHES[label]:
            if var <= 0:
                break
            field = self._noise(rng, 5) + (float(rng.normal()) - 0.8)
            weight = np.clip(field * var * 1.5, 0.0, 0.9)[..., None]
            tinted = np.clip(shade * np.asarray(colour), 0.02, 0.98).astype(np.float32)
            lesion += weight * (tinted - lesion)
        contrast = max(p["network"], 0.0)
        if contrast > 0.01:
            freq = float(rng.uniform(10.0, 14.0))
            warp = max(p["warp"], 0.0)
            a = freq * u + warp * 3.0 * self._noise(rng, 5)
            b = freq * v + warp * 3.0 * self._noise(rng, 5)
            lines = (1.0 - np.abs(np.cos(a) * np.cos(b))) ** 2
            fade = np.clip(1.3 - relative, 0.0, 1.0)
            lesion *= (1.0 - contrast * lines * fade)[..., None]
        fissures = max(p["fissures"], 0.0)
        if fissures > 0.01:
            # Cerebriform furrows: the zero lines of smooth noise, about 2 px wide.
            furrows = np.clip(1.0 - np.abs(self._noise(rng, 9)) / 0.2, 0.0, 1.0)
            fade = np.clip(1.2 - relative, 0.0, 1.0)
            lesion *= (1.0 - min(fissures, 0.9) * furrows * fade)[..., None]

        image += alpha[..., None] * (lesion - image)

        # Structures drawn as shapes: dots, nests, lacunae, vessels, then hair.
        scale = size / 64.0
        layers: list[tuple[Image.Image, np.ndarray, float]] = []

        def polar_points(count: int, spread: float, outer: bool = False) -> np.ndarray:
            rho = rng.uniform(0.5 if outer else 0.0, spread, count)
            theta = rng.uniform(0, 2 * math.pi, count)
            r = mean_radius * rho
            px = cx + r * (
                np.cos(theta) * cos_a * stretch - np.sin(theta) * sin_a / stretch
            )
            py = cy + r * (
                np.cos(theta) * sin_a * stretch + np.sin(theta) * cos_a / stretch
            )
            return np.stack([(px + 1) * (size - 1) / 2, (py + 1) * (size - 1) / 2], 1)

        def disks(
            points: np.ndarray, radii: np.ndarray, colour: tuple, opacity: float
        ) -> None:
            if len(points) == 0:
                return
            layer = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(layer)
            for (px, py), r in zip(points.tolist(), radii.tolist(), strict=True):
                draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
            layers.append((layer, np.asarray(colour, dtype=np.float32), opacity))

        dot_colour = tuple(np.clip(shade * np.array([0.20, 0.12, 0.09]), 0.0, 1.0))
        disks(
            polar_points(dark_dots, 0.95, outer=label == 1),
            rng.uniform(1.0, 1.8, dark_dots) * scale,
            dot_colour,
            0.85,
        )
        disks(
            polar_points(bright_dots, 0.8),
            rng.uniform(1.2, 2.2, bright_dots) * scale,
            (0.95, 0.93, 0.85),
            0.8,
        )
        disks(
            polar_points(nests, 0.8),
            rng.uniform(1.5, 3.0, nests) * scale,
            (0.38, 0.42, 0.55),
            0.7,
        )
        disks(
            polar_points(lacunae, 0.8),
            rng.uniform(1.5, 3.5, lacunae) * scale,
            (0.45, 0.05, 0.12),
            0.8,
        )
        if vessels > 0:
            layer = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(layer)
            width = max(1, round(scale))
            for start in polar_points(vessels, 0.7).tolist():
                point = np.asarray(start)
                heading = rng.uniform(0, 2 * math.pi)
                for _ in range(3):
                    heading += rng.normal(0, 0.6)
                    step = rng.uniform(3, 7) * scale
                    nxt = point + step * np.array(
                        [math.cos(heading), math.sin(heading)]
                    )
                    draw.line((*point.tolist(), *nxt.tolist()), fill=255, width=width)
                    point = nxt
            layers.append(
                (layer, np.asarray((0.70, 0.10, 0.14), dtype=np.float32), 0.75)
            )
        if streaks > 0:
            # Radial streaks: lines from inside the lesion out to its border.
            layer = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(layer)
            width = max(1, round(2 * scale))
            starts = polar_points(streaks, 0.75, outer=True)
            centre = np.array([(cx + 1) * (size - 1) / 2, (cy + 1) * (size - 1) / 2])
            for start in starts:
                direction = start - centre
                direction /= max(float(np.hypot(*direction)), 1e-6)
                end = start + direction * rng.uniform(4, 8) * scale
                draw.line((*start.tolist(), *end.tolist()), fill=255, width=width)
            layers.append((layer, np.asarray(dot_colour, dtype=np.float32), 0.8))
        for layer, tint, opacity in layers:
            weight = np.asarray(layer, dtype=np.float32) * (opacity / 255.0) * alpha
            image += weight[..., None] * (tint - image)

        hairs = int(rng.poisson(1.5)) if rng.uniform() < 0.6 else 0
        if hairs:
            layer = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(layer)
            width = max(1, round(scale * rng.uniform(0.6, 1.4)))
            for _ in range(hairs):
                point = rng.uniform(0, size, 2)
                heading = rng.uniform(0, 2 * math.pi)
                bend = rng.normal(0, 0.15)
                points = [tuple(point.tolist())]
                for _ in range(8):
                    heading += bend
                    point = point + size / 12 * np.array(
                        [math.cos(heading), math.sin(heading)]
                    )
                    points.append(tuple(point.tolist()))
                draw.line(points, fill=255, width=width)
            hair = np.asarray(layer, dtype=np.float32)[..., None] * (0.85 / 255.0)
            image += hair * (np.float32(0.12) * skin.astype(np.float32) - image)

        # Optics: illumination gradient, dermoscope field of view, vignetting, noise.
        direction, gradient, field_radius, darkening = rng.uniform(
            (0.0, 0.0, 1.0, 0.0), (2 * math.pi, 0.12, 1.5, 0.3)
        ).tolist()
        light = 1.0 + gradient * (x * math.cos(direction) + y * math.sin(direction))
        aperture = np.clip((field_radius - self._r0) / 0.08, 0.0, 1.0)
        vignette = 1.0 - darkening * (self._r0 / 1.42) ** 2
        image *= (light * vignette * (0.04 + 0.96 * aperture))[..., None]
        # Sensor noise: a random window of a fixed noise field (drawing fresh Gaussian
        # noise per pixel would cost a tenth of the whole image).
        oy, ox = rng.integers(0, size, 2).tolist()
        image += self._grain[oy : oy + size, ox : ox + size]
        pixels = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels), mask.astype(np.uint8)

    def __repr__(self) -> str:
        return (
            f"SyntheticLesions(synthetic dermoscopy-like lesions, num_images={self.num_images}, "
            f"image_size={self.image_size}, classes={self.classes}, seed={self.seed}, "
            f"split={self.split!r}, class_separation={self.class_separation}, "
            f"return_mask={self.return_mask}, transform={self.transform!r})"
        )
