from __future__ import annotations

import pytest
import torch
from lightly.data.multi_view_collate import MultiViewCollate

from lightly_derm.data import GroupedBatch, GroupedViewCollate, to_grouped_batch


def _samples(batch_size: int, num_views: int, with_names: bool = True, shape=(3, 6, 5)):
    gen = torch.Generator().manual_seed(batch_size * 10 + num_views)
    samples = []
    for b in range(batch_size):
        views = [torch.rand(*shape, generator=gen) for _ in range(num_views)]
        samples.append((views, b % 3, f"img{b}.jpg") if with_names else (views, b % 3))
    return samples


@pytest.mark.parametrize("batch_size,num_views", [(1, 2), (3, 4), (5, 1), (2, 7)])
def test_image_major_layout_against_loops(batch_size: int, num_views: int) -> None:
    samples = _samples(batch_size, num_views)
    batch = GroupedViewCollate()(samples)
    assert isinstance(batch, GroupedBatch)
    assert batch.views.shape == (batch_size * num_views, 3, 6, 5)
    n = 0
    for b, (views, target, name) in enumerate(samples):
        for k, view in enumerate(views):
            assert torch.equal(batch.views[n], view)
            assert batch.group_ids[n].item() == b
            assert torch.equal(batch.view(k)[b], view)
            n += 1
        assert batch.targets[b].item() == target and batch.filenames[b] == name
    assert batch.group_ids.dtype == torch.long and batch.targets.dtype == torch.long
    assert (batch.batch_size, batch.num_views) == (batch_size, num_views)
    for k, view_k in enumerate(batch.split_views()):
        assert torch.equal(view_k, torch.stack([s[0][k] for s in samples]))


def test_two_tuples_and_tensor_views() -> None:
    samples = [(torch.rand(4, 1, 5, 5), None), (torch.rand(4, 1, 5, 5), None)]
    views, group_ids, targets, filenames = GroupedViewCollate()(samples)
    assert views.shape == (8, 1, 5, 5)
    assert targets.tolist() == [-1, -1] and filenames == [None, None]


def test_tensor_targets_are_stacked() -> None:
    samples = [([torch.rand(3, 4, 4)] * 2, torch.tensor([1.0, 0.0])) for _ in range(3)]
    assert GroupedViewCollate()(samples).targets.shape == (3, 2)


def test_errors_name_the_sample() -> None:
    collate = GroupedViewCollate()
    samples = _samples(3, 4)
    samples[2] = (samples[2][0][:3], 0, "x")
    with pytest.raises(ValueError, match="sample 0 has 4, sample 2 has 3"):
        collate(samples)
    samples = _samples(2, 2)
    samples[1][0][1] = torch.rand(3, 7, 5)
    with pytest.raises(ValueError, match=r"sample 1 view 1 is \(3, 7, 5\)"):
        collate(samples)
    from PIL import Image

    with pytest.raises(
        TypeError,
        match="sample 0: views must be a list of tensors, got Image.*ToTensor",
    ):
        collate([([Image.new("RGB", (4, 4))], 0)])
    with pytest.raises(ValueError, match="non-empty"):
        collate([])
    with pytest.raises(TypeError, match="sample 0 must be"):
        collate([torch.rand(3, 4, 4)])
    with pytest.raises(ValueError, match="target and others have None"):
        collate([([torch.rand(3, 4, 4)], 1), ([torch.rand(3, 4, 4)], None)])


def test_multi_view_collate_output_is_accepted() -> None:
    samples = _samples(4, 3)
    expected = GroupedViewCollate()(samples)
    converted = to_grouped_batch(MultiViewCollate()(samples))
    assert torch.equal(converted.views, expected.views)
    assert torch.equal(converted.group_ids, expected.group_ids)
    assert torch.equal(converted.targets, expected.targets)
    assert converted.filenames == expected.filenames
    # torch's default collate gives the same layout.
    default = torch.utils.data.default_collate(samples)
    assert torch.equal(to_grouped_batch(default).views, expected.views)
    assert to_grouped_batch(expected) is expected
    assert torch.equal(to_grouped_batch(tuple(expected)).views, expected.views)


def test_dataloader_with_lightly_dataset(tmp_path) -> None:
    from lightly.data import LightlyDataset
    from PIL import Image
    from torchvision.transforms import v2

    for i in range(5):
        Image.new("RGB", (10, 12), color=(i * 40, 0, 0)).save(tmp_path / f"im{i}.png")

    def transform(image):
        to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        return [to_tensor(image) for _ in range(2)]

    dataset = LightlyDataset(str(tmp_path), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=3, collate_fn=GroupedViewCollate()
    )
    batches = list(loader)
    assert [b.views.shape[0] for b in batches] == [6, 4]
    assert batches[0].filenames == ["im0.png", "im1.png", "im2.png"]


def test_to_grouped_batch_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match="expected a GroupedBatch"):
        to_grouped_batch(torch.rand(3, 3, 4, 4))
    with pytest.raises(ValueError, match="one shape"):
        to_grouped_batch(
            ([torch.rand(2, 3, 4, 4), torch.rand(2, 3, 5, 4)], torch.zeros(2))
        )


def test_torchvision_dataset_with_gravis_transform() -> None:
    """torchvision datasets yield (views, target) with 0-d tensor or int targets."""
    from lightly.data import LightlyDataset
    from torchvision.datasets import FakeData

    from lightly_derm.transforms import GraVISTransform

    dataset = FakeData(
        size=5,
        image_size=(3, 40, 30),
        num_classes=4,
        transform=GraVISTransform(num_views=3, input_size=16),
        random_offset=7,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=3, collate_fn=GroupedViewCollate()
    )
    batch = next(iter(loader))
    assert batch.views.shape == (9, 3, 16, 16)
    assert batch.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert batch.targets.tolist() == [int(dataset[i][1]) for i in range(3)]
    assert batch.filenames == [None, None, None]
    # The same dataset through lightly's wrapper gains file names.
    wrapped = LightlyDataset.from_torch_dataset(dataset)
    batch = GroupedViewCollate()([wrapped[i] for i in range(2)])
    assert batch.views.shape == (6, 3, 16, 16) and len(batch.filenames) == 2
    assert all(isinstance(name, str) for name in batch.filenames)
