"""Contract tests over every registered component, as timm tests every registered model.

Every component: has a docstring and a one-line description, and can be created with
its defaults. Each kind adds its own contract below (``KIND_CONTRACTS``); a component
declares what the contract needs in ``Component.metadata`` (documented in
docs/plugins.rst). The parameters come from the registry, so the tests follow whatever
is installed and hard-code no component.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch

from lightly_derm import registry
from lightly_derm.plugins import KINDS, ComponentInfo

COMPONENTS = registry.list()
IDS = [f"{i.kind}/{i.name}" for i in COMPONENTS]

KIND_CONTRACTS: dict[str, Callable[[ComponentInfo, Any], None]] = {}


def contract(
    kind: str,
) -> Callable[
    [Callable[[ComponentInfo, Any], None]], Callable[[ComponentInfo, Any], None]
]:
    assert kind in KINDS

    def decorate(
        fn: Callable[[ComponentInfo, Any], None],
    ) -> Callable[[ComponentInfo, Any], None]:
        KIND_CONTRACTS[kind] = fn
        return fn

    return decorate


@contract("loss")
def loss_contract(info: ComponentInfo, loss_fn: Any) -> None:
    """A loss gives a finite scalar with gradients for its declared inputs."""
    assert isinstance(loss_fn, torch.nn.Module), "a loss is an nn.Module"
    inputs = info.metadata.get("inputs")
    generator = torch.Generator().manual_seed(0)
    if inputs == "grouped":
        embeddings = torch.randn(12, 16, generator=generator, requires_grad=True)
        args: tuple[torch.Tensor, ...] = (
            embeddings,
            torch.arange(4).repeat_interleave(3),
        )
        leaves = [embeddings]
    elif inputs == "pair":
        leaves = [
            torch.randn(12, 16, generator=generator, requires_grad=True)
            for _ in range(2)
        ]
        args = tuple(leaves)
    else:
        pytest.fail(
            f"loss {info.name!r} must declare metadata inputs='grouped' or 'pair', got {inputs!r}"
        )
    loss = loss_fn(*args)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        assert leaf.grad.abs().sum() > 0


def _pil_images(size: int = 64, count: int = 4) -> list:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
        for _ in range(count)
    ]


@contract("transform")
def transform_contract(info: ComponentInfo, transform: Any) -> None:
    """A view transform maps PIL RGB, PIL grayscale and float tensors to its views."""

    num_views = info.metadata.get("num_views")
    assert isinstance(num_views, int) and num_views >= 1, (
        f"transform {info.name!r} must declare metadata num_views (views made by default)"
    )
    (rgb,) = _pil_images(256, 1)
    inputs = {
        "PIL RGB": rgb,
        "PIL L": rgb.convert("L"),
        "tensor": torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0)),
    }
    for label, image in inputs.items():
        views = transform(image)
        assert isinstance(views, (list, tuple)) and len(views) == num_views, (
            f"{label}: expected {num_views} views, got {type(views).__name__} of "
            f"{len(views) if isinstance(views, (list, tuple)) else '?'}"
        )
        shapes = {tuple(v.shape) for v in views}
        assert all(
            isinstance(v, torch.Tensor) and v.is_floating_point() for v in views
        ), label
        assert len(shapes) == 1, f"{label}: views differ in shape {shapes}"
        assert next(iter(shapes))[0] in (1, 3) and len(next(iter(shapes))) == 3, label
        assert all(torch.isfinite(v).all() for v in views), label


@contract("collate")
def collate_contract(info: ComponentInfo, collate: Any) -> None:
    """A collate turns K-view samples into a batch that to_grouped_batch understands."""
    from lightly_derm.data import to_grouped_batch

    samples = [
        ([torch.rand(3, 8, 8) for _ in range(2)], i, f"{i}.png") for i in range(3)
    ]
    batch = to_grouped_batch(collate(samples))
    assert batch.views.shape == (6, 3, 8, 8)
    assert batch.targets.tolist() == [0, 1, 2]


@contract("miner")
def miner_contract(info: ComponentInfo, miner: Any) -> None:
    """A miner returns int64 indices of other, non-duplicate samples, under no_grad."""
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

    inputs = info.metadata.get("inputs")
    if inputs != "per_sample_loss":
        pytest.fail(
            f"miner {info.name!r} must declare metadata inputs='per_sample_loss', got {inputs!r}"
        )
    torch.manual_seed(0)
    projector, predictor = BYOLProjectionHead(8, 16, 4), BYOLPredictionHead(4, 16, 4)
    assert miner.attach(predictor, projector) is miner, "attach() returns the miner"
    batch = 6
    views = [torch.randn(batch, 8) for _ in range(2)]
    targets = [torch.randn(batch, 4) for _ in range(2)]
    group_ids = torch.tensor([0, 1, 2, 0, 3, 4])  # samples 0 and 3: one source image

    def per_sample_loss() -> torch.Tensor:
        with miner.capture():
            p = [predictor(projector(x)) for x in views]
        return -(
            torch.nn.functional.cosine_similarity(p[0], targets[1])
            + torch.nn.functional.cosine_similarity(p[1], targets[0])
        )

    loss = per_sample_loss()
    indices = miner(loss, group_ids=group_ids)
    assert isinstance(indices, torch.Tensor) and indices.dtype == torch.int64
    assert indices.ndim == 2 and indices.shape[0] == batch and indices.shape[1] >= 1
    assert not indices.requires_grad
    assert ((indices >= 0) & (indices < batch)).all(), "indices lie in the batch"
    assert not (indices == torch.arange(batch)[:, None]).any(), (
        "never the sample itself"
    )
    assert not (group_ids[indices] == group_ids[:, None]).any(), "never a duplicate"
    assert all(p.grad is None for p in predictor.parameters()), (
        "mining leaves parameter gradients alone"
    )
    loss.mean().backward()  # the training graph survives mining
    with pytest.raises(ValueError):
        views = [x[:1] for x in views]
        targets = [z[:1] for z in targets]
        predictor.eval(), projector.eval()
        miner(per_sample_loss())  # a batch of one


@contract("method")
def method_contract(info: ComponentInfo, method: Any) -> None:
    """A method trains one step on CPU from its own transform and collate.

    Methods with a GPU view pipeline (``gpu_view_transform``, by default derived from
    ``cpu_view_transform``) train the step a second time with ``augment="gpu"``: canvases from ``default_transform``, views made in
    ``on_after_batch_transfer`` (on CPU tensors here), under bf16 mixed precision.
    """
    from lightly_derm.methods import SSLMethod

    assert isinstance(method, SSLMethod), (
        "a method subclasses lightly_derm.methods.SSLMethod"
    )
    assert info.metadata.get("task") in ("pretrain", "classify"), (
        f"method {info.name!r} must declare metadata task='pretrain' or 'classify'"
    )
    _train_one_step(registry.create("method", info.name, backbone="resnet18"))
    if _has_gpu_views(method):
        small = registry.create("method", info.name, backbone="resnet18", augment="gpu")
        assert small.augment == "gpu"
        _train_one_step(small, precision="bf16-mixed")


def _has_gpu_views(method: Any) -> bool:
    """Whether the method's views have a GPU form (derived or its own)."""
    from lightly_derm.transforms.gpu import UntranslatableTransformError

    try:
        method.gpu_view_transform(64)
    except (UntranslatableTransformError, NotImplementedError):
        return False
    return True


