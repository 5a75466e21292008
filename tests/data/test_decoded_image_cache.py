from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lightly_derm.data import (
    CanvasCollate,
    DecodedImageCache,
    ImageFileDataset,
    ImageFolderDataset,
    load_image,
)
from lightly_derm.transforms.gpu import CanvasTransform


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(120, 90), (90, 120), (200, 100), (64, 64)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    return tmp_path


def test_cache_equals_transform_of_decoded_image(folder) -> None:
    dataset = ImageFolderDataset(folder)
    transform = CanvasTransform(view_size=48)
    cache = DecodedImageCache(dataset, transform, num_threads=2)
    assert len(cache) == 4
    for i in range(4):
        canvas, target, filename = cache[i]
        expected = transform(load_image(dataset.paths[i], decode_size=transform.size))
        assert torch.equal(canvas.image, expected.image)
        assert (canvas.height, canvas.width, canvas.view_size) == expected[1:]
        assert filename == dataset.filenames[i] and target == int(dataset.targets[i])
    batch = CanvasCollate()([cache[i] for i in range(4)])
    assert batch.images.shape == (4, 3, transform.side, transform.side)


def test_generic_dataset_and_canvas_items(folder) -> None:
    transform = CanvasTransform(view_size=32)
    images = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))]
    plain = [(image, i) for i, image in enumerate(images)]  # no file names
    cache = DecodedImageCache(plain, transform, num_threads=1)
    canvas, target, filename = cache[1]
    assert torch.equal(canvas.image, transform(images[1]).image)
    assert target == 1 and filename is None
    ready = [
        (transform(image), torch.tensor(i), f"{i}") for i, image in enumerate(images)
    ]
    cache = DecodedImageCache(ready, transform)
    assert cache[2][1] == 2 and cache[-1][2] == "3"


def test_cache_dir_round_trip_and_pickling(
    folder, tmp_path_factory, monkeypatch
) -> None:
    cache_dir = tmp_path_factory.mktemp("cache")
    dataset = ImageFolderDataset(folder)
    transform = CanvasTransform(view_size=32)
    first = DecodedImageCache(dataset, transform, cache_dir=cache_dir)
    files = sorted(p.suffix for p in cache_dir.iterdir())
    assert files == [".json", ".npy"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached dataset must not decode again")

    monkeypatch.setattr("lightly_derm.data.decoded_image_cache.load_image", no_decoding)
    second = DecodedImageCache(dataset, transform, cache_dir=cache_dir)
    for i in range(len(first)):
        assert torch.equal(first[i][0].image, second[i][0].image)
        assert first[i][1:] == second[i][1:]
    clone = pickle.loads(pickle.dumps(second))  # what a spawned worker receives
    assert clone._memmap is None
    assert torch.equal(clone[3][0].image, second[3][0].image)


def test_worker_processes(folder) -> None:
    cache = DecodedImageCache(ImageFolderDataset(folder), CanvasTransform(view_size=32))
    loader = torch.utils.data.DataLoader(
        cache, batch_size=2, num_workers=2, collate_fn=CanvasCollate()
    )
    batches = list(loader)
    assert sum(b.batch_size for b in batches) == 4
    assert torch.equal(batches[0].images[0], cache[0][0].image)


def test_errors(folder, tmp_path) -> None:
    dataset = ImageFolderDataset(folder)
    with pytest.raises(TypeError, match="CanvasTransform"):
        DecodedImageCache(dataset, lambda image: image)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        DecodedImageCache([], CanvasTransform())
    with pytest.raises(TypeError, match="item 0"):
        DecodedImageCache([Image.new("RGB", (8, 8))], CanvasTransform(view_size=8))
    cache = DecodedImageCache(dataset, CanvasTransform(view_size=32))
    with pytest.raises(IndexError):
        cache[4]
    # A file that passes the header check but fails to decode: the dataset substitutes.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes((folder / "0.png").read_bytes())
    good = (folder / "1.png").read_bytes()
    (broken / "b.png").write_bytes(good[:60] + b"\x00" * 200 + good[260:])
    data = ImageFileDataset(["a.png", "b.png"], root=broken, check="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = DecodedImageCache(data, CanvasTransform(view_size=32), num_threads=1)
    assert cache[1][2] == "a.png"
