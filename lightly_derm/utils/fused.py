"""Optimisers built with PyTorch's fused kernels where they exist.

Builds on the ``fused`` option of :class:`torch.optim.SGD`, :class:`torch.optim.Adam`
and :class:`torch.optim.AdamW` (one kernel per device and dtype updates every
parameter). PyTorch does not choose it by default: on a GPU its default is the
``foreach`` implementation (a few kernels per step over lists of tensors), and on the
CPU a Python loop over the parameters, one small operation at a time. Measured on a
quiet 2-core CPU (``benchmarks/optimizer_step.py``): AdamW over a ResNet-18
FlexibleUNet is bound by memory traffic and gains 1.1 times, a whole 64-px fine-tune
step 1.15 times (SGD with momentum over a ResNet-18 would step 1.8 times as fast). On a
GPU fusing removes kernel launches, which count when several small jobs share it.

The update is the same algorithm (``tests/utils/test_fused.py`` checks a few steps
against float64 loop references); only the floating-point order differs. The package
fuses AdamW only: PyTorch's fused SGD fails when parameters get their first gradient
at different steps (its momentum buffers are taken as all initialised or none), which
FG-SSL's progressive steps do, and on the CPU SGD's ``foreach`` form is slower than its
default. Fused kernels are not used where they would change behaviour: under fp16
mixed precision a fused optimiser unscales the gradients itself, so Lightning would
hand callbacks scaled gradients and refuses gradient clipping; there, and where the
installed PyTorch has no fused kernel for the parameters' device, the optimiser is
built with ``foreach``, or with PyTorch's default where that fails too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

OptimizerT = TypeVar("OptimizerT", bound=torch.optim.Optimizer)


def uses_grad_scaler(trainer: Any) -> bool:
    """Whether a Lightning ``trainer`` scales gradients (fp16 mixed precision).

    ``None`` (no trainer yet) is ``False``.

    Example:
        >>> import pytorch_lightning as pl
        >>> uses_grad_scaler(pl.Trainer(accelerator="cpu", logger=False))
        False
    """
    plugin = getattr(trainer, "precision_plugin", None)
    return getattr(plugin, "scaler", None) is not None


def fused_optimizer(
    optimizer_class: Callable[..., OptimizerT],
    params: Iterable[Any],
    trainer: Any = None,
    **kwargs: Any,
) -> OptimizerT:
    """``optimizer_class(params, fused=True, **kwargs)``, or the unfused optimiser.

    Args:
        optimizer_class: An optimiser with a ``fused`` option (Adam, AdamW, SGD).
        params: Parameters or parameter groups.
        trainer: The Lightning trainer that will step it, if known: under its
            gradient scaler (fp16 mixed precision, :func:`uses_grad_scaler`) the
            optimiser is built with ``foreach`` instead.
        **kwargs: The optimiser's other arguments.

    Returns:
        The optimiser, fused where PyTorch has the kernel for every parameter's device
        and dtype (``torch>=2.4`` on the CPU), else with ``foreach``, else PyTorch's
        default.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 2)
        >>> optimizer = fused_optimizer(torch.optim.AdamW, model.parameters(), lr=1e-3)
        >>> optimizer.defaults["fused"]
        True
    """
    groups = list(params)
    options: list[dict[str, Any]] = [{"foreach": True}]
    if not uses_grad_scaler(trainer):
        options.insert(0, {"fused": True})
    for option in options:
        try:
            return optimizer_class(groups, **option, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            continue  # no such kernel for these parameters, or an older PyTorch
    return optimizer_class(groups, **kwargs)  # a real error raises here


__all__ = ["fused_optimizer", "uses_grad_scaler"]