def _train_one_step(small: Any, precision: str = "32-true") -> Any:
    import pytorch_lightning as pl

    transform = small.default_transform(input_size=64)
    images = _pil_images()
    images[1] = images[1].convert("L")  # any mode: the transforms convert to RGB
    samples = [(transform(image), i % 2, f"{i}.png") for i, image in enumerate(images)]
    loader = torch.utils.data.DataLoader(
        samples, batch_size=4, collate_fn=small.default_collate()
    )
    before = {k: v.clone() for k, v in small.backbone.state_dict().items()}
    trainer = pl.Trainer(
        fast_dev_run=1,
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(small, loader)
    loss = trainer.callback_metrics.get("train_loss")
    assert loss is not None, "the method logs train_loss"
    assert torch.isfinite(loss)
    changed = [
        k
        for k, v in small.backbone.state_dict().items()
        if not torch.equal(v, before[k])
    ]
    assert changed, "a training step changes the backbone"
    return trainer


@contract("backbone")
def backbone_contract(info: ComponentInfo, factory: Any) -> None:
    """A backbone family builds its example, by itself and through a backbone name."""
    from lightly_derm.models import build_backbone

    example = info.metadata.get("example")
    assert isinstance(example, str), (
        f"backbone family {info.name!r} must declare metadata example='<model name>'"
    )
    model = factory(example)
    assert isinstance(model, torch.nn.Module)
    assert isinstance(getattr(model, "feature_dim", None), int), (
        "the backbone tells its feature_dim"
    )
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 64, 64))
    assert tuple(out.flatten(1).shape) == (2, model.feature_dim)
    assert type(build_backbone(f"{info.name}:{example}")) is type(model)
    with pytest.raises(ValueError):
        factory("no-such-model-xyz")


