"""GraVIS grouping loss: rank all views of an image above the views of other images.

Builds on :mod:`torch` only, plus :func:`lightly.utils.dist.gather` for multi-GPU
batches (as lightly's ``NTXentLoss(gather_distributed=True)``). What it adds: a Smooth-AP
loss (Brown et al., ECCV 2020) over groups of any size in O(N²·K) instead of the
O(N³) tensors of the reference implementation, and a hardness-aware attention variant.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from lightly.utils import dist
from torch import Tensor, nn

Variant = Literal["smooth_ap", "attention"]

#: Default ``temperature`` of each variant; for ``smooth_ap`` by similarity:
#: cosine (``normalize=True``) at Smooth-AP's 0.01, raw dot products at the GraVIS
#: authors' 0.2 (chosen by ``benchmarks/gravis_similarity.py``, see the class).
DEFAULT_TEMPERATURE: dict[str, float] = {"smooth_ap": 0.01, "attention": 0.1}
#: ``smooth_ap``'s default temperature for raw dot products (``normalize=False``).
AUTHORS_TEMPERATURE = 0.2


class GraVISLoss(nn.Module):
    """GraVIS loss on the embeddings of K augmented views per image.

    Zhou, Lu, Wang, Yu, "GraVIS: Grouping Augmented Views from Independent Sources for
    Dermatology Analysis", IEEE TMI 2023, arXiv:2301.04410. All views with the same
    group id are positives of each other; every other view is a negative. With
    s_nk = z_n·z_k and G(n) the views in n's group:

    ``variant="smooth_ap"`` (the authors' released loss, Smooth-AP of Brown et al.,
    ECCV 2020)::

        σ_τ(x)     = 1 / (1 + exp(−x/τ))
        R_all(n,j) = 1 + Σ_{k≠j}         σ_τ(s_nk − s_nj)      j ∈ G(n)
        R_pos(n,j) = 1 + Σ_{k∈G(n), k≠j} σ_τ(s_nk − s_nj)
        L          = 1 − mean_n (1/|G(n)|) Σ_{j∈G(n)} R_pos(n,j) / R_all(n,j)

    Only j ∈ G(n) is needed, so time and memory are O(N²·K) for N views in groups of at
    most K (the reference implementation builds (N, N, N) tensors). The authors clamp
    −x/τ to [−50, 50] before ``exp``; that changes values and gradients by less than
    e⁻⁵⁰, so this implementation uses :func:`torch.sigmoid` directly.

    ``variant="attention"`` (the abstract's hardness-aware attention; the exact formula
    is unpublished, this form is lightly-derm's): for anchor a, positives H(a) (its group
    without a) and negatives N(a) (all other groups)::

        ℓ(a,b) = log(1 + Σ_{q∈N(a)} exp((s_aq − s_ab)/τ))
        w(a,b) = softmax_{b∈H(a)}(sg(s_ab)/τ_w)        more weight to more similar positives
        L      = mean_a Σ_{b∈H(a)} w(a,b)·ℓ(a,b)

    **Default similarity: cosine at τ = 0.01** (Smooth-AP's setting; the authors use raw
    dot products at 0.2). Measured by ``benchmarks/gravis_similarity.py`` on ISIC views
    embedded by a ResNet-18 GraVIS model (results in
    ``benchmarks/results/gravis_similarity_cpu.md``): cosine at 0.2 — the previous
    default — smooths the ranking so much that the smoothed AP misses the true one by
    0.29 on average and the loss hardly depends on the ranking (0.953 at
    initialisation, gradient 20× smaller than at 0.01; training with it made the loss
    rise, 0.953 → 0.957 over 30 steps). Cosine at 0.01 follows the true AP to 0.013
    with 41 % of the triples (n, j, k) unsaturated and the largest gradient; training
    with it lowered the loss from 0.676 to 0.569 in 30 steps. Raw dot products are sharp
    too, but their saturation follows the embedding norm, which grows in training (57 %
    of the triples unsaturated at initialisation, 19–26 % after 30 steps).

    Similarities are computed in float32 (float64 stays float64) with autocast off, so
    the loss is safe under bf16/fp16 mixed precision. Normalisation is exact at any
    finite scale (:func:`scale_safe_normalize`; ``F.normalize`` overflows in float32
    from about 1e19, which made the loss a constant with zero gradient); with
    ``normalize=False``, similarities that overflow make the loss NaN, never a
    finite number computed from inf. One host synchronisation per call
    reads the smallest and largest group size (it sets the padded tensor shape and
    checks that no group has a single view).

    Args:
        variant: ``"smooth_ap"`` or ``"attention"``.
        temperature: τ. ``None`` takes the default: for ``smooth_ap`` 0.01 with
            cosine similarities (Smooth-AP's) and 0.2 with raw dot products (the GraVIS
            authors'); 0.1 for ``attention``.
        attention_temperature: τ_w of the attention weights (``attention`` only); a
            large value gives equal weights, i.e. no attention.
        normalize: L2-normalise the embeddings (cosine similarities). The authors' code
            uses raw dot products: ``normalize=False`` (with the default τ 0.2)
            reproduces it.
        exclude_self: ``smooth_ap`` only. ``False`` (the authors' code) counts the anchor
            n itself as a member of G(n) and in both ranks; ``True`` (the Smooth-AP
            paper) leaves it out. The ``attention`` variant always leaves it out.
        gather_distributed: Gather the embeddings of all processes (with gradients,
            :func:`lightly.utils.dist.gather`) so that every view of the global batch
            is a negative. Each process computes the loss of its own anchors against
            all gathered views; the mean over processes is the loss of the whole batch
            (DDP averages gradients, so parameter gradients are those of the whole-batch
            loss). Group ids are local to a process: views on different processes are
            never positives of each other, so per-process ids such as
            :class:`~lightly_derm.data.GroupedViewCollate`'s ``0 … B−1`` never collide.
            Every process must pass the same number of views. No effect without an
            initialised process group of more than one process.

    Raises:
        ValueError: Unknown ``variant``, a non-positive temperature, or
            ``gather_distributed`` without :mod:`torch.distributed`.

    Example:
        >>> import torch
        >>> from lightly_derm.loss import GraVISLoss
        >>> loss_fn = GraVISLoss()
        >>> embeddings = torch.randn(16, 128)  # 4 images x 4 views, image-major
        >>> group_ids = torch.arange(4).repeat_interleave(4)
        >>> loss = loss_fn(embeddings, group_ids)
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        variant: Variant = "smooth_ap",
        temperature: float | None = None,
        attention_temperature: float = 0.1,
        normalize: bool = True,
        exclude_self: bool = False,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if variant not in DEFAULT_TEMPERATURE:
            raise ValueError(
                f"variant must be one of {', '.join(map(repr, DEFAULT_TEMPERATURE))}, "
                f"got {variant!r}"
            )
        if temperature is None:
            temperature = (
                AUTHORS_TEMPERATURE
                if variant == "smooth_ap" and not normalize
                else DEFAULT_TEMPERATURE[variant]
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not attention_temperature > 0:
            raise ValueError(
                f"attention_temperature must be positive, got {attention_temperature}"
            )
        if gather_distributed and not torch_dist.is_available():
            raise ValueError(
                "gather_distributed is True but torch.distributed is not available; "
                "set gather_distributed=False"
            )
        self.variant: Variant = variant
        self.temperature = float(temperature)
        self.attention_temperature = float(attention_temperature)
        self.normalize = normalize
        self.exclude_self = exclude_self
        self.gather_distributed = gather_distributed

    def extra_repr(self) -> str:
        """The settings, shown in the module's repr."""
        return (
            f"variant={self.variant!r}, temperature={self.temperature}, "
            f"attention_temperature={self.attention_temperature}, "
            f"normalize={self.normalize}, exclude_self={self.exclude_self}, "
            f"gather_distributed={self.gather_distributed}"
        )

    def forward(
        self, embeddings: Tensor, group_ids: Tensor, group_size: int | None = None
    ) -> Tensor:
        """Returns the loss of ``embeddings`` (N, D) grouped by ``group_ids`` (N,).

        Args:
            embeddings: (N, D) floating-point embeddings of N views, in any order.
            group_ids: (N,) integer group of every view (the source image); groups may
                differ in size but need two views or more.
            group_size: Optional: every group has exactly this many views (K views per
                image, as :class:`~lightly_derm.data.GroupedBatch` gives). Then the
                group sizes need not be read back to the host (one synchronisation per
                step less on a GPU); they are checked on the device instead
                (``torch._assert_async``: a ``RuntimeError``, on a GPU at a later
                synchronisation). The loss is the same.

        Returns:
            The scalar loss (float32, or float64 for float64 embeddings).

        Raises:
            TypeError: ``embeddings`` is not a floating-point tensor or ``group_ids``
                not an integer tensor.
            ValueError: Wrong shapes, a group with a single view (named by its id), or
                a ``group_size`` below 2 or not dividing N.
        """
        _check_inputs(embeddings, group_ids)
        if group_size is not None:
            if (
                isinstance(group_size, bool)
                or not isinstance(group_size, int)
                or group_size < 2
            ):
                raise ValueError(
                    f"group_size must be an int >= 2 or None, got {group_size!r}"
                )
            if group_ids.shape[0] % group_size:
                raise ValueError(
                    f"group_size={group_size} does not divide the number of views "
                    f"N={group_ids.shape[0]}"
                )
        group_ids = group_ids.to(embeddings.device)
        exclude_self = self.exclude_self or self.variant == "attention"
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = embeddings if embeddings.dtype == torch.float64 else embeddings.float()
            if self.normalize:
                z = scale_safe_normalize(z)
            offset = 0
            z_all = z
            if self.gather_distributed and dist.world_size() > 1:
                z_all = torch.cat(dist.gather(z), dim=0)
                offset = dist.rank() * z.shape[0]
            same, pos_idx, pos_mask = _positives(group_ids, exclude_self, group_size)
            sim = z @ z_all.T  # (N, M)
            if self.variant == "smooth_ap":
                self_idx = None
                if exclude_self:
                    self_idx = torch.arange(z.shape[0], device=z.device) + offset
                loss = _smooth_ap(
                    sim / self.temperature, pos_idx + offset, pos_mask, self_idx
                )
            else:
                loss = _attention(
                    sim,
                    same,
                    pos_idx + offset,
                    pos_mask,
                    offset,
                    self.temperature,
                    self.attention_temperature,
                )
            if not self.normalize:
                # Raw dot products of huge embeddings overflow to inf, and sigmoids
                # of inf differences give a finite but meaningless loss: NaN instead
                # (a device-side select, no host synchronisation).
                loss = torch.where(
                    torch.isfinite(sim).all(), loss, torch.full_like(loss, math.nan)
                )
            return loss


def scale_safe_normalize(z: Tensor) -> Tensor:
    """Rows of ``z`` (N, D) divided by their L2 norm, exact at any finite scale.

    :func:`torch.nn.functional.normalize` squares the entries: in float32 the norm
    overflows to inf from about 1e19 (every row then becomes zero) and underflows
    below about 1e-23. Here each row is first multiplied by a power of two near its
    largest entry (exact in floating point, and outside autograd: the normalised row
    does not depend on it), then normalised. Zero rows stay zero; a row with a NaN or
    an infinite entry becomes NaN.

    Example:
        >>> import torch
        >>> z = torch.tensor([[3e19, 4e19], [3e-30, -4e-30]])
        >>> scale_safe_normalize(z)
        tensor([[ 0.6000,  0.8000],
                [ 0.6000, -0.8000]])
    """
    _, exponent = torch.frexp(z.detach().abs().amax(dim=1, keepdim=True))
    # 2**±limit is finite and normal in z's dtype (125 for float32)
    limit = int(math.log2(torch.finfo(z.dtype).max)) - 2
    # exp2 of an integer is an exact power of two (torch.ldexp has no usable gradient)
    scale = torch.exp2(-exponent.clamp(-limit, limit).to(z.dtype))
    return F.normalize(z * scale, dim=1)


def _check_inputs(embeddings: Tensor, group_ids: Tensor) -> None:
    if not isinstance(embeddings, Tensor) or not embeddings.is_floating_point():
        kind = (
            f"a {embeddings.dtype} tensor"
            if isinstance(embeddings, Tensor)
            else type(embeddings).__name__
        )
        raise TypeError(
            f"embeddings must be a floating-point tensor (N, D), got {kind}"
        )
    if embeddings.ndim != 2 or embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise ValueError(
            f"embeddings must be (N, D) with N > 0 and D > 0, got shape "
            f"{tuple(embeddings.shape)}"
        )
    if not isinstance(group_ids, Tensor):
        raise TypeError(
            f"group_ids must be an integer tensor (N,), got {type(group_ids).__name__}"
        )
    if (
        group_ids.is_floating_point()
        or group_ids.is_complex()
        or group_ids.dtype == torch.bool
    ):
        raise TypeError(
            f"group_ids must be an integer tensor (N,), got dtype {group_ids.dtype}"
        )
    if group_ids.shape != embeddings.shape[:1]:
        raise ValueError(
            f"group_ids must be (N,) = ({embeddings.shape[0]},) to match embeddings "
            f"{tuple(embeddings.shape)}, got shape {tuple(group_ids.shape)}"
        )


def _positives(
    group_ids: Tensor, exclude_self: bool, group_size: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Padded positive indices of every view.

    With ``group_size`` the sizes are checked on the device, without a host sync.

    Returns:
        ``same`` (N, N): views share a group (the diagonal included);
        ``pos_idx`` (N, P): the columns j ∈ G(n) in ascending order, padded to the
        largest group with arbitrary columns; ``pos_mask`` (N, P): which are real.
    """
    n = group_ids.shape[0]
    same = group_ids.unsqueeze(1) == group_ids.unsqueeze(0)
    counts = same.sum(dim=1)
    if group_size is not None:
        torch._assert_async(
            (counts == group_size).all(),
            f"GraVISLoss: group_size={group_size} was given, but not every group of "
            f"group_ids has {group_size} views",
        )
        smallest = largest = group_size
    else:
        smallest, largest = torch.stack([counts.min(), counts.max()]).tolist()
    if smallest < 2:
        lonely = group_ids[counts < 2][0].item()
        raise ValueError(
            f"group id {lonely} has a single view; every group needs two views or more"
        )
    members = same
    if exclude_self:
        members = same & ~torch.eye(n, dtype=torch.bool, device=same.device)
        largest -= 1
    # Stable descending sort puts a row's members first, in ascending column order.
    order = torch.argsort(members.to(torch.uint8), dim=1, descending=True, stable=True)
    pos_idx = order[:, :largest]
    return same, pos_idx, members.gather(1, pos_idx)


def _smooth_ap(
    logits: Tensor, pos_idx: Tensor, pos_mask: Tensor, self_idx: Tensor | None
) -> Tensor:
    """1 − mean Smooth-AP from similarities already divided by τ (N, M).

    ``self_idx`` (N,): the anchors' own columns, left out of R_all; ``None`` keeps them.
    """
    pos = logits.gather(1, pos_idx)  # (N, P): s_nj / τ
    # R_all over all M columns; the k = j term is σ(0) = 1/2 exactly and is removed
    # afterwards (its gradient cancels exactly), which avoids an (N, P, M) mask.
    r_all = 0.5 + torch.sigmoid(logits.unsqueeze(1) - pos.unsqueeze(2)).sum(dim=2)
    if self_idx is not None:
        own = logits.gather(1, self_idx.unsqueeze(1))  # (N, 1): s_nn / τ
        r_all = r_all - torch.sigmoid(own - pos)
    pos_sig = torch.sigmoid(pos.unsqueeze(1) - pos.unsqueeze(2))  # (N, P, P)
    r_pos = 0.5 + (pos_sig * pos_mask.unsqueeze(1)).sum(dim=2)
    ratio = torch.where(pos_mask, r_pos / r_all, torch.zeros_like(r_all))
    ap = ratio.sum(dim=1) / pos_mask.sum(dim=1)
    return 1 - ap.mean()


def _attention(
    sim: Tensor,
    same: Tensor,
    pos_idx: Tensor,
    pos_mask: Tensor,
    offset: int,
    temperature: float,
    attention_temperature: float,
) -> Tensor:
    """Hardness-aware attention over positives with a soft-triplet term per positive."""
    n = same.shape[0]
    logits = sim / temperature
    negative = torch.ones_like(logits, dtype=torch.bool)
    negative[:, offset : offset + n] = ~same
    # A finite fill keeps rows without any negative (a single group) free of NaN.
    lowest = torch.finfo(logits.dtype).min
    lse = torch.logsumexp(logits.masked_fill(~negative, lowest), dim=1, keepdim=True)
    lse = torch.where(
        negative.any(dim=1, keepdim=True), lse, torch.full_like(lse, lowest)
    )
    pos_logits = logits.gather(1, pos_idx)  # (N, P): s_ab / τ
    ell = F.softplus(lse - pos_logits)
    attention = (sim.gather(1, pos_idx).detach() / attention_temperature).masked_fill(
        ~pos_mask, float("-inf")
    )
    weights = torch.softmax(attention, dim=1)
    return (weights * ell).sum(dim=1).mean()
