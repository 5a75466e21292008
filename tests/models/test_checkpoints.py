"""Checkpoint loading: every refusal is one CheckpointError line with the real reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from lightly_derm.errors import CheckpointError
from lightly_derm.models import (
    check_finite_weights,
    extract_backbone_state_dict,
    load_checkpoint_file,
)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_code_carrying_checkpoint_says_it_was_refused_for_that(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": _Evil()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path)
    message = str(info.value)
    assert message.startswith(
        f"checkpoint {str(path)!r} was refused: it carries pickled"
    )
    assert "never runs code" in message and "system" in message
    assert "\n" not in message
    assert not (tmp_path / "pwned").exists()


def test_empty_and_corrupt_files_name_the_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    with pytest.raises(CheckpointError, match=r"empty.ckpt' is empty \(0 bytes"):
        load_checkpoint_file(empty)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, good)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(cut)
    message = str(info.value)
    assert (
        "cut.ckpt' is not a readable PyTorch checkpoint (corrupt or truncated): "
        in (message)
    )
    assert not message.rstrip().endswith(":") and "\n" not in message
    torch.save({}, tmp_path / "nothing.ckpt")
    with pytest.raises(
        CheckpointError, match=r"nothing.ckpt' holds no tensors \(it is"
    ):
        extract_backbone_state_dict(tmp_path / "nothing.ckpt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint_file(tmp_path / "missing.ckpt")


def test_non_finite_backbone_weights_are_refused_on_load(tmp_path: Path) -> None:
    # before: loaded silently, and evaluate died later inside L-BFGS
    state = torchvision.models.resnet18().state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["layer4.1.bn2.running_var"][3] = float("inf")
    path = tmp_path / "diverged.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(CheckpointError) as info:
        extract_backbone_state_dict(path)
    assert str(info.value) == (
        f"checkpoint {str(path)!r} has non-finite weights (NaN or inf) in 2 tensors: "
        "layer1.0.conv1.weight, layer4.1.bn2.running_var; it cannot be used (a run "
        "that diverged)"
    )
    state["layer1.0.conv1.weight"].nan_to_num_(0.0)
    state["layer4.1.bn2.running_var"].fill_(1.0)
    check_finite_weights(state, "fine")  # integer buffers and finite weights pass
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_state_dict_fit_against_a_loop(seed: int) -> None:
    from lightly_derm.models.checkpoints import state_dict_fit

    generator = torch.Generator().manual_seed(seed)

    def shape() -> tuple[int, ...]:
        rank = int(torch.randint(0, 3, (), generator=generator))
        return tuple(int(d) for d in torch.randint(1, 3, (rank,), generator=generator))

    own = {f"k{i}": torch.zeros(shape()) for i in range(12)}
    theirs = {f"k{i}": torch.zeros(shape()) for i in range(4, 16)}
    own["extra_state"] = {"step": 1}  # not a tensor: compared by key only
    theirs["extra_state"] = {"step": 2}
    fit = state_dict_fit(own, theirs, module="encoder")
    mismatched, missing, unexpected = [], [], []
    for key, value in theirs.items():
        if key not in own:
            unexpected.append(key)
        elif torch.is_tensor(value) and value.shape != own[key].shape:
            mismatched.append(
                f"{key}: checkpoint {tuple(value.shape)} vs encoder "
                f"{tuple(own[key].shape)}"
            )
    missing = [key for key in own if key not in theirs]
    assert list(fit.mismatched) == mismatched
    assert list(fit.missing) == sorted(missing)
    assert list(fit.unexpected) == sorted(unexpected)
    assert fit.fits == (not mismatched and not missing and not unexpected)
    assert state_dict_fit(own, own).fits
