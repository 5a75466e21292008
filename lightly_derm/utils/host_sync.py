"""Finding host synchronisations in GPU code without a GPU.

Builds on :class:`torch.utils._python_dispatch.TorchDispatchMode` and
:class:`torch.overrides.TorchFunctionMode`, which see every ATen operator and every
tensor method call. ``torch.cuda.set_sync_debug_mode`` reports synchronisations only
while code runs on a CUDA device; this module recognises, on any device (the CPU
included), the operations that synchronise the host with the device *when the tensors
live on a GPU*:

- reading a value to the host: ``.item()``, ``bool(t)``, ``int(t)``, ``float(t)``
  (ATen ``_local_scalar_dense``), ``.tolist()``, ``.numpy()``, ``.cpu()``;
- operators whose output size depends on the values: ``nonzero``, indexing or
  assignment with a boolean mask (``x[mask]``, ``x[mask] = v``), ``masked_select``,
  ``unique``, ``bincount``, ``repeat_interleave`` with a tensor of repeats and no
  ``output_size``, ``torch.equal``;
- (``factories=True``) tensors made from Python data (``torch.tensor(x, device=d)``
  copies from the host, synchronously on a GPU; Lightning's ``self.log`` of a Python
  float does this), and tensors created by a factory function without ``device=``
  (``torch.zeros(n)``): on the host, so moving them to the GPU costs a synchronising
  copy from pageable memory.

Every record names the operator, the reason and the first source line outside torch.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSync", "HostSyncRecorder", "record_host_syncs"]

_READS = "reads a device value on the host"
_DATA_DEPENDENT = "output size depends on device values (the host waits for them)"
_HOST_TENSOR = (
    "creates a tensor on the host without device=; moving it to the GPU is a "
    "synchronising copy from pageable memory"
)

_FROM_PYTHON = (
    "copies Python data from the host; with device= a GPU that is a synchronising "
    "copy (e.g. self.log() of a Python float); use torch.full(..., device=) or keep "
    "the value on the device"
)

#: ATen operators (overload packets) that always synchronise on CUDA.
_SYNC_OPS: dict[str, str] = {
    "_local_scalar_dense": _READS,
    "nonzero": _DATA_DEPENDENT,
    "masked_select": _DATA_DEPENDENT,
    "_unique": _DATA_DEPENDENT,
    "_unique2": _DATA_DEPENDENT,
    "unique_dim": _DATA_DEPENDENT,
    "unique_consecutive": _DATA_DEPENDENT,
    "bincount": _DATA_DEPENDENT,
    "equal": _READS,
    "is_nonzero": _READS,
}
#: Indexing operators that synchronise only with boolean (mask) indices.
_INDEX_OPS = ("index", "index_put", "index_put_", "_index_put_impl_")
#: Tensor methods that copy to the host.
_HOST_METHODS = {"tolist", "numpy", "cpu"}
#: Factory functions that place their result on the default (host) device.
_FACTORIES = {
    "tensor",
    "as_tensor",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "eye",
    "linspace",
    "rand",
    "randn",
    "randint",
    "randperm",
}


#: Frames never named as the location: torch and Lightning internals (the caller is).
_SKIPPED = ("/torch/", "/pytorch_lightning/", "/lightning_fabric/", "/contextlib.py")


@dataclass(frozen=True)
class HostSync:
    """One recorded operation that synchronises (or would, on a GPU).

    Attributes:
        op: The operator or function, e.g. ``"aten.index.Tensor"``.
        reason: Why it synchronises.
        location: ``"path:line in function"`` of the first frame outside torch.
    """

    op: str
    reason: str
    location: str

    def __str__(self) -> str:
        return f"{self.op} at {self.location}: {self.reason}"


@dataclass
class HostSyncRecorder:
    """What :func:`record_host_syncs` collected (a list of :class:`HostSync`)."""

    records: list[HostSync] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[HostSync]:
        return iter(self.records)

    def syncs(self) -> list[HostSync]:
        """The records that synchronise by themselves (no host-tensor warnings)."""
        return [r for r in self.records if r.reason not in (_HOST_TENSOR, _FROM_PYTHON)]

    def host_tensors(self) -> list[HostSync]:
        """The tensor creations on or from the host (``factories=True``)."""
        return [r for r in self.records if r.reason in (_HOST_TENSOR, _FROM_PYTHON)]

    def summary(self) -> str:
        """One line per distinct record, with its count."""
        counts: dict[HostSync, int] = {}
        for record in self.records:
            counts[record] = counts.get(record, 0) + 1
        return (
            "\n".join(f"{n}× {record}" for record, n in counts.items())
            or "no host synchronisations"
        )


def _location(skip: tuple[str, ...]) -> str:
    for frame in reversed(traceback.extract_stack()):
        name = frame.filename.replace("\\", "/")
        if name.endswith(skip) or any(part in name for part in _SKIPPED):
            continue
        return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "<unknown>"


def _has_mask_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 else ()
    if not isinstance(indices, (list, tuple)):
        return False
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
        for i in indices
    )


class _DispatchRecorder(TorchDispatchMode):
    def __init__(self, add: Callable[[str, str], None]) -> None:
        super().__init__()
        self.add = add

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in _SYNC_OPS:
            self.add(str(func), _SYNC_OPS[name])
        elif name in _INDEX_OPS and _has_mask_index(args):
            self.add(str(func) + " (boolean mask)", _DATA_DEPENDENT)
        elif (
            name == "repeat_interleave"
            and isinstance(args[0] if args else None, torch.Tensor)
            and kwargs.get("output_size") is None
            and "Tensor" in str(func)
        ):
            self.add(str(func) + " (no output_size)", _DATA_DEPENDENT)
        return func(*args, **kwargs)


class _FunctionRecorder(TorchFunctionMode):
    def __init__(self, add: Callable[[str, str], None], factories: bool) -> None:
        super().__init__()
        self.add = add
        self.factories = factories

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        owner = getattr(func, "__qualname__", "")
        if owner.startswith("TensorBase.") or owner.startswith("Tensor."):
            if name in _HOST_METHODS:
                self.add(f"Tensor.{name}", "copies device data to the host")
            elif name == "to" and _to_host(args, kwargs):
                self.add("Tensor.to('cpu')", "copies device data to the host")
        elif self.factories and name in _FACTORIES and _is_torch_function(func):
            data = args[0] if args else kwargs.get("data")
            if name in ("tensor", "as_tensor"):
                if not isinstance(data, torch.Tensor):
                    self.add(f"torch.{name}(<Python data>)", _FROM_PYTHON)
            elif kwargs.get("device") is None:
                self.add(f"torch.{name}", _HOST_TENSOR)
        return func(*args, **kwargs)


def _is_torch_function(func: Any) -> bool:
    return getattr(func, "__module__", "") in ("torch", "torch._C._VariableFunctions")


def _to_host(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``.to("cpu")`` spelled out, or any move of a device tensor to the host.

    (``.to(other.device)`` on a CPU run is not flagged: on a GPU it stays there.)
    """
    source = args[0] if args else None
    targets = list(args[1:]) + [kwargs.get("device")]
    for target in targets:
        if isinstance(target, str) and target.startswith("cpu"):
            return True
        if (
            isinstance(target, torch.device)
            and target.type == "cpu"
            and isinstance(source, torch.Tensor)
            and source.device.type != "cpu"
        ):
            return True
    return False


@contextmanager
def record_host_syncs(factories: bool = False) -> Iterator[HostSyncRecorder]:
    """Records the operations in the block that synchronise the host with a GPU.

    Works on any device, so a CPU test can guard a training step against
    ``.item()``, boolean-mask indexing and friends (see the module docstring). The
    operations still run normally.

    Args:
        factories: Also record tensors created without ``device=``.

    Yields:
        A :class:`HostSyncRecorder`, filled when the block ends.

    Example:
        >>> import torch
        >>> from lightly_derm.utils.host_sync import record_host_syncs
        >>> x = torch.randn(8)
        >>> with record_host_syncs() as syncs:
        ...     y = x[x > 0].sum()      # boolean mask: nonzero on the device
        ...     z = float(x.max())      # a value read on the host
        >>> len(syncs)
        2
    """
    recorder = HostSyncRecorder()
    skip = (__file__,)

    def add(op: str, reason: str) -> None:
        recorder.records.append(HostSync(op, reason, _location(skip)))

    with _FunctionRecorder(add, factories), _DispatchRecorder(add):
        yield recorder
