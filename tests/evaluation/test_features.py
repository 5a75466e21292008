from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightly_derm.evaluation import extract_features


class _Images(Dataset):
    def __init__(self, n: int, with_names: bool = True) -> None:
        gen = torch.Generator().manual_seed(n)
        self.images = torch.randn(n, 3, 8, 8, generator=gen)
        self.targets = torch.arange(n) % 3
        self.with_names = with_names

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        item = (self.images[i], int(self.targets[i]))
        return (*item, f"img_{i}.png") if self.with_names else item


def _model() -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm makes train and eval mode give different outputs; the output is
    # (B, D, 1, 1) as torchvision backbones without flatten give.
    return nn.Sequential(
        nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
    )


@pytest.mark.parametrize("n,batch_size", [(1, 4), (10, 3), (16, 16)])
def test_against_per_sample_forward(n: int, batch_size: int) -> None:
    model = _model()
    model.train()
    with torch.no_grad():  # make BatchNorm statistics non-trivial
        model(torch.randn(32, 3, 8, 8) * 3 + 1)
    data = _Images(n)
    result = extract_features(model, data, batch_size=batch_size)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        expected = torch.stack([model(data[i][0][None]).flatten() for i in range(n)])
    torch.testing.assert_close(result.features, expected)
    assert result.features.dtype == torch.float32 and result.features.shape == (n, 5)
    assert result.targets.tolist() == data.targets.tolist()
    assert result.filenames == [f"img_{i}.png" for i in range(n)]
    assert not result.features.requires_grad


def test_dataloader_input_without_names_and_labelled() -> None:
    data = _Images(6, with_names=False)
    data.targets[1] = -1
    result = extract_features(_model(), DataLoader(data, batch_size=4), progress="test")
    assert result.filenames == [None] * 6
    labelled = result.labelled()
    assert labelled.features.shape[0] == 5 and -1 not in labelled.targets.tolist()
    torch.testing.assert_close(labelled.features[1], result.features[2])


def test_autocast_and_channels_last_on_cpu() -> None:
    data = _Images(4)
    result = extract_features(
        _model(), data, autocast_dtype=torch.bfloat16, channels_last=True
    )
    reference = extract_features(_model(), data)
    assert result.features.dtype == torch.float32
    torch.testing.assert_close(result.features, reference.features, atol=0.1, rtol=0.05)


def test_non_tensor_images_give_a_clear_error() -> None:
    from lightly_derm.data import SyntheticLesions

    with pytest.raises(TypeError, match="must yield image tensors"):
        extract_features(
            _model(), DataLoader(SyntheticLesions(2, 16), collate_fn=lambda b: (b, 0))
        )
