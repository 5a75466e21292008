"""Forward a batch with its samples shuffled across processes (MoCo's shuffle-BN, with gradients).

Builds on :func:`torch.distributed.all_gather` (the inputs, no gradient),
:func:`torch.distributed.broadcast` (one permutation, drawn on rank 0) and
:func:`lightly.utils.dist.gather` (the outputs, with gradients back to the rank that
computed them). MoCo (He et al., CVPR 2020, arXiv:1911.05722) shuffles the key
encoder's batch across GPUs so that BatchNorm statistics cannot leak which samples are
positives; the GraVIS authors shuffle views across DataParallel replicas for the same
reason. Here the shuffled forward also carries gradients, so it serves the trained
encoder itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from lightly.utils import dist as lightly_dist
from torch import Tensor

__all__ = ["cross_rank_shuffled"]


def cross_rank_shuffled(
    forward: Callable[[Tensor], Tensor],
    inputs: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``forward(inputs)``, with the inputs of all processes shuffled across processes first.

    Every process gathers the N inputs of all W processes, takes its N-row slice of
    one random permutation of the W·N rows (drawn on rank 0 from ``generator`` and
    broadcast), runs ``forward`` on it, gathers the outputs of all processes with
    gradients and returns the rows of its own inputs, in their order. So each
    BatchNorm batch is a random draw from the global batch instead of the process's
    own samples, and the result — and its gradient — is that of ``forward`` on those
    mixed batches. Without an initialised process group of more than one process it is
    ``forward(inputs)``.

    Cost per call: one all-gather of the inputs, one broadcast of W·N indices, one
    all-gather of the outputs (and an all-reduce of their gradients in backward).

    Args:
        forward: Maps (N, …) inputs to (N, D) outputs.
        inputs: (N, …), the same N on every process.
        generator: Random generator of the permutation (used on rank 0; on the
            inputs' device); ``None`` uses the default generator.

    Returns:
        (N, D): row i is ``forward``'s output for ``inputs[i]``.

    Raises:
        ValueError: ``forward`` returns another number of rows than it was given.

    Example:
        >>> import torch
        >>> from lightly_derm.methods.cross_rank_shuffle import cross_rank_shuffled
        >>> layer = torch.nn.Linear(4, 2)
        >>> x = torch.randn(3, 4)
        >>> torch.equal(cross_rank_shuffled(layer, x), layer(x))   # one process
        True
    """
    if not (dist.is_available() and dist.is_initialized()):
        return forward(inputs)
    world_size = dist.get_world_size()
    if world_size < 2:
        return forward(inputs)
    rank = dist.get_rank()
    n = inputs.shape[0]
    with torch.no_grad():
        gathered = [torch.empty_like(inputs) for _ in range(world_size)]
        dist.all_gather(gathered, inputs.contiguous())
        everything = torch.cat(gathered)
        if rank == 0:
            permutation = torch.randperm(
                world_size * n,
                generator=generator,
                device=generator.device if generator is not None else inputs.device,
            ).to(inputs.device)
        else:
            permutation = torch.empty(
                world_size * n, dtype=torch.long, device=inputs.device
            )
        dist.broadcast(permutation, src=0)
        mine = permutation[rank * n : (rank + 1) * n]
        local = everything[mine]
    outputs = forward(local)
    if outputs.shape[0] != n:
        raise ValueError(
            f"forward returned {outputs.shape[0]} rows for {n} inputs; it must map each "
            "input to one output row"
        )
    # row k of all_outputs is the output of everything[permutation[k]]
    all_outputs = torch.cat(lightly_dist.gather(outputs))
    inverse = torch.empty_like(permutation)
    inverse[permutation] = torch.arange(world_size * n, device=permutation.device)
    return all_outputs[inverse[rank * n : (rank + 1) * n]]