@contract("encoder")
def encoder_contract(info: ComponentInfo, encoder: Any) -> None:
    """An encoder gives FlexibleUNet its feature maps: declared channels, 2x smaller each."""
    from monai.networks.blocks import BaseEncoder
    from monai.networks.nets import FlexibleUNet
    from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

    import lightly_derm.segmentation  # noqa: F401  (registers the encoders in MONAI)

    cls = info.load()
    assert isinstance(cls, type) and issubclass(cls, BaseEncoder), (
        f"encoder {info.name!r} must be a monai.networks.blocks.BaseEncoder subclass"
    )
    assert isinstance(encoder, torch.nn.Module)
    names = cls.get_encoder_names()
    assert info.name in names, (
        f"{cls.__name__}.get_encoder_names() {names} must contain {info.name!r}"
    )
    i = names.index(info.name)
    channels = tuple(cls.num_channels_per_output()[i])
    assert cls.num_outputs()[i] == len(channels) <= 5
    assert {"spatial_dims", "in_channels", "pretrained"} <= set(
        cls.get_encoder_parameters()[i]
    )
    spatial_dims = info.metadata.get("spatial_dims", 2)
    size = 64
    x = torch.randn(1, 3, *([size] * spatial_dims))
    with torch.no_grad():
        features = encoder.eval()(x)
    assert isinstance(features, (list, tuple)) and len(features) == len(channels)
    for level, (feature, width) in enumerate(zip(features, channels, strict=True)):
        side = size // 2 ** (level + 1)
        assert tuple(feature.shape) == (1, width, *([side] * spatial_dims)), (
            f"level {level}: expected {(1, width, *([side] * spatial_dims))}, "
            f"got {tuple(feature.shape)}"
        )
    assert info.name in FLEXUNET_BACKBONE.register_dict, (
        f"{info.name!r} is not a MONAI FlexibleUNet backbone after import lightly_derm.segmentation"
    )
    net = FlexibleUNet(
        3, 1, backbone=info.name, spatial_dims=spatial_dims, decoder_channels=(16,) * 5
    ).eval()
    with torch.no_grad():
        assert net(x).shape == (1, 1, *([size] * spatial_dims))


@pytest.mark.parametrize("info", COMPONENTS, ids=IDS)
def test_has_docstring(info: ComponentInfo) -> None:
    doc = inspect.getdoc(info.load()) or ""
    assert doc.strip(), f"{info.kind} {info.name!r} has no docstring"
    assert info.description, f"{info.kind} {info.name!r} has no one-line description"


@pytest.mark.parametrize("info", COMPONENTS, ids=IDS)
@pytest.mark.slow
def test_kind_contract(info: ComponentInfo) -> None:
    # a backbone family is a factory of named models: the contract calls it itself
    obj = (
        registry.get(info.kind, info.name)
        if info.kind == "backbone"
        else registry.create(info.kind, info.name)
    )
    assert obj is not None
    check = KIND_CONTRACTS.get(info.kind)
    if check is not None:
        check(info, obj)


def test_contracts_cover_installed_plugin(
    plugin_template_site, monkeypatch, clean_plugin_env
) -> None:
    """The loss contract runs on a third-party component too (and can fail)."""
    from lightly_derm.plugins import Registry

    monkeypatch.syspath_prepend(str(plugin_template_site))
    reg = Registry()
    info = reg.info("loss", "group_center")
    loss_contract(info, reg.create("loss", "group_center"))

    class NotALoss:
        pass

    with pytest.raises(AssertionError, match="nn.Module"):
        loss_contract(info, NotALoss())


def test_miner_contract_can_fail() -> None:
    """The miner contract rejects a miner that chooses the sample itself."""
    from lightly_derm.miners import TracInPositiveMiner

    class SelfMiner(TracInPositiveMiner):
        def forward(self, loss, group_ids=None, exclude=None):  # type: ignore[override]
            super().forward(loss, group_ids, exclude)
            return torch.arange(loss.shape[0])[:, None]

    info = registry.info("miner", "tracin")
    miner_contract(info, TracInPositiveMiner())
    with pytest.raises(AssertionError, match="never the sample itself"):
        miner_contract(info, SelfMiner())


def test_third_party_method_gets_gpu_views_from_its_cpu_transform(
    plugin_template_site, monkeypatch, clean_plugin_env
) -> None:
    """The template's method defines CPU views only; augment='gpu' trains all the same."""
    from lightly_derm.plugins import Registry

    monkeypatch.syspath_prepend(str(plugin_template_site))
    reg = Registry()
    method = reg.create("method", "group_center", backbone="resnet18", augment="gpu")
    assert _has_gpu_views(method)
    _train_one_step(method, precision="bf16-mixed")
