"""Batched TracIn scores from Gram matrices and the TracIn positive miner of AP-BYOL.

Zeng et al., "Additional Positive Enables Better Representation Learning for Medical
Images", MICCAI 2023, arXiv:2306.00112: the extra positive of an image is the batch
sample whose loss gradient is most similar to its own (TracIn, Pruthi et al., NeurIPS
2020, at the current checkpoint).

What this builds on: :func:`torch.autograd.grad` for the loss gradients at the layer
outputs, forward hooks of :class:`torch.nn.Linear` for the layer inputs, and
:func:`lightly.utils.dist.gather` to mine over the global batch. What it adds is the
Gram-matrix form of per-sample gradient inner products (Goodfellow, "Efficient
per-example gradient computations", 2015): per-sample gradients are never formed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal

import torch
from lightly.utils import dist as lightly_dist
from torch import Tensor, nn

from lightly_derm.utils.validation import check_int

LayerChoice = Literal["last", "predictor", "all"]
_LAYER_CHOICES: tuple[str, ...] = ("last", "predictor", "all")


def _compute_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    return (
        torch.float64
        if any(t.dtype == torch.float64 for t in tensors)
        else torch.float32
    )


def _check_layer_lists(
    inputs: Sequence[Tensor], output_grads: Sequence[Tensor], name: str = ""
) -> tuple[int, int]:
    """Validates per-layer (V, B, D) lists; returns (number of layers, B)."""
    prefix = f"{name}" if name else ""
    for arg, value in (
        (f"{prefix}inputs", inputs),
        (f"{prefix}output_grads", output_grads),
    ):
        if isinstance(value, Tensor) or not isinstance(value, Sequence):
            raise TypeError(
                f"{arg} must be a list with one (V, B, D) tensor per layer, got "
                f"{type(value).__name__}; wrap a single layer in a list"
            )
        if len(value) == 0:
            raise ValueError(f"{arg} is empty; give at least one layer")
    if len(inputs) != len(output_grads):
        raise ValueError(
            f"{prefix}inputs has {len(inputs)} layers but {prefix}output_grads has "
            f"{len(output_grads)}"
        )
    batch_size: int | None = None
    for layer, (a, g) in enumerate(zip(inputs, output_grads, strict=True)):
        for arg, t in (
            (f"{prefix}inputs[{layer}]", a),
            (f"{prefix}output_grads[{layer}]", g),
        ):
            if not isinstance(t, Tensor):
                raise TypeError(f"{arg} must be a tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"{arg} must be a floating-point tensor, got {t.dtype}")
            if t.ndim != 3:
                raise ValueError(
                    f"{arg} must be (V, B, D) (views, batch, features), got shape "
                    f"{tuple(t.shape)}"
                )
        if a.shape[:2] != g.shape[:2]:
            raise ValueError(
                f"layer {layer}: {prefix}inputs[{layer}] is {tuple(a.shape)} and "
                f"{prefix}output_grads[{layer}] is {tuple(g.shape)}; their views V and "
                "batch size B must match"
            )
        if batch_size is None:
            batch_size = int(a.shape[1])
        elif a.shape[1] != batch_size:
            raise ValueError(
                f"all layers need the same batch size: layer 0 has B = {batch_size}, "
                f"layer {layer} has B = {a.shape[1]}"
            )
        if a.device != inputs[0].device or g.device != inputs[0].device:
            raise ValueError(
                f"layer {layer}: all tensors must be on one device, got "
                f"{a.device} and {g.device} (layer 0 is on {inputs[0].device})"
            )
    assert batch_size is not None
    return len(inputs), batch_size


def _bias_flags(bias: bool | Sequence[bool], num_layers: int) -> list[bool]:
    if isinstance(bias, bool):
        return [bias] * num_layers
    if isinstance(bias, Sequence) and all(isinstance(b, bool) for b in bias):
        if len(bias) != num_layers:
            raise ValueError(
                f"bias has {len(bias)} flags for {num_layers} layers; give one per layer"
            )
        return list(bias)
    raise TypeError(
        f"bias must be a bool or a list of bools (one per layer), got {bias!r}"
    )


def _cross_scores(
    inputs: Sequence[Tensor],
    output_grads: Sequence[Tensor],
    other_inputs: Sequence[Tensor],
    other_output_grads: Sequence[Tensor],
    bias: Sequence[bool],
    dtype: torch.dtype,
) -> Tensor:
    """Σ_layers Σ_{s,t} (g_i^s·g'_j^t)(a_i^s·a'_j^t + bias): (B, B') in ``dtype``."""
    scores: Tensor | None = None
    for a, g, a2, g2, with_bias in zip(
        inputs, output_grads, other_inputs, other_output_grads, bias, strict=True
    ):
        views, rows = a.shape[:2]
        views2, cols = a2.shape[:2]
        # (V·B, D) view-major rows: one matmul per Gram matrix, O((V·B)² D).
        gram = (
            a.to(dtype).reshape(views * rows, -1)
            @ a2.to(dtype).reshape(views2 * cols, -1).T
        )
        if with_bias:
            gram.add_(1.0)
        gram.mul_(
            g.to(dtype).reshape(views * rows, -1)
            @ g2.to(dtype).reshape(views2 * cols, -1).T
        )
        layer = gram.view(views, rows, views2, cols).sum(dim=(0, 2))
        scores = layer if scores is None else scores.add_(layer)
    assert scores is not None
    return scores


def _self_scores(
    inputs: Sequence[Tensor],
    output_grads: Sequence[Tensor],
    bias: Sequence[bool],
    dtype: torch.dtype,
) -> Tensor:
    """The diagonal S_ii = ‖∇ℓ_i‖² without the (B, B) matrix: (B,) in ``dtype``."""
    diagonal: Tensor | None = None
    for a, g, with_bias in zip(inputs, output_grads, bias, strict=True):
        a, g = a.to(dtype), g.to(dtype)
        gram = torch.einsum("sbd,tbd->bst", a, a)
        if with_bias:
            gram = gram + 1.0
        layer = (gram * torch.einsum("sbd,tbd->bst", g, g)).sum(dim=(1, 2))
        diagonal = layer if diagonal is None else diagonal + layer
    assert diagonal is not None
    return diagonal


def pairwise_tracin(
    inputs: Sequence[Tensor],
    output_grads: Sequence[Tensor],
    bias: bool | Sequence[bool] = True,
) -> Tensor:
    """Pairwise TracIn scores S_ij = ⟨∇_Θ ℓ_i, ∇_Θ ℓ_j⟩ of Linear layers, from Gram matrices.

    For a Linear layer y = W a + b applied to V views of every sample, with inputs
    a_i^s and loss gradients at its output g_i^s = ∂ℓ_i/∂y_i^s, the per-sample gradient
    is ∇_W ℓ_i = Σ_s g_i^s (a_i^s)ᵀ and ∇_b ℓ_i = Σ_s g_i^s, hence

        S_ij = Σ_layers Σ_{s,t} (g_i^s · g_j^t) (a_i^s · a_j^t + 1)

    (the ``+ 1`` is the bias term). Two (V·B)×(V·B) Gram matrices per layer give S in
    O((V·B)² (D_in + D_out)) time and memory O((V·B)²), never the B×D_out×D_in
    per-sample gradients (Goodfellow 2015; the TracIn score of Pruthi et al. 2020 at
    one checkpoint, used by AP-BYOL, Zeng et al. MICCAI 2023, arXiv:2306.00112).

    The identity is exact for whatever ``inputs`` and ``output_grads`` are given; it is
    the per-sample gradient inner product when g_i^s is the gradient of sample i's own
    loss, i.e. when nothing between the layer's output and the loss mixes samples (see
    :class:`TracInPositiveMiner` for which layers of lightly's heads that holds for).

    Computed in float32 (half and bfloat16 inputs are cast up, autocast is disabled),
    or in float64 when any input is float64.

    Args:
        inputs: One tensor per layer, (V, B, D_in): the layer's input for view s of
            sample i at ``[s, i]``. V may differ between layers (e.g. token positions
            flattened into views), B may not.
        output_grads: One tensor per layer, (V, B, D_out): ∂ℓ_i/∂y_i^s, same V and B
            as the layer's input.
        bias: Whether each layer has a bias (one flag, or one per layer).

    Returns:
        S, (B, B), symmetric positive semi-definite.

    Raises:
        TypeError: A list is not a list of floating-point tensors, or ``bias`` is not
            bools.
        ValueError: The lists differ in length or are empty, a tensor is not 3-D, or
            views / batch sizes do not match.

    Example:
        >>> import torch
        >>> from lightly_derm.miners import pairwise_tracin
        >>> a = torch.randn(2, 8, 16)   # 2 views, 8 samples, 16 input features
        >>> g = torch.randn(2, 8, 4)    # loss gradients at the 4 outputs
        >>> pairwise_tracin([a], [g]).shape
        torch.Size([8, 8])
    """
    num_layers, _ = _check_layer_lists(inputs, output_grads)
    flags = _bias_flags(bias, num_layers)
    dtype = _compute_dtype([*inputs, *output_grads])
    with torch.autocast(inputs[0].device.type, enabled=False):
        return _cross_scores(inputs, output_grads, inputs, output_grads, flags, dtype)


def _linear_layers(module: nn.Module, name: str) -> list[nn.Linear]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(f"{name} ({type(module).__name__}) has no nn.Linear layer")
    return layers


class TracInPositiveMiner(nn.Module):
    """Mines an extra positive per sample: the other sample with the largest TracIn score.

    AP-BYOL (Zeng et al., "Additional Positive Enables Better Representation Learning
    for Medical Images", MICCAI 2023, arXiv:2306.00112) pulls each image towards the
    batch sample whose loss gradient is most similar to its own,
    j*(i) = argmax_{j≠i} S_ij with S_ij = ⟨∇_Θ ℓ_i, ∇_Θ ℓ_j⟩ (TracIn at the current
    checkpoint; the learning-rate factor does not change the argmax).

    How it works inside a training step, without a second forward: :meth:`capture`
    hooks the chosen ``nn.Linear`` layers during the online forward and keeps their
    inputs a_i^s and outputs y_i^s; calling the miner with the per-sample loss ℓ (B,)
    computes g_i^s = ∂(Σ_j ℓ_j)/∂y_i^s with one :func:`torch.autograd.grad` from the
    loss to those outputs only (the graph is kept for the training backward), then, under
    ``no_grad``, the scores with :func:`pairwise_tracin`-style Gram matrices and the
    top-k. Nothing syncs with the host unless ``group_ids``/``exclude`` is given. For
    the last layer, that autograd call runs only through the loss (normalisation and
    cosine), evaluating the closed form ∂ℓ/∂p (:doc:`/ap_byol`) for whatever
    per-sample loss is given.

    Exactness (the layer outputs are where the per-sample structure matters):

    - S is exactly ⟨∇_Θ ℓ_i, ∇_Θ ℓ_j⟩ over the chosen layers' weights and biases when
      nothing between each chosen layer's output and the loss couples samples, because
      then ∂(Σ_j ℓ_j)/∂y_i^s = ∂ℓ_i/∂y_i^s. This holds for the **last Linear of
      lightly's** ``BYOLPredictionHead`` (Linear → BN → ReLU → Linear) **in train mode**
      (``layers="last"``, the default): only the per-sample cosine loss follows it. A
      BatchNorm *before* the layer is harmless: it only makes a_i^s depend on the other
      samples, and a_i^s enters ∇_W ℓ_i = Σ_s g_i^s (a_i^s)ᵀ as the value it had in the
      forward, which is what the hook captures.
    - It is exact for every layer in eval mode (BatchNorm then uses running
      statistics, a per-sample affine map), so ``"predictor"`` and ``"all"`` are exact
      there.
    - In train mode, a layer followed by a BatchNorm (the predictor's first Linear;
      the projector's Linears, which the predictor's BatchNorm follows) gets g_i^s =
      ∂(Σ_j ℓ_j)/∂y_i^s, which includes the paths through the batch statistics. Then
      ĝ_i = Σ_s g_i^s (a_i^s)ᵀ is sample i's share of the batch gradient
      (Σ_i ĝ_i = ∇_W Σ_j ℓ_j exactly, so Σ_ij S_ij = ‖∇_Θ Σ_j ℓ_j‖²), and S is
      the Gram matrix of these shares: the standard per-example decomposition of
      Goodfellow (2015) and Captum's ``TracInCPFast``, not the exact inner product of
      coupled per-sample gradients (which would need a Jacobian per sample). Holding
      the BatchNorm statistics constant would be another approximation: it drops the
      centring terms, g_i = γ/σ · d_i instead of γ/σ · (d_i − mean_j d_j −
      x̂_i mean_j(d_j x̂_j)) with d the gradient at the BatchNorm output. Both agree with
      the exact value wherever no train-mode BatchNorm follows the layer.

    ``layers`` chooses Θ, and with it what S is (train mode, lightly's heads):

    - ``"last"`` (default): the last ``nn.Linear`` of the prediction head. S is exact
      TracIn, ⟨∇_Θ ℓ_i, ∇_Θ ℓ_j⟩ of per-sample gradients (TracIn's last-layer setting).
    - ``"predictor"``: every ``nn.Linear`` of the prediction head. The first one is
      followed by a train-mode BatchNorm, so its part of S is the Gram matrix of each
      sample's *share of the batch gradient*, not of per-sample gradients; the best
      matches agree with brute-force per-sample TracIn only about 56–75 % of the time
      (measured on BYOL heads). Exact in eval mode only.
    - ``"all"``: every ``nn.Linear`` of the projection and the prediction head; all
      but the last are followed by a train-mode BatchNorm, so S is dominated by the
      batch-gradient shares (best matches agree with brute force about 38–39 % of the
      time). Exact in eval mode only.
    - a list of ``nn.Linear`` modules: exactly those (no :meth:`attach` needed); exact
      for the layers that no train-mode BatchNorm follows.

    No exact per-sample form is offered for the layers before a train-mode BatchNorm:
    it needs one Jacobian per sample. Use ``"last"`` for TracIn as specified, or call
    the miner with the heads in eval mode (BatchNorm on running statistics) for an exact
    score of a slightly different model.

    The heads are given with :meth:`attach` (for SimCLR-style models without a
    predictor, attach the projection head as ``prediction_head``).

    Data layout: the captured rows of each layer must be view-major — forward each view
    as its own (B, …) batch, as lightly's examples do, or the views concatenated
    ``torch.cat([x0, x1])``. A layer input of shape (n, …, D) with extra dimensions
    (tokens) counts each position as a view.

    Distributed (``gather_distributed=True`` under ``torch.distributed``): every rank
    computes g for its own samples, all-gathers (a, g) and ``group_ids`` with
    :func:`lightly.utils.dist.gather` (under ``no_grad``), and scores its B local
    samples against all W·B samples of the global batch; returned indices index the
    global batch (rank r's samples are r·B … r·B + B − 1), the order of
    ``torch.cat(gather(x))``. Every rank needs the same B. In train mode the exact case
    stays exact; per-rank BatchNorm statistics differ from single-process ones unless
    the heads use ``SyncBatchNorm``.

    Args:
        layers: ``"last"`` (exact TracIn), ``"predictor"``, ``"all"`` (batch-gradient
            shares in train mode, see above) or a list of ``nn.Linear``.
        normalize: Use the cosine S_ij / √(S_ii S_jj) instead of raw scores. Raw dot
            products favour samples with large gradients ("hubs"); off by default, as
            in TracIn.
        top_k: How many positives to mine per sample.
        gather_distributed: Mine over the global batch under ``torch.distributed``.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from lightly.models.modules import BYOLPredictionHead
        >>> from lightly_derm.miners import TracInPositiveMiner
        >>> head = BYOLPredictionHead(16, 32, 16)
        >>> miner = TracInPositiveMiner().attach(head)
        >>> z = [torch.randn(8, 16) for _ in range(2)]       # target projections
        >>> with miner.capture():
        ...     p = [head(torch.randn(8, 16)) for _ in range(2)]
        >>> loss = -(F.cosine_similarity(p[0], z[1]) + F.cosine_similarity(p[1], z[0]))
        >>> indices = miner(loss)                          # (8, 1), never i itself
        >>> bool((indices[:, 0] != torch.arange(8)).all())
        True
    """

    def __init__(
        self,
        layers: LayerChoice | Sequence[nn.Linear] = "last",
        normalize: bool = False,
        top_k: int = 1,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self._choice: str | None
        self._layers: list[nn.Linear] | None
        if isinstance(layers, str):
            if layers not in _LAYER_CHOICES:
                raise ValueError(
                    f"layers must be one of {', '.join(map(repr, _LAYER_CHOICES))} or a "
                    f"list of nn.Linear modules, got {layers!r}"
                )
            self._choice, self._layers = layers, None
        elif isinstance(layers, Sequence):
            if not layers:
                raise ValueError("layers is an empty list; give at least one nn.Linear")
            linear: list[nn.Linear] = []
            for k, layer in enumerate(layers):
                if not isinstance(layer, nn.Linear):
                    raise TypeError(
                        f"layers[{k}] must be an nn.Linear, got {type(layer).__name__}"
                    )
                linear.append(layer)
            # A plain list, not a ModuleList: the layers belong to the model, not the miner.
            self._choice, self._layers = None, linear
        else:
            raise TypeError(
                "layers must be 'last', 'predictor', 'all' or a list of nn.Linear, got "
                f"{type(layers).__name__}"
            )
        check_int("top_k", top_k)
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {normalize!r}")
        self.normalize = normalize
        self.top_k = top_k
        self.gather_distributed = gather_distributed
        self._records: list[list[tuple[Tensor, Tensor]]] | None = None

    def extra_repr(self) -> str:
        """Shows the configuration in ``print(model)``."""
        layers = (
            self._choice if self._choice is not None else f"{len(self.layers)} Linear"
        )
        return (
            f"layers={layers}, normalize={self.normalize}, top_k={self.top_k}, "
            f"gather_distributed={self.gather_distributed}"
        )

    def attach(
        self, prediction_head: nn.Module, projection_head: nn.Module | None = None
    ) -> TracInPositiveMiner:
        """Chooses the layers to hook from the model's heads; returns the miner.

        Args:
            prediction_head: The head whose output enters the loss (BYOL's predictor,
                or SimCLR's projection head).
            projection_head: The projector before it; needed for ``layers="all"``.

        Raises:
            ValueError: The miner was built with explicit layers, a head has no
                ``nn.Linear``, or ``"all"`` lacks the projection head.
        """
        if self._choice is None:
            raise ValueError(
                "this miner was built with an explicit list of layers; attach() chooses "
                "layers only for layers='last', 'predictor' or 'all'"
            )
        predictor = _linear_layers(prediction_head, "prediction_head")
        if self._choice == "last":
            self._layers = predictor[-1:]
        elif self._choice == "predictor":
            self._layers = predictor
        else:
            if projection_head is None:
                raise ValueError("layers='all' needs the projection_head in attach()")
            self._layers = (
                _linear_layers(projection_head, "projection_head") + predictor
            )
        return self

    @property
    def layers(self) -> list[nn.Linear]:
        """The hooked ``nn.Linear`` layers (empty before :meth:`attach`)."""
        return list(self._layers or [])

    def _record(
        self, index: int, module: nn.Module, args: tuple[Any, ...], output: Any
    ) -> None:
        if not torch.is_grad_enabled() or self._records is None:
            return  # e.g. a no_grad evaluation forward inside the block
        if (
            not args
            or not isinstance(args[0], Tensor)
            or not isinstance(output, Tensor)
        ):
            raise TypeError(
                f"hooked layer {type(module).__name__} must be called with one tensor"
            )
        self._records[index].append((args[0].detach(), output))

    @contextmanager
    def capture(self) -> Iterator[TracInPositiveMiner]:
        """Records the chosen layers' inputs and outputs during the forward in the block.

        The hooks exist only inside the block (so copies of the model, evaluation
        forwards and checkpoints never see them); what they recorded is kept for the
        next call of the miner, which consumes it.

        Raises:
            RuntimeError: No layers are chosen yet (call :meth:`attach`).
        """
        if not self._layers:
            raise RuntimeError(
                "TracInPositiveMiner has no layers to hook; call "
                "miner.attach(prediction_head, projection_head) first"
            )
        self._records = [[] for _ in self._layers]
        handles = [
            layer.register_forward_hook(partial(self._record, index))
            for index, layer in enumerate(self._layers)
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _layer_tensors(
        self, calls: list[tuple[Tensor, Tensor]], batch_size: int, layer: int
    ) -> tuple[Tensor, list[Tensor]]:
        """Stacks a layer's recorded calls into a view-major (V, B, D_in) input."""
        inputs = []
        for a, _ in calls:
            rows = a.shape[0] if a.ndim > 0 else 0
            if a.ndim < 2 or rows % batch_size != 0:
                raise ValueError(
                    f"hooked layer {layer} ({self.layers[layer]}) saw an input of shape "
                    f"{tuple(a.shape)} in a forward call; its first dimension must be a "
                    f"multiple of the batch size B = {batch_size} (loss.shape[0]): "
                    "forward each view as a (B, ...) batch or the views concatenated"
                )
            inputs.append(_as_views(a, batch_size))
        return torch.cat(inputs, dim=0), [y for _, y in calls]

    def _check_loss(self, loss: Tensor) -> tuple[int, int, bool]:
        """Validates the per-sample loss; returns (B, global batch size, distributed)."""
        if not isinstance(loss, Tensor) or not loss.is_floating_point():
            raise TypeError(
                "loss must be the per-sample loss, a float tensor (B,), got "
                + (
                    f"dtype {loss.dtype}"
                    if isinstance(loss, Tensor)
                    else type(loss).__name__
                )
            )
        if loss.ndim != 1:
            raise ValueError(
                "loss must be the per-sample loss, a float tensor (B,), got shape "
                f"{tuple(loss.shape)}"
            )
        if not loss.requires_grad:
            raise ValueError(
                "loss does not require grad: compute the per-sample loss from the outputs "
                "of the forward recorded by capture(), with gradients enabled"
            )
        batch_size = loss.shape[0]
        distributed = self.gather_distributed and lightly_dist.world_size() > 1
        global_size = batch_size * (lightly_dist.world_size() if distributed else 1)
        if global_size < 2:
            raise ValueError(
                "TracInPositiveMiner needs at least 2 samples to choose another one, got "
                f"a batch of {global_size}"
            )
        return batch_size, global_size, distributed

    def scores(self, loss: Tensor) -> Tensor:
        """TracIn scores (B, B_global) of the recorded forward; consumes the recording.

        Row i holds S_ij (or the cosine S_ij / √(S_ii S_jj) with ``normalize``) for
        every sample j of the (global) batch, self included. Float32, or float64 when
        the model is float64. :meth:`forward` calls this and selects the top-k.

        Args:
            loss: The per-sample loss ℓ (B,) of the forward recorded by
                :meth:`capture` (still attached to the graph).

        Raises:
            RuntimeError: Nothing was recorded (forward outside ``capture()``).
            TypeError: ``loss`` is not a floating-point tensor.
            ValueError: ``loss`` is not a (B,) tensor with a graph, the batch has
                one sample, or the recorded shapes do not fit B.
        """
        records, self._records = self._records, None
        if not self._layers or records is None or any(not calls for calls in records):
            raise RuntimeError(
                "TracInPositiveMiner recorded no forward: run the online forward inside "
                "`with miner.capture():` (with gradients enabled) before calling the miner"
            )
        batch_size, _, distributed = self._check_loss(loss)
        inputs, outputs = [], []
        for layer, calls in enumerate(records):
            a, ys = self._layer_tensors(calls, batch_size, layer)
            inputs.append(a)
            outputs.append(ys)
        flat_outputs = [y for ys in outputs for y in ys]
        # Gradients at the layer outputs only; the graph stays for the training backward
        # and no parameter's .grad is touched.
        grads = torch.autograd.grad(
            loss.sum(), flat_outputs, retain_graph=True, allow_unused=True
        )
        biases = [layer.bias is not None for layer in self.layers]
        with torch.no_grad():
            output_grads, position = [], 0
            for layer, ys in enumerate(outputs):
                layer_grads = grads[position : position + len(ys)]
                position += len(ys)
                if any(g is None for g in layer_grads):
                    raise ValueError(
                        f"the loss does not depend on the output of hooked layer {layer} "
                        f"({self.layers[layer]}); is it the loss of the recorded forward?"
                    )
                output_grads.append(
                    torch.cat([_as_views(g, batch_size) for g in layer_grads], dim=0)
                )
            return self._scores(inputs, output_grads, biases, distributed)

    def _scores(
        self,
        inputs: list[Tensor],
        output_grads: list[Tensor],
        biases: list[bool],
        distributed: bool,
    ) -> Tensor:
        batch_size = inputs[0].shape[1]
        dtype = _compute_dtype([*inputs, *output_grads])
        with torch.autocast(inputs[0].device.type, enabled=False):
            inputs = [a.to(dtype) for a in inputs]
            output_grads = [g.to(dtype) for g in output_grads]
            rank, all_inputs, all_grads = 0, inputs, output_grads
            if distributed:
                rank, all_inputs, all_grads = lightly_dist.rank(), [], []
                for a, g in zip(inputs, output_grads, strict=True):
                    # One collective per layer: (V, B, D_in + D_out) from every rank.
                    packed = torch.cat(
                        lightly_dist.gather(torch.cat([a, g], dim=2)), dim=1
                    )
                    all_inputs.append(packed[..., : a.shape[2]])
                    all_grads.append(packed[..., a.shape[2] :])
            scores = _cross_scores(
                inputs, output_grads, all_inputs, all_grads, biases, dtype
            )
            if self.normalize:
                norms = (
                    _self_scores(all_inputs, all_grads, biases, dtype)
                    .clamp_min(torch.finfo(dtype).tiny)
                    .sqrt()
                )
                local = norms[rank * batch_size : (rank + 1) * batch_size]
                scores = scores / (local[:, None] * norms[None, :])
        return scores

    def forward(
        self,
        loss: Tensor,
        group_ids: Tensor | None = None,
        exclude: Tensor | None = None,
    ) -> Tensor:
        """Returns the indices (B, top_k) of each sample's mined positives, best first.

        Args:
            loss: The per-sample loss ℓ (B,) computed from the forward recorded by
                :meth:`capture` (still attached to the graph).
            group_ids: Optional (B,) int ids of the source image of every sample;
                samples with the same id (views of one image repeated by a sampler)
                are never chosen for each other. Gathered across ranks when mining is
                distributed. Checking that every sample keeps ``top_k`` candidates costs
                one host sync unless ``group_ids`` is on the CPU (and not distributed).
            exclude: Optional bool mask (B, B_global), ``True`` where sample i must not
                choose j.

        Returns:
            int64 indices (B, top_k) into the (global) batch, never the sample itself,
            selected under ``no_grad``.

        Raises:
            RuntimeError: Nothing was recorded (forward outside ``capture()``).
            TypeError: ``loss`` is not a floating-point tensor.
            ValueError: ``loss`` is not a (B,) tensor with a graph, the batch has one
                sample, ``top_k`` ≥ the global batch size, the recorded shapes do not fit
                B, or exclusion leaves a sample fewer than ``top_k`` candidates.
        """
        batch_size, global_size, distributed = self._check_loss(loss)
        if self.top_k >= global_size:
            self._records = None
            raise ValueError(
                f"top_k = {self.top_k} needs a batch of more than {self.top_k} samples, "
                f"got {global_size}"
            )
        scores = self.scores(loss)
        with torch.no_grad():
            rank = lightly_dist.rank() if distributed else 0
            blocked = self._blocked_pairs(
                batch_size,
                global_size,
                rank,
                group_ids,
                exclude,
                distributed,
                scores.device,
            )
            scores = scores.masked_fill(blocked, float("-inf"))
            return scores.topk(self.top_k, dim=1).indices

    def _blocked_pairs(
        self,
        batch_size: int,
        global_size: int,
        rank: int,
        group_ids: Tensor | None,
        exclude: Tensor | None,
        distributed: bool,
        device: torch.device,
    ) -> Tensor:
        """The (B, B_global) mask of pairs never chosen: self, same source, ``exclude``."""
        if group_ids is None and exclude is None:
            return _self_pairs(batch_size, global_size, rank, device)
        if exclude is not None and (
            not isinstance(exclude, Tensor)
            or exclude.dtype != torch.bool
            or exclude.shape != (batch_size, global_size)
        ):
            raise ValueError(
                f"exclude must be a bool tensor ({batch_size}, {global_size}) "
                "(local samples × global batch), got "
                + (
                    f"{exclude.dtype} {tuple(exclude.shape)}"
                    if isinstance(exclude, Tensor)
                    else type(exclude).__name__
                )
            )
        ids = None if group_ids is None else _check_group_ids(group_ids, batch_size)
        # Build the mask where the caller's tensors live: on the CPU the check below
        # costs no device sync.
        where = (
            ids.device
            if ids is not None and not distributed
            else exclude.device
            if exclude is not None and ids is None
            else device
        )
        blocked = _self_pairs(batch_size, global_size, rank, where)
        if ids is not None:
            if distributed:
                all_ids = torch.cat(lightly_dist.gather(ids.to(device)))
            else:
                all_ids = ids
            blocked |= ids.to(where)[:, None] == all_ids.to(where)[None, :]
        if exclude is not None:
            blocked |= exclude.to(where)
        fewest = int((~blocked).sum(dim=1).min())
        if fewest < self.top_k:
            raise ValueError(
                f"group_ids/exclude leave a sample only {fewest} candidate(s) for "
                f"top_k = {self.top_k}; the batch needs more distinct source images"
            )
        return blocked.to(device, non_blocking=True)


def _self_pairs(
    batch_size: int, global_size: int, rank: int, device: torch.device
) -> Tensor:
    """The (B, B_global) mask of (i, rank·B + i): elementwise, so no host sync.

    (An indexed assignment ``mask[rows, cols] = True`` copies its value to the device
    first, a synchronising copy from pageable host memory on CUDA.)
    """
    columns = torch.arange(global_size, device=device)
    rows = torch.arange(batch_size, device=device) + rank * batch_size
    return columns[None, :] == rows[:, None]


def _as_views(x: Tensor, batch_size: int) -> Tensor:
    """(V·B, …, D) view-major rows → (V·T, B, D) with every extra position a view."""
    views = x.shape[0] // batch_size
    x = x.reshape(views, batch_size, -1, x.shape[-1])  # (V, B, T, D)
    return x.transpose(1, 2).reshape(-1, batch_size, x.shape[-1])


def _check_group_ids(group_ids: Tensor, batch_size: int) -> Tensor:
    if (
        not isinstance(group_ids, Tensor)
        or group_ids.shape != (batch_size,)
        or group_ids.is_floating_point()
        or group_ids.is_complex()
        or group_ids.dtype == torch.bool
    ):
        raise ValueError(
            f"group_ids must be an int tensor ({batch_size},) with one source id per "
            "sample, got "
            + (
                f"{group_ids.dtype} {tuple(group_ids.shape)}"
                if isinstance(group_ids, Tensor)
                else type(group_ids).__name__
            )
        )
    return group_ids.long()
