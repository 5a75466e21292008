"""The plots a person looks at after a run: losses, views, jigsaws, mined pairs, embeddings.

Builds on matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`, rendered by
the Agg canvas to PNG without ``pyplot``, so no global backend is changed and nothing
needs a display), :func:`torchvision.utils.make_grid`, :func:`torch.linalg.eigh` (PCA) and
lightly's ``IMAGENET_NORMALIZE`` (the normalisation of every lightly-derm method's
views). :class:`TrainingPlots` is the Lightning callback that draws the first batch's
views (and FG-SSL's jigsaw puzzles, AP-BYOL's mined pairs) during pretraining.

Plotting never stops a run: the callback turns a failure into a warning.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from lightly_derm.callbacks import STEP_LOSS

#: File names in the ``plots/`` folder of a run.
PLOT_FILES = {
    "metrics": "loss.png",
    "views": "views.png",
    "jigsaws": "jigsaws.png",
    "mined_pairs": "mined_pairs.png",
    "embedding": "embedding.png",
    "overlays": "overlays.png",
}


def denormalize(
    images: Tensor,
    mean: Sequence[float] | None = IMAGENET_NORMALIZE["mean"],
    std: Sequence[float] | None = IMAGENET_NORMALIZE["std"],
) -> Tensor:
    """Undoes the normalisation of (B, C, H, W) images; returns float32 in [0, 1] on the CPU."""
    pictures = images.detach().float().cpu()
    if mean is not None and std is not None:
        m = torch.tensor(list(mean), dtype=torch.float32)[: pictures.shape[1]]
        s = torch.tensor(list(std), dtype=torch.float32)[: pictures.shape[1]]
        pictures = pictures * s.view(1, -1, 1, 1) + m.view(1, -1, 1, 1)
    if pictures.shape[1] == 1:
        pictures = pictures.expand(-1, 3, -1, -1)
    return pictures.clamp(0, 1)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(max(width, 2.0), max(height, 1.5)), layout="constrained")


def _save(figure: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _show(axis: Any, image: Tensor, title: str | None = None) -> None:
    axis.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=7)


#: Characters per line of a row label in ``views.png`` (longer labels wrap).
LABEL_WIDTH = 22


def wrap_label(text: str, width: int = LABEL_WIDTH) -> str:
    """``text`` on lines of at most ``width`` characters, none left out.

    Lines break after ``/``, ``_``, ``-`` or a space where one is near the end of a
    line, else inside the word.

    Example:
        >>> print(wrap_label("train/melanoma/ISIC_0000002_downsampled.jpg", 16))
        train/melanoma/
        ISIC_0000002_
        downsampled.jpg
    """
    if width < 1:
        raise ValueError(f"width must be at least 1, got {width}")
    lines: list[str] = []
    rest = str(text)
    while len(rest) > width:
        cut = max(rest.rfind(c, 0, width) for c in "/_- ") + 1
        if cut < max(1, width // 2):  # no separator near the end: break in the word
            cut = width
        lines.append(rest[:cut])
        rest = rest[cut:]
    lines.append(rest)
    return "\n".join(lines)


def views_figure(
    views: Tensor,
    num_views: int,
    row_titles: Sequence[str] | None = None,
    max_images: int = 8,
    mean: Sequence[float] | None = IMAGENET_NORMALIZE["mean"],
    std: Sequence[float] | None = IMAGENET_NORMALIZE["std"],
) -> Any:
    """The :class:`matplotlib.figure.Figure` of :func:`plot_views` (arguments as there).

    Row labels are wrapped (:func:`wrap_label`), never cut, and the figure is widened
    by their longest line so they fit beside the images.
    """
    if views.ndim != 4 or num_views < 1 or views.shape[0] % num_views:
        raise ValueError(
            f"views must be (B·K, C, H, W) with K = num_views = {num_views}, got shape "
            f"{tuple(views.shape)}"
        )
    rows = min(views.shape[0] // num_views, max_images)
    pictures = denormalize(views[: rows * num_views], mean, std)
    labels = [wrap_label(str(t)) for t in (row_titles or [])[:rows]]
    longest = max((len(line) for t in labels for line in t.split("\n")), default=0)
    # 7-point characters are about 0.06 inch wide; the label column gets that room
    figure = _figure(1.4 * num_views + 0.6 + 0.06 * longest, 1.4 * rows + 0.4)
    axes = figure.subplots(rows, num_views, squeeze=False)
    for r in range(rows):
        for k in range(num_views):
            _show(
                axes[r][k], pictures[r * num_views + k], f"view {k}" if r == 0 else None
            )
        if r < len(labels):
            axes[r][0].set_ylabel(labels[r], fontsize=7, rotation=0, ha="right")
            axes[r][0].yaxis.label.set_verticalalignment("center")
    figure.suptitle(f"first training batch: {num_views} views per image", fontsize=9)
    return figure


def plot_views(
    views: Tensor,
    num_views: int,
    path: str | Path,
    row_titles: Sequence[str] | None = None,
    max_images: int = 8,
    mean: Sequence[float] | None = IMAGENET_NORMALIZE["mean"],
    std: Sequence[float] | None = IMAGENET_NORMALIZE["std"],
) -> Path:
    """One row per image with its K views, as a method sees them.

    Args:
        views: (B·K, C, H, W) normalised views, image-major (the layout of
            :class:`~lightly_derm.data.GroupedBatch`).
        num_views: K.
        path: The PNG file.
        row_titles: A label per image (e.g. the file name), written in full beside
            its row (wrapped on lines of :data:`LABEL_WIDTH` characters).
        max_images: At most this many rows.
        mean: The normalisation mean of the views.
        std: The normalisation standard deviation.

    Returns:
        The path written.

    Example:
        >>> import torch
        >>> from lightly_derm.jobs.plots import plot_views
        >>> plot_views(torch.randn(8, 3, 32, 32), 4, "/tmp/views.png").name
        'views.png'
    """
    figure = views_figure(views, num_views, row_titles, max_images, mean, std)
    return _save(figure, path)


def plot_jigsaws(
    images: Tensor,
    jigsaws: Sequence[Tensor],
    grids: Sequence[int],
    path: str | Path,
    max_images: int = 4,
    mean: Sequence[float] | None = IMAGENET_NORMALIZE["mean"],
    std: Sequence[float] | None = IMAGENET_NORMALIZE["std"],
) -> Path:
    """One row per image: the view and its jigsaw puzzle at each grid.

    Args:
        images: (B, C, H, W) normalised views.
        jigsaws: One (B, C, H, W) jigsaw batch per grid.
        grids: The grid of each jigsaw batch (n for an n × n puzzle).
        path: The PNG file.
        max_images: At most this many rows.
        mean: The normalisation mean.
        std: The normalisation standard deviation.

    Returns:
        The path written.
    """
    if len(jigsaws) != len(grids):
        raise ValueError(
            f"one grid per jigsaw batch: {len(jigsaws)} batches, {len(grids)} grids"
        )
    rows = min(images.shape[0], max_images)
    columns = [denormalize(images[:rows], mean, std)] + [
        denormalize(j[:rows], mean, std) for j in jigsaws
    ]
    titles = ["view"] + [f"{g}×{g} jigsaw" for g in grids]
    figure = _figure(1.5 * len(columns), 1.5 * rows + 0.4)
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for r in range(rows):
        for c, column in enumerate(columns):
            _show(axes[r][c], column[r], titles[c] if r == 0 else None)
    figure.suptitle("FG-SSL hierarchical jigsaw puzzles (first batch)", fontsize=9)
    return _save(figure, path)


def plot_mined_pairs(
    anchors: Tensor,
    mined: Tensor,
    path: str | Path,
    anchor_labels: Sequence[int] | None = None,
    mined_labels: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    step: int | None = None,
    mean: Sequence[float] | None = IMAGENET_NORMALIZE["mean"],
    std: Sequence[float] | None = IMAGENET_NORMALIZE["std"],
) -> Path:
    """Anchor images beside the additional positive mined for each.

    Args:
        anchors: (P, C, H, W) normalised anchor views.
        mined: (P, C, H, W) the mined images' views.
        path: The PNG file.
        anchor_labels: Class index per anchor (``-1``: unknown), to show.
        mined_labels: Class index per mined image.
        classes: Class names.
        step: The training step, for the title.
        mean: The normalisation mean.
        std: The normalisation standard deviation.

    Returns:
        The path written.
    """
    if anchors.shape != mined.shape or anchors.ndim != 4:
        raise ValueError(
            f"anchors and mined must both be (P, C, H, W), got {tuple(anchors.shape)} "
            f"and {tuple(mined.shape)}"
        )
    pairs = anchors.shape[0]
    columns = min(pairs, 8)
    rows = math.ceil(pairs / columns)
    a = denormalize(anchors, mean, std)
    m = denormalize(mined, mean, std)

    def name(labels: Sequence[int] | None, i: int) -> str | None:
        if labels is None or int(labels[i]) < 0:
            return None
        label = int(labels[i])
        return classes[label] if classes and label < len(classes) else str(label)

    figure = _figure(1.7 * columns, 3.3 * rows + 0.5)
    axes = figure.subplots(2 * rows, columns, squeeze=False)
    for i in range(rows * columns):
        top = axes[2 * (i // columns)][i % columns]
        bottom = axes[2 * (i // columns) + 1][i % columns]
        if i >= pairs:
            top.axis("off")
            bottom.axis("off")
            continue
        an, mn = name(anchor_labels, i), name(mined_labels, i)
        mark = ""
        if an is not None and mn is not None:
            mark = " (same)" if an == mn else " (other)"
        _show(top, a[i], "anchor" + (f"\n{an}" if an else ""))
        _show(bottom, m[i], "mined" + mark + (f"\n{mn}" if mn else ""))
    when = f" at step {step}" if step is not None else ""
    figure.suptitle(f"AP-BYOL: additional positives mined by TracIn{when}", fontsize=9)
    return _save(figure, path)


def read_metrics(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """The ``(step, value)`` series of every metric in a Lightning ``metrics.csv``."""
    series: dict[str, list[tuple[float, float]]] = {}
    with Path(path).open(newline="") as file:
        for row in csv.DictReader(file):
            try:
                step = float(row.get("step") or "nan")
            except ValueError:
                continue
            for key, text in row.items():
                if key in ("step", "epoch") or text in (None, ""):
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                series.setdefault(key, []).append((step, value))
    return series


def smooth(values: Sequence[float], weight: float | None = None) -> list[float]:
    """An exponential moving average, debiased at the start (as TensorBoard's smoothing).

    Args:
        values: The raw series.
        weight: The weight of the past, in ``[0, 1)``; default: ``0.6`` for fewer than
            50 points, else ``0.9``.

    Example:
        >>> smooth([1.0, 0.0, 0.0], weight=0.5)
        [1.0, 0.3333333333333333, 0.14285714285714285]
    """
    if weight is None:
        weight = 0.6 if len(values) < 50 else 0.9
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"weight must be in [0, 1), got {weight}")
    result, average = [], 0.0
    for i, value in enumerate(values):
        average = weight * average + (1.0 - weight) * value
        result.append(average / (1.0 - weight ** (i + 1)))
    return result


def plot_metrics(metrics_csv: str | Path, path: str | Path, title: str = "") -> Path:
    """Loss curves (and validation scores, when there are any) from ``metrics.csv``.

    One panel for every metric whose name contains ``loss`` (the total ``train_loss``
    and its parts ``train_loss_<part>``, per step and per epoch), one for the other
    ``val_``/``test_`` metrics (Dice, Jaccard, …). The loss of every step
    (:data:`~lightly_derm.callbacks.STEP_LOSS`) is drawn as raw points with a
    smoothed curve in front (:func:`smooth`).

    Raises:
        ValueError: The file holds no loss.
    """
    series = read_metrics(metrics_csv)
    losses = {k: v for k, v in series.items() if "loss" in k}
    scores = {
        k: v
        for k, v in series.items()
        if "loss" not in k and k.startswith(("val_", "test_"))
    }
    if not losses:
        raise ValueError(f"{metrics_csv} holds no loss to plot")
    panels = [("loss", losses)] + ([("score", scores)] if scores else [])
    figure = _figure(6.0 * len(panels), 3.6)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    if STEP_LOSS in losses:
        losses.pop("train_loss", None)  # the same values, every few steps only
    for axis, (label, metrics) in zip(axes, panels, strict=True):
        for key in sorted(metrics):
            points = sorted(metrics[key])
            steps = [p[0] for p in points]
            values = [p[1] for p in points]
            if key == STEP_LOSS:
                (raw,) = axis.plot(
                    steps, values, ".", markersize=2.5, alpha=0.3, label=f"{key} (raw)"
                )
                axis.plot(
                    steps,
                    smooth(values),
                    color=raw.get_color(),
                    linewidth=2.0,
                    label=f"{key} (smoothed)",
                )
                continue
            bold = key in ("train_loss", "train_loss_epoch", "val_dice")
            marker = "o" if len(points) < 30 else None
            axis.plot(
                steps,
                values,
                label=key,
                linewidth=2.0 if bold else 1.0,
                marker=marker,
                markersize=3,
            )
        axis.set_xlabel("step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    return _save(figure, path)


def pca_2d(features: Tensor) -> Tensor:
    """The first two principal components of (N, D) features, (N, 2) float32.

    Exact (not randomised like ``torch.pca_lowrank``): the top eigenvectors of the
    smaller of the two Gram matrices of the centred features, in float64, so the cost is
    O(N·D·min(N, D)) and the memory min(N, D)².
    """
    x = features.detach().double().cpu()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(
            f"need (N, D) features with N >= 2, got shape {tuple(features.shape)}"
        )
    x = x - x.mean(0, keepdim=True)
    n, d = x.shape
    q = min(2, n, d)
    if d <= n:
        _, vectors = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues
        projected = x @ vectors[:, -q:].flip(1)
    else:
        values, vectors = torch.linalg.eigh(x @ x.T)
        projected = vectors[:, -q:].flip(1) * values[-q:].flip(0).clamp_min(0).sqrt()
    if q < 2:
        projected = torch.cat([projected, torch.zeros(n, 2 - q, dtype=x.dtype)], 1)
    return projected.float()


def plot_embedding(
    features: Tensor,
    path: str | Path,
    targets: Tensor | Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    title: str = "backbone features (PCA)",
) -> Path:
    """A 2-D PCA scatter of features, coloured by class when labels exist.

    Args:
        features: (N, D).
        path: The PNG file.
        targets: (N,) class indices (``-1``: unlabelled, drawn grey).
        classes: Class names for the legend.
        title: The figure title.

    Returns:
        The path written.

    Example:
        >>> import torch
        >>> from lightly_derm.jobs.plots import plot_embedding
        >>> plot_embedding(torch.randn(20, 8), "/tmp/emb.png", targets=[0, 1] * 10).name
        'emb.png'
    """
    points = pca_2d(features).numpy()
    figure = _figure(5.5, 4.5)
    axis = figure.subplots()
    labels = None if targets is None else torch.as_tensor(targets).long().reshape(-1)
    if labels is not None and labels.shape[0] != points.shape[0]:
        raise ValueError(
            f"targets has {labels.shape[0]} entries for {points.shape[0]} features"
        )
    if labels is None or bool((labels < 0).all()):
        axis.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6)
    else:
        unknown = (labels < 0).numpy()
        if unknown.any():
            axis.scatter(
                points[unknown, 0],
                points[unknown, 1],
                s=5,
                c="lightgrey",
                label="unlabelled",
            )
        for label in sorted(set(labels[labels >= 0].tolist())):
            mask = (labels == label).numpy()
            name = classes[label] if classes and label < len(classes) else str(label)
            axis.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.7, label=name)
        axis.legend(fontsize=7, markerscale=2)
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    axis.set_title(title, fontsize=9)
    return _save(figure, path)


class TrainingPlots(Callback):
    """Draws the first training batch's views, FG-SSL's jigsaws and AP-BYOL's mined pairs.

    - ``views.png``: the first batch's K views of the first images
      (:func:`plot_views`);
    - ``jigsaws.png``: for methods with a ``jigsaws(images)`` method and ``grids``
      (:class:`~lightly_derm.methods.pmg.PMGMethod`: FG-SSL), the first view and its
      puzzles (:func:`plot_jigsaws`);
    - ``mined_pairs.png``: for methods that record ``last_mined`` (AP-BYOL), the first
      batch after the warm-up with its anchors and mined positives
      (:func:`plot_mined_pairs`).

    Only the global-zero process draws; a plot that exists is not drawn again (a resumed
    run keeps its first-batch plots). Failures become warnings.

    Args:
        plot_dir: The folder of the PNG files.
        classes: Class names, for the mined-pairs labels.
        max_images: Rows of the view plot.
    """

    def __init__(
        self,
        plot_dir: str | Path,
        classes: Sequence[str] | None = None,
        max_images: int = 8,
    ) -> None:
        self.plot_dir = Path(plot_dir)
        self.classes = list(classes) if classes else None
        self.max_images = max_images
        self._views_done = (self.plot_dir / PLOT_FILES["views"]).is_file()
        self._mined_done = (self.plot_dir / PLOT_FILES["mined_pairs"]).is_file()
        #: The files written by this callback.
        self.written: list[Path] = []

    def _guard(self, what: str, draw: Any) -> None:
        try:
            path = draw()
        except Exception as exc:  # a plot must never stop training
            warnings.warn(
                f"could not draw {what}: {type(exc).__name__}: {exc}",
                UserWarning,
                stacklevel=2,
            )
            return
        if path is not None:
            self.written.append(path)

    def on_train_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Draws the views (and jigsaws) of the first batch."""
        if self._views_done or not trainer.is_global_zero:
            return
        self._views_done = True
        from lightly_derm.data import to_grouped_batch

        try:
            grouped = to_grouped_batch(batch)
        except (TypeError, ValueError):
            return  # not a multi-view batch (e.g. a supervised module)
        names = [str(f) for f in grouped.filenames] if grouped.filenames else None
        n = min(grouped.batch_size, self.max_images)
        self._guard(
            "the first batch's views",
            lambda: plot_views(
                grouped.views[: n * grouped.num_views],
                grouped.num_views,
                self.plot_dir / PLOT_FILES["views"],
                row_titles=names,
            ),
        )
        jigsaws = getattr(pl_module, "jigsaws", None)
        grids = getattr(pl_module, "grids", None)
        if callable(jigsaws) and grids is not None:

            def draw_jigsaws() -> Path:
                first = grouped.view(0)[: min(n, 4)]
                with torch.no_grad():
                    puzzles = jigsaws(first)
                return plot_jigsaws(
                    first, puzzles, list(grids), self.plot_dir / PLOT_FILES["jigsaws"]
                )

            self._guard("the jigsaw puzzles", draw_jigsaws)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Draws the first mined pairs (methods with ``last_mined``)."""
        mined = getattr(pl_module, "last_mined", None)
        if self._mined_done or not isinstance(mined, Tensor):
            return
        self._mined_done = True
        if not trainer.is_global_zero:
            return
        from lightly_derm.data import to_grouped_batch

        def draw() -> Path | None:
            grouped = to_grouped_batch(batch)
            images = grouped.view(0)
            indices = mined.reshape(mined.shape[0], -1)[:, 0].detach().cpu()
            size = images.shape[0]
            anchors = [
                i for i in range(min(size, indices.shape[0])) if indices[i] < size
            ]
            anchors = anchors[:16]
            if not anchors:
                return None  # mined from other processes' samples only
            chosen = indices[anchors]
            labels = grouped.targets.detach().cpu()
            has_labels = labels.ndim == 1 and not labels.is_floating_point()
            return plot_mined_pairs(
                images[anchors],
                images[chosen],
                self.plot_dir / PLOT_FILES["mined_pairs"],
                anchor_labels=labels[anchors].tolist() if has_labels else None,
                mined_labels=labels[chosen].tolist() if has_labels else None,
                classes=self.classes,
                step=trainer.global_step,
            )

        self._guard("the mined pairs", draw)
