"""Bad-input contracts over every registered component: clear errors, never wrong numbers.

The companion of ``test_contracts.py`` (which checks that components work): these check
how they fail. Every registered loss, miner, transform and method is fed inputs of the
wrong rank, shape and dtype, degenerate batches (groups of one, a batch of one,
identical embeddings), NaN, and every PIL image mode users have (grayscale, RGBA,
16-bit, CMYK, palette, float). A component must either handle an input correctly or
raise a ``TypeError`` / ``ValueError`` whose message says what is wrong — never another
exception from deep inside torch, and never a finite number computed from garbage.
Like ``KIND_CONTRACTS``, the parameters come from the registry, so a new plugin is
checked as soon as it is installed; what a contract needs comes from the component's
metadata (docs/plugins.rst).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lightly_derm import registry
from lightly_derm.plugins import ComponentInfo

INPUT_CONTRACTS: dict[str, Callable[[ComponentInfo, Any], None]] = {}

CHECKED_KINDS = ("loss", "miner", "transform", "method")
COMPONENTS = [i for i in registry.list() if i.kind in CHECKED_KINDS]
IDS = [f"{i.kind}/{i.name}" for i in COMPONENTS]


def input_contract(kind: str) -> Callable:
    def decorate(fn: Callable) -> Callable:
        INPUT_CONTRACTS[kind] = fn
        return fn

    return decorate


def raises_clearly(
    error: type[Exception] | tuple[type[Exception], ...],
    fn: Callable[[], Any],
    label: str,
    mentions: tuple[str, ...] = (),
) -> str:
    """Calls ``fn``; it must raise ``error`` (not another type) with a useful message."""
    try:
        fn()
    except error as exc:
        message = str(exc)
        assert len(message) > 15, f"{label}: the message {message!r} says too little"
        for word in mentions:
            assert word in message, f"{label}: {message!r} does not mention {word!r}"
        return message
    except Exception as exc:  # noqa: BLE001 - the point of the contract
        pytest.fail(
            f"{label}: expected {error}, got {type(exc).__name__}: {exc}", pytrace=False
        )
    pytest.fail(f"{label}: expected {error}, nothing was raised", pytrace=False)


def seed_all(seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# ---------------------------------------------------------------------------- loss
def _loss_inputs(info: ComponentInfo, z: torch.Tensor) -> tuple[Any, ...]:
    inputs = info.metadata.get("inputs")
    if inputs == "grouped":
        return z, torch.arange(z.shape[0] // 3).repeat_interleave(3)
    if inputs == "pair":
        return z, z.flip(0)
    pytest.fail(f"loss {info.name!r} declares no inputs='grouped' or 'pair'")


@input_contract("loss")
def loss_input_contract(info: ComponentInfo, loss_fn: Any) -> None:
    """Wrong rank, dtype and shape raise; degenerate batches are finite; NaN stays NaN."""
    grouped = info.metadata.get("inputs") == "grouped"
    z = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    good = _loss_inputs(info, z)
    name = f"loss {info.name!r}"
    # Wrong rank / dtype / type of the embeddings (first argument).
    for label, bad, error in (
        ("1-D embeddings (N,)", z[:, 0], ValueError),
        ("3-D embeddings (N, D, 1)", z[:, :, None], ValueError),
        ("no features (N, 0)", z[:, :0], ValueError),
        ("int64 embeddings", z.long(), TypeError),
        ("a list instead of a tensor", z.tolist(), TypeError),
    ):
        args = (bad, *good[1:]) if grouped else (bad, bad)
        raises_clearly(error, lambda a=args: loss_fn(*a), f"{name}, {label}")
    if grouped:
        ids = good[1]
        for label, bad_ids, error in (
            ("group_ids of another length", ids[:-1], ValueError),
            ("2-D group_ids", ids[None], ValueError),
            ("float group_ids", ids.float(), TypeError),
        ):
            raises_clearly(error, lambda g=bad_ids: loss_fn(z, g), f"{name}, {label}")
        lonely = ids.clone()
        lonely[-1] = 99  # a group of one view
        raises_clearly(
            ValueError, lambda: loss_fn(z, lonely), f"{name}, a group of one", ("99",)
        )
    else:
        raises_clearly(
            ValueError,
            lambda: loss_fn(z, z[:, :4]),
            f"{name}, views of different widths",
        )
        raises_clearly(
            ValueError, lambda: loss_fn(z[:1], z[:1]), f"{name}, a batch of one"
        )
    # Identical (and all-zero) embeddings: a finite loss with finite gradients.
    for label, degenerate in (
        ("identical", torch.randn(1, 8).expand(12, 8).clone()),
        ("all-zero", torch.zeros(12, 8)),
    ):
        leaf = degenerate.requires_grad_(True)
        args = _loss_inputs(info, leaf)
        if not grouped:
            args = (leaf, leaf.detach().clone().requires_grad_(True))
        loss = loss_fn(*args)
        assert torch.isfinite(loss), f"{name}: {label} embeddings give loss {loss}"
        loss.backward()
        for arg in args:
            if isinstance(arg, torch.Tensor) and arg.requires_grad:
                assert arg.grad is not None and torch.isfinite(arg.grad).all(), (
                    f"{name}: {label} embeddings give non-finite gradients"
                )
    # NaN in, NaN out: a finite loss from NaN embeddings would hide the problem.
    poisoned = z.clone()
    poisoned[3, 2] = float("nan")
    args = _loss_inputs(info, poisoned)
    assert not torch.isfinite(loss_fn(*args)), (
        f"{name} turns a NaN embedding into a finite loss"
    )


# ---------------------------------------------------------------------------- miner
def _byol_heads() -> tuple[torch.nn.Module, torch.nn.Module]:
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

    torch.manual_seed(0)
    return BYOLProjectionHead(8, 16, 4), BYOLPredictionHead(4, 16, 4)


@input_contract("miner")
def miner_input_contract(info: ComponentInfo, miner: Any) -> None:
    """A per-sample-loss miner rejects bad losses and ids; NaN gives valid indices."""
    if info.metadata.get("inputs") != "per_sample_loss":
        pytest.fail(f"miner {info.name!r} declares no inputs='per_sample_loss'")
    projector, predictor = _byol_heads()
    miner.attach(predictor, projector)
    batch = 6
    views = [torch.randn(batch, 8) for _ in range(2)]
    targets = [torch.randn(batch, 4) for _ in range(2)]
    name = f"miner {info.name!r}"

    def per_sample_loss(poison: bool = False) -> torch.Tensor:
        with miner.capture():
            p = [predictor(projector(x)) for x in views]
        loss = -(
            torch.nn.functional.cosine_similarity(p[0], targets[1])
            + torch.nn.functional.cosine_similarity(p[1], targets[0])
        )
        if poison:
            loss = loss * torch.tensor([1.0, float("nan"), 1, 1, 1, 1])
        return loss

    for label, make, error in (
        ("a scalar loss", lambda: per_sample_loss().sum(), ValueError),
        ("a (B, 1) loss", lambda: per_sample_loss()[:, None], ValueError),
        ("an int64 loss", lambda: per_sample_loss().long(), TypeError),
        ("a list loss", lambda: per_sample_loss().tolist(), TypeError),
    ):
        raises_clearly(error, lambda m=make: miner(m()), f"{name}, {label}")
    raises_clearly(
        ValueError,
        lambda: miner(per_sample_loss(), group_ids=torch.zeros(batch - 1).long()),
        f"{name}, group_ids of another length",
    )
    raises_clearly(
        ValueError,
        lambda: miner(per_sample_loss(), group_ids=torch.zeros(batch).long()),
        f"{name}, every sample from one source image",
    )
    # A NaN per-sample loss: the indices stay valid (the NaN shows in the loss itself).
    indices = miner(per_sample_loss(poison=True))
    assert indices.dtype == torch.int64 and indices.shape[0] == batch
    assert ((indices >= 0) & (indices < batch)).all(), f"{name}: NaN gave bad indices"
    assert not (indices == torch.arange(batch)[:, None]).any(), (
        f"{name}: a NaN loss made a sample its own positive"
    )
    # Identical inputs: every score ties, the miner still picks another sample.
    views = [torch.ones(batch, 8) for _ in range(2)]
    indices = miner(per_sample_loss())
    assert not (indices == torch.arange(batch)[:, None]).any()


# ------------------------------------------------------------------------ transform
def _images(size: int = 64) -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
    gray8 = rng.integers(0, 256, (size, size), dtype=np.uint8)
    alpha = Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L")
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    gray_alpha = Image.fromarray(gray8, "L")
    gray_alpha.putalpha(alpha)
    return {
        "RGB": rgb,
        "L": Image.fromarray(gray8, "L"),
        # 16-bit gray holding the same picture: v → 257 v (0…255 → 0…65535)
        "I;16": Image.fromarray(gray8.astype(np.uint16) * 257),
        "RGBA": rgba,
        "LA": gray_alpha,
        "CMYK": rgb.convert("CMYK"),
        "P": rgb.convert("P"),
        "1": rgb.convert("1"),
        "F": Image.fromarray(gray8.astype(np.float32) / 255),
    }


def _views(transform: Any, image: Any, seed: int = 0) -> list[torch.Tensor]:
    seed_all(seed)
    views = transform(image)
    if isinstance(views, tuple):  # (views, permutations)
        views = views[0]
    return list(views)


def _check_views(
    views: Any, num_views: int, label: str, dtype: torch.dtype | None = None
) -> None:
    """Views: a list of ``num_views`` finite (C, H, W) tensors of one shape, C ∈ {1, 3}.

    Float, or the input tensor's ``dtype`` for transforms that only move pixels.
    """
    assert isinstance(views, list) and len(views) == num_views, (
        f"{label}: expected {num_views} views, got {str(views)[:80]}"
    )
    shapes = {tuple(v.shape) for v in views}
    assert len(shapes) == 1, f"{label}: views differ in shape {shapes}"
    (shape,) = shapes
    assert len(shape) == 3 and shape[0] in (1, 3), f"{label}: view shape {shape}"
    assert all(v.is_floating_point() or v.dtype == dtype for v in views), (
        f"{label}: view dtype {views[0].dtype}"
    )
    assert all(torch.isfinite(v).all() for v in views), f"{label}: non-finite views"


def check_image_inputs(transform: Any, num_views: int, name: str) -> None:
    """Every PIL mode gives the declared views; 16-bit and alpha convert correctly."""
    images = _images()
    for mode, image in images.items():
        _check_views(_views(transform, image), num_views, f"{name}, PIL {mode}")
    # A 16-bit image is its 8-bit picture (scaled, not clipped at 255), and alpha is
    # dropped: under one seed, the views must be the same.
    for mode, same_as in (("I;16", "L"), ("RGBA", "RGB"), ("LA", "L")):
        got, expected = (
            _views(transform, images[mode]),
            _views(transform, images[same_as]),
        )
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(
                g, e, msg=lambda m, mode=mode, s=same_as: f"{name}: {mode} ≠ {s}: {m}"
            )
    for label, image in (
        (
            "uint8 tensor (3, H, W)",
            torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8),
        ),
        ("float tensor (1, H, W)", torch.rand(1, 64, 64)),
    ):
        views = _views(transform, image)
        _check_views(views, num_views, f"{name}, {label}", image.dtype)


def check_bad_images(transform: Any, num_views: int, name: str) -> None:
    """Inputs that are no image raise; odd ones raise or give correct views."""
    for label, bad in (
        ("a 1-D tensor", torch.rand(64)),
        ("a 5-D tensor", torch.rand(1, 1, 3, 8, 8)),
        ("an empty tensor (3, 0, 8)", torch.rand(3, 0, 8)),
        ("a string", "image.jpg"),
        ("None", None),
    ):
        raises_clearly(
            (TypeError, ValueError), lambda b=bad: transform(b), f"{name}, {label}"
        )
    nan = torch.rand(3, 64, 64)
    nan[0, 5, 5] = float("nan")
    for label, odd in (
        ("a complex tensor", torch.rand(3, 64, 64, dtype=torch.complex64)),
        ("an int32 tensor", torch.randint(0, 256, (3, 64, 64), dtype=torch.int32)),
        ("a 1×1 image", Image.new("RGB", (1, 1))),
        ("a 5×7 image", Image.new("RGB", (5, 7))),
        ("a float image with NaN", nan),
    ):
        try:
            views = _views(transform, odd)
        except (TypeError, ValueError) as exc:
            assert len(str(exc)) > 15, f"{name}, {label}: message {exc!r}"
            continue
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{name}, {label}: {type(exc).__name__}: {exc}", pytrace=False)
        assert isinstance(views, list) and len(views) == num_views, f"{name}, {label}"
        if odd is nan:
            assert not all(torch.isfinite(v).all() for v in views), (
                f"{name} turns a NaN pixel into finite views"
            )
        elif isinstance(odd, Image.Image):
            _check_views(views, num_views, f"{name}, {label}")
        else:  # a transform that only moves pixels may keep any dtype
            assert all(v.dtype in (odd.dtype, torch.float32) for v in views), label


@input_contract("transform")
def transform_input_contract(info: ComponentInfo, transform: Any) -> None:
    num_views = info.metadata.get("num_views")
    assert isinstance(num_views, int), f"transform {info.name!r} declares no num_views"
    name = f"transform {info.name!r}"
    check_image_inputs(transform, num_views, name)
    check_bad_images(transform, num_views, name)


# --------------------------------------------------------------------------- method
@input_contract("method")
def method_input_contract(info: ComponentInfo, method: Any) -> None:
    """The default transform takes every image mode; foreign state dicts are refused."""
    name = f"method {info.name!r}"
    transform = method.default_transform(input_size=32)
    num_views = len(transform(_images()["RGB"]))
    check_image_inputs(transform, num_views, f"{name} default_transform")
    for label, bad in (("a string", "x.png"), ("a 1-D tensor", torch.rand(10))):
        raises_clearly(
            (TypeError, ValueError), lambda b=bad: transform(b), f"{name}, {label}"
        )
    # A checkpoint of another architecture, and a state dict with a missing key.
    state = method.state_dict()
    other = registry.create("method", info.name, backbone="resnet34").state_dict()
    raises_clearly(
        ValueError,
        lambda: method.load_state_dict(other),
        f"{name}, a resnet34 state dict",
        ("unexpected keys", "backbone"),
    )
    missing = dict(state)
    key = next(k for k in missing if k.endswith("conv1.weight"))
    del missing[key]
    raises_clearly(
        ValueError,
        lambda: method.load_state_dict(missing),
        f"{name}, a state dict without {key}",
        (key,),
    )
    method.load_state_dict(state)  # its own state dict still loads


@pytest.mark.parametrize("info", COMPONENTS, ids=IDS)
@pytest.mark.slow
def test_input_contract(info: ComponentInfo) -> None:
    kwargs = {"backbone": "resnet18"} if info.kind == "method" else {}
    INPUT_CONTRACTS[info.kind](info, registry.create(info.kind, info.name, **kwargs))


def test_every_checked_kind_has_an_input_contract() -> None:
    assert set(INPUT_CONTRACTS) == set(CHECKED_KINDS)


def test_input_contract_runs_on_an_installed_plugin(
    plugin_template_site, monkeypatch, clean_plugin_env
) -> None:
    """A third-party loss is checked too (the template validates its inputs)."""
    from lightly_derm.plugins import Registry

    monkeypatch.syspath_prepend(str(plugin_template_site))
    reg = Registry()
    loss_input_contract(
        reg.info("loss", "group_center"), reg.create("loss", "group_center")
    )


def test_input_contracts_can_fail() -> None:
    """A loss that accepts int embeddings, a transform with a deep error: both fail."""
    info = registry.info("loss", "gravis")

    class Lenient(torch.nn.Module):
        """Checks shapes but casts any dtype: int embeddings give a number."""

        def forward(self, embeddings, group_ids):
            if embeddings.ndim != 2 or 0 in embeddings.shape:
                raise ValueError(f"embeddings must be (N, D), got {embeddings.shape}")
            return embeddings.float().pow(2).mean()

    with pytest.raises(pytest.fail.Exception, match="int64 embeddings"):
        loss_input_contract(info, Lenient())

    class Deep:
        def __call__(self, image):
            return [torch.as_tensor(np.array(image), dtype=torch.float32)[None, None]]

    with pytest.raises((pytest.fail.Exception, AssertionError)):
        transform_input_contract(registry.info("transform", "gravis"), Deep())
