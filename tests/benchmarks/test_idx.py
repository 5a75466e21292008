"""The benchmarks' MNIST-format (IDX) reader (benchmarks/idx.py)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from idx import FASHION_MNIST_CLASSES, IDXImageDataset, is_idx_folder, read_idx

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# IDX type codes of the format description (yann.lecun.com/exdb/mnist), written out
# here independently of the module's table.
CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D}
STRUCT = {"uint8": "B", "int8": "b", "int16": "h", "int32": "i", "float32": "f"}


def write_idx(path: Path, values: list, shape: tuple[int, ...], dtype: str, gz: bool):
    """Reference writer: header and big-endian values packed one by one with struct."""
    data = bytes([0, 0, CODES[dtype], len(shape)])
    for size in shape:
        data += struct.pack(">i", size)
    for value in values:
        data += struct.pack(">" + STRUCT[dtype], value)
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        ("uint8", (3, 2, 4)),
        ("int8", (5,)),
        ("int16", (2, 3)),
        ("int32", (4, 1)),
        ("float32", (2, 2, 2)),
    ],
)
def test_read_idx_matches_reference_writer(tmp_path: Path, gz, dtype, shape) -> None:
    rng = np.random.default_rng(len(shape))
    count = int(np.prod(shape))
    if dtype == "float32":
        values = [float(np.float32(v)) for v in rng.normal(size=count)]
    else:
        info = np.iinfo(dtype)
        values = [
            int(v) for v in rng.integers(info.min, info.max, count, endpoint=True)
        ]
    path = tmp_path / ("x.gz" if gz else "x")
    write_idx(path, values, shape, dtype, gz)
    array = read_idx(path)
    assert array.shape == shape
    assert array.dtype == np.dtype(dtype)  # native byte order
    assert array.reshape(-1).tolist() == values


def test_read_idx_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing"):
        read_idx(tmp_path / "nothing")
    bad_magic = tmp_path / "png"
    bad_magic.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="png.*not an IDX file"):
        read_idx(bad_magic)
    bad_code = tmp_path / "code"
    bad_code.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">i", 1) + b"\x00")
    with pytest.raises(ValueError, match="code.*type code 0x07"):
        read_idx(bad_code)
    truncated = tmp_path / "truncated.gz"
    write_idx(truncated, [1, 2, 3], (4,), "uint8", gz=True)  # header says 4, has 3
    with pytest.raises(ValueError, match=r"truncated.gz.*shape \(4,\)"):
        read_idx(truncated)
    short_header = tmp_path / "short"
    short_header.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">i", 2))
    with pytest.raises(ValueError, match="short.*3 dimensions"):
        read_idx(short_header)
    broken_gzip = tmp_path / "broken.gz"
    broken_gzip.write_bytes(gzip.compress(b"\x00" * 100)[:15])
    with pytest.raises(ValueError, match="broken.gz.*damaged gzip"):
        read_idx(broken_gzip)


def mnist_folder(root: Path, counts=(6, 4), size=(5, 7), gz=True) -> dict:
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in zip(("train", "t10k"), counts, strict=True):
        images = rng.integers(0, 256, (n, *size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(
            root / f"{prefix}-images-idx3-ubyte{suffix}",
            images.reshape(-1).tolist(),
            images.shape,
            "uint8",
            gz,
        )
        write_idx(
            root / f"{prefix}-labels-idx1-ubyte{suffix}",
            labels.tolist(),
            labels.shape,
            "uint8",
            gz,
        )
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(("split", "prefix"), [("train", "train"), ("test", "t10k")])
def test_dataset_items(tmp_path: Path, gz: bool, split: str, prefix: str) -> None:
    arrays = mnist_folder(tmp_path, gz=gz)
    dataset = IDXImageDataset(tmp_path, split, classes=FASHION_MNIST_CLASSES)
    images, labels = arrays[prefix]
    assert len(dataset) == len(images)
    assert dataset.targets.dtype == np.int64
    assert dataset.targets.tolist() == labels.tolist()
    for i in range(len(dataset)):
        image, target, filename = dataset[i]
        assert image.mode == "RGB" and image.size == (7, 5)
        assert np.array_equal(np.asarray(image), np.repeat(images[i][..., None], 3, -1))
        assert target == labels[i] and filename == f"{prefix}_{i:05d}"
    assert dataset.get_filenames()[-1] == filename
    assert dataset[-1][2] == filename
    assert dataset.num_classes == 10


def test_dataset_transform_and_default_classes(tmp_path: Path) -> None:
    arrays = mnist_folder(tmp_path)
    dataset = IDXImageDataset(tmp_path, transform=np.asarray)
    assert dataset[0][0].shape == (5, 7, 3)
    assert dataset.classes == [str(c) for c in range(int(arrays["train"][1].max()) + 1)]


def test_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="IDX folder not found"):
        IDXImageDataset(tmp_path / "missing")
    mnist_folder(tmp_path)
    with pytest.raises(ValueError, match="split must be one of train, test.*'val'"):
        IDXImageDataset(tmp_path, "val")
    with pytest.raises(TypeError, match="transform must be callable"):
        IDXImageDataset(tmp_path, transform="resize")
    with pytest.raises(ValueError, match="labels range from .* 2 classes"):
        IDXImageDataset(tmp_path, classes=["a", "b"])
    with pytest.raises(IndexError, match="out of range for 6"):
        IDXImageDataset(tmp_path)[6]
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        IDXImageDataset(tmp_path, "test")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", [1, 2], (2,), "uint8", gz=True)
    with pytest.raises(ValueError, match="labels of shape \\(2,\\).*4 images"):
        IDXImageDataset(tmp_path, "test")


def test_is_idx_folder(tmp_path: Path) -> None:
    assert not is_idx_folder(tmp_path)
    mnist_folder(tmp_path)
    assert is_idx_folder(tmp_path)


@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_debian_fashion_mnist() -> None:
    test = IDXImageDataset(DEBIAN_FASHION_MNIST, "test", classes=FASHION_MNIST_CLASSES)
    assert len(test) == 10_000 and test.images.shape == (10_000, 28, 28)
    assert np.bincount(test.targets).tolist() == [1000] * 10  # balanced test set
    assert test.classes[test[0][1]] == "ankle boot"  # the first test image
