from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, ScaleIntensityd

from lightly_derm.transforms import RandHierarchicalJigsawd
from tests.transforms.test_jigsaw import pmg_jigsaw_reference, reference_permute


def make(**kwargs) -> RandHierarchicalJigsawd:
    kwargs.setdefault("permutation_key_template", "{key}_perm_{grid}")
    return RandHierarchicalJigsawd(**kwargs)


def test_views_are_the_tiles_of_the_stored_permutations() -> None:
    data = {"image": torch.rand(3, 16, 24), "label": torch.randint(0, 2, (1, 16, 24))}
    out = make(keys=("image", "label"), grids=(8, 4, 2)).set_random_state(0)(data)
    assert torch.equal(out["image"], data["image"])  # the input stays
    for grid in (8, 4, 2):
        perm = out[f"image_perm_{grid}"]
        assert perm.shape == (grid * grid,) and perm.dtype == torch.long
        # image and label get the same puzzle
        assert torch.equal(out[f"label_perm_{grid}"], perm)
        for key in ("image", "label"):
            expected = reference_permute(data[key][None], perm[None])[0]
            assert torch.equal(out[f"{key}_jigsaw_{grid}"], expected)


def test_set_random_state_makes_it_deterministic_also_in_compose() -> None:
    data = {"image": torch.rand(1, 32, 32)}

    def run(seed: int) -> dict:
        transform = Compose(
            [ScaleIntensityd(keys="image"), make(keys="image", grids=(16, 8))]
        )
        transform.set_random_state(seed=seed)
        return transform(data)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a["image_perm_16"], b["image_perm_16"])
    assert torch.equal(a["image_jigsaw_8"], b["image_jigsaw_8"])
    assert not torch.equal(a["image_perm_16"], c["image_perm_16"])
    # successive calls draw new puzzles
    transform = make(keys="image", grids=(4,)).set_random_state(0)
    assert not torch.equal(
        transform(data)["image_perm_4"], transform(data)["image_perm_4"]
    )


def test_types_are_kept() -> None:
    meta = MetaTensor(torch.rand(3, 8, 8), meta={"filename_or_obj": "x.png"})
    out = make(keys=("image", "array"), grids=(2,)).set_random_state(0)(
        {"image": meta, "array": np.random.rand(3, 8, 8).astype(np.float32)}
    )
    assert isinstance(out["image_jigsaw_2"], MetaTensor)
    assert out["image_jigsaw_2"].meta["filename_or_obj"] == "x.png"
    assert isinstance(out["array_jigsaw_2"], np.ndarray)
    assert out["array_jigsaw_2"].dtype == np.float32


def test_prob_and_exclude_identity() -> None:
    data = {"image": torch.rand(1, 4, 4)}
    out = make(keys="image", grids=(2,), prob=0.0).set_random_state(0)(data)
    assert torch.equal(out["image_jigsaw_2"], data["image"])
    assert out["image_perm_2"].tolist() == [0, 1, 2, 3]
    transform = make(keys="image", grids=(2,), exclude_identity=True).set_random_state(
        0
    )
    perms = {tuple(transform(data)["image_perm_2"].tolist()) for _ in range(300)}
    assert (0, 1, 2, 3) not in perms and len(perms) == 23


def test_bad_input() -> None:
    transform = make(keys="image", grids=(4,))
    with pytest.raises(
        ValueError,
        match=r"'image' must be a channel-first 2-D image \(C, H, W\), got shape \(8, 8\)",
    ):
        transform({"image": torch.rand(8, 8)})
    with pytest.raises(ValueError, match="grid 4 does not divide the image width 10"):
        transform({"image": torch.rand(1, 8, 10)})
    with pytest.raises(KeyError, match="image"):
        transform({"other": torch.rand(1, 8, 8)})
    assert make(keys="image", grids=(4,), allow_missing_keys=True)({"x": 1}) == {"x": 1}
    with pytest.raises(ValueError, match="grid"):
        RandHierarchicalJigsawd(keys="image", key_template="{key}_jigsaw")
    with pytest.raises(ValueError, match="grid >= 2"):
        RandHierarchicalJigsawd(keys="image", grids=(1,), exclude_identity=True)


@pytest.mark.parametrize("kind", ["cycle", "derangement", "uniform"])
def test_permutation_kinds_against_a_loop_reference(kind) -> None:
    data = {"image": torch.rand(2, 12, 24)}
    grids = (6, 3, 2)
    transform = make(keys="image", grids=grids, permutations=kind).set_random_state(4)
    # the same draws from the same RandomState: prob, then one permutation per grid
    state = np.random.RandomState(4)
    for _ in range(20):
        out = transform(data)
        assert state.rand() < 1.0
        for grid in grids:
            n = grid * grid
            order = state.permutation(n)
            if kind == "derangement":
                while (order == np.arange(n)).any():
                    order = state.permutation(n)
            perm = out[f"image_perm_{grid}"]
            if kind == "cycle":
                expected = pmg_jigsaw_reference(data["image"], order.tolist())
                assert sorted(len(c) for c in cycles_of(perm.tolist())) == [
                    n
                ]  # one n-cycle
            else:
                assert perm.tolist() == order.tolist()
                expected = reference_permute(data["image"][None], perm[None])[0]
            assert torch.equal(out[f"image_jigsaw_{grid}"], expected)
            if kind != "uniform":
                assert not (perm == torch.arange(n)).any()
    with pytest.raises(ValueError, match="'derangement' needs every grid >= 2"):
        RandHierarchicalJigsawd(keys="image", grids=(2, 1), permutations="derangement")


def cycles_of(perm: list[int]) -> list[list[int]]:
    seen: set[int] = set()
    cycles = []
    for start in range(len(perm)):
        cycle = []
        p = start
        while p not in seen:
            seen.add(p)
            cycle.append(p)
            p = perm[p]
        if cycle:
            cycles.append(cycle)
    return cycles
