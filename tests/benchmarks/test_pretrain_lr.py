"""benchmarks/pretrain_lr.py: per-stage movement, pretraining grid, pairing, resume."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pretrain_lr
import pytest
import torch
import torchvision

import lightly_derm.jobs


def test_movement_is_the_relative_distance_of_each_stage() -> None:
    """Reference: the stage's conv weights moved by known amounts, norms in float64."""
    torch.manual_seed(0)
    module = SimpleNamespace(backbone=torchvision.models.resnet18())
    movement = pretrain_lr.Movement()
    movement.on_fit_start(None, module)  # type: ignore[arg-type]
    start = {k: v.double().clone() for k, v in module.backbone.state_dict().items()}
    scale = {"conv1": 0.5, "layer1": 0.1, "layer2": 0.0, "layer3": 0.2, "layer4": 1.0}
    with torch.no_grad():
        for name, p in module.backbone.named_parameters():
            stage = name.split(".")[0] if name.startswith("layer") else "conv1"
            if p.ndim == 4:
                p.add_(torch.randn_like(p) * scale[stage] * p.std())
            else:
                p.add_(1.0)  # BN and fc: not conv weights, not counted
    movement.on_fit_end(None, module)  # type: ignore[arg-type]
    end = module.backbone.state_dict()
    for stage in pretrain_lr.STAGES:
        keys = [
            k
            for k, v in start.items()
            if v.ndim == 4
            and (k.split(".")[0] if k.startswith("layer") else "conv1") == stage
        ]
        before = torch.cat([start[k].flatten() for k in keys])
        after = torch.cat([end[k].double().flatten() for k in keys])
        expected = float((after - before).norm() / before.norm())
        assert movement.moved[stage] == pytest.approx(expected, rel=1e-5)
        assert movement.norm[stage] == pytest.approx(
            np.linalg.norm(after.numpy()) / np.linalg.norm(before.numpy()), rel=1e-6
        )
        angles = []  # one per output filter, in numpy
        for k in keys:
            for f0, f1 in zip(start[k].numpy(), end[k].double().numpy(), strict=True):
                a, b = f0.ravel(), f1.ravel()
                cos = float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))
                angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
        assert movement.turned[stage] == pytest.approx(
            sum(angles) / len(angles), rel=1e-6, abs=1e-6
        )
    assert movement.moved["layer2"] == 0.0 and movement.moved["layer4"] > 0.5
    assert movement.turned["layer2"] == pytest.approx(0.0, abs=1e-4)
    assert movement.turned["layer4"] > 30 and movement.norm["layer4"] > 1.1


def test_a_shrunk_stage_moved_but_did_not_turn() -> None:
    """Weight decay's shrinkage: 'moved' 0.6, 'norm' 0.4, 'turned' 0 degrees."""
    torch.manual_seed(1)
    start = {"layer4.0.conv1.weight": torch.randn(8, 4, 3, 3)}
    start |= {
        f"{s}.0.conv1.weight": torch.randn(4, 4, 3, 3)
        for s in ("layer1", "layer2", "layer3")
    }
    start["conv1.weight"] = torch.randn(4, 3, 7, 7)
    end = {k: v * (0.4 if k.startswith("layer4") else 1.0) for k, v in start.items()}
    change = pretrain_lr.stage_change(start, end)
    assert change["moved"]["layer4"] == pytest.approx(0.6)
    assert change["norm"]["layer4"] == pytest.approx(0.4)
    assert change["turned"]["layer4"] == pytest.approx(0.0, abs=1e-4)


def _pretrained(out: str, callbacks: list) -> SimpleNamespace:
    """What the library's pretrain job leaves, for the fakes: a run folder with
    backbone.pt, and the movement callback's measures (zeros)."""
    (movement,) = callbacks
    movement.moved = movement.norm = movement.turned = dict.fromkeys(
        pretrain_lr.STAGES, 0.0
    )
    Path(out).mkdir(parents=True)
    (Path(out) / "backbone.pt").write_bytes(b"")
    return SimpleNamespace(summary={"metrics": {}})


def _study_out(root: Path) -> Path:
    for split in ("train", "val"):
        (root / "data" / "isic_64_10" / "folds" / "fold_0" / split).mkdir(parents=True)
    return root


def test_grid_pairs_with_random_init_and_a_rerun_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _study_out(tmp_path / "study")
    rng = np.random.default_rng(0)
    pretrained: list[tuple[str, str, float, int]] = []
    lr_of: dict[Path, float] = {}
    scores: dict[tuple[str, float | None, int], float] = {}

    def fake_job(*, method, method_args, data, out, callbacks, epochs, **options):
        """The library's pretrain job's contract: a run folder with backbone.pt; the
        callbacks see a fit whose every conv weight moves by lr / 10 of its norm."""
        assert Path(data).name == "train" and Path(data).parent.name == "fold_0"
        lr = method_args["lr"]
        pretrained.append((method, method_args["optimizer"], lr, epochs))
        module = SimpleNamespace(backbone=torchvision.models.resnet18())
        (movement,) = callbacks
        movement.on_fit_start(None, module)
        with torch.no_grad():
            for p in module.backbone.parameters():
                if p.ndim == 4:
                    p.mul_(1 + lr / 10)
        movement.on_fit_end(None, module)
        Path(out).mkdir(parents=True)
        (Path(out) / "backbone.pt").write_bytes(b"")
        lr_of[Path(out) / "backbone.pt"] = lr
        return SimpleNamespace(summary={"metrics": {"train_loss_epoch": -1.0}})

    def fake_finetune(
        backbone,
        train,
        val,
        epochs,
        seed,
        fraction,
        frozen,
        encoder_lr_scale,
        rescale_encoder,
        callbacks,
    ):
        split = "validation" if val is None else "test"
        assert train.name == "train" and (val is None or val.name == "val")
        lr = None if backbone is None else lr_of[backbone]
        assert not frozen and encoder_lr_scale == 1.0 and not rescale_encoder
        scores[split, lr, seed] = float(rng.uniform(0.6, 0.9))
        return {"val_jaccard": scores[split, lr, seed]}

    monkeypatch.setattr(lightly_derm.jobs, "pretrain", fake_job)
    monkeypatch.setattr(pretrain_lr, "finetune", fake_finetune)
    output = tmp_path / "table.md"
    argv = [
        "--study-out", str(out), "--jobs", str(tmp_path / "jobs"), "--methods", "byol",
        "--optimizer", "lars", "--lrs", "0.5", "2", "--epochs", "3",
        "--finetune-seeds", "0", "1", "--label-fractions", "0.1",
        "--output", str(output),
    ]  # fmt: skip
    assert pretrain_lr.main(argv) == 0
    assert pretrained == [("byol", "lars", 0.5, 3), ("byol", "lars", 2.0, 3)]
    assert set(scores) == {
        ("validation", lr, s) for lr in (None, 0.5, 2.0) for s in (0, 1)
    }
    deltas = [
        scores["validation", 2.0, s] - scores["validation", None, s] for s in (0, 1)
    ]
    row = next(x for x in output.read_text().splitlines() if "| lars | 2 | 3 |" in x)
    assert f"{np.mean(deltas):+.3f} ± {np.std(deltas, ddof=1):.3f}" in row
    assert "0.200 / 0.200" in row and "| 0 | 2 |" in row  # movement, folds, count
    assert "(validation split)" in output.read_text()
    # a rerun pretrains and fine-tunes nothing again; another lr adds only its rows
    assert pretrain_lr.main(argv) == 0 and len(pretrained) == 2
    assert pretrain_lr.main([*argv[:9], "1", *argv[11:]]) == 0
    assert pretrained[-1] == ("byol", "lars", 1.0, 3) and len(scores) == 8
    text = output.read_text()
    assert all(f"| lars | {lr} | 3 |" in text for lr in ("0.5", "1", "2"))
    # the test split reuses the pretrainings and reports only its own rows
    assert pretrain_lr.main([*argv, "--split", "test"]) == 0
    assert len(pretrained) == 3
    assert {k for k in scores if k[0] == "test"} == {
        ("test", lr, s) for lr in (None, 0.5, 2.0) for s in (0, 1)
    }
    text = output.read_text()
    assert "(test split)" in text and "| lars | 1 | 3 |" not in text
    assert "0.200 / 0.200" in text  # movement carried over from the pretraining


def test_frozen_and_slower_encoders_pair_with_random_init_fine_tuned_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--frozen freezes random init too (its own rows); --encoder-lr-scale slows only
    the pretrained encoder, so random init's full-rate rows are reused as its pair."""
    out = _study_out(tmp_path / "study")
    rng = np.random.default_rng(1)
    calls: list[tuple[bool, bool, float]] = []  # (pretrained, frozen, scale)
    scores: dict[tuple[bool, bool, float, int], float] = {}

    def fake_job(*, out, callbacks, **options):
        return _pretrained(out, callbacks)

    def fake_finetune(
        backbone, train, val, epochs, seed, fraction, *, frozen, encoder_lr_scale,
        rescale_encoder, callbacks,
    ):  # fmt: skip
        scale = -1.0 if rescale_encoder else encoder_lr_scale  # -1: rescaled
        calls.append((backbone is not None, frozen, scale))
        score = float(rng.uniform(0.6, 0.9))
        scores[backbone is not None, frozen, scale, seed] = score
        return {"val_jaccard": score}

    monkeypatch.setattr(lightly_derm.jobs, "pretrain", fake_job)
    monkeypatch.setattr(pretrain_lr, "finetune", fake_finetune)
    output = tmp_path / "table.md"
    argv = [
        "--study-out", str(out), "--jobs", str(tmp_path / "jobs"), "--methods", "byol",
        "--optimizer", "lars", "--lrs", "1", "--epochs", "2",
        "--finetune-seeds", "0", "1", "--label-fractions", "0.1",
        "--output", str(output),
    ]  # fmt: skip
    assert pretrain_lr.main(argv) == 0
    assert pretrain_lr.main([*argv, "--frozen"]) == 0
    assert pretrain_lr.main([*argv, "--encoder-lr-scale", "0.1"]) == 0
    assert pretrain_lr.main([*argv, "--rescale"]) == 0
    assert calls == [
        *[(False, False, 1.0)] * 2, *[(True, False, 1.0)] * 2,
        *[(False, True, 1.0)] * 2, *[(True, True, 1.0)] * 2,
        *[(True, False, 0.1)] * 2, *[(True, False, -1.0)] * 2,
    ]  # fmt: skip
    lines = output.read_text().splitlines()

    def delta(variant: str, frozen: bool, scale: float) -> str:
        d = [
            scores[True, frozen, scale, s] - scores[False, frozen, 1.0, s]
            for s in (0, 1)
        ]
        (row,) = [x for x in lines if x.startswith(f"| 10% | {variant} | byol |")]
        assert f"{np.mean(d):+.3f} ± {np.std(d, ddof=1):.3f}" in row
        return row

    delta("full", False, 1.0)
    delta("frozen", True, 1.0)
    delta("encoder lr ×0.1", False, 0.1)
    delta("rescaled", False, -1.0)
    assert sum(x.startswith("| 10% | frozen | random |") for x in lines) == 1
    with pytest.raises(SystemExit):  # one or the other
        pretrain_lr.main([*argv, "--frozen", "--encoder-lr-scale", "0.1"])
    with pytest.raises(SystemExit):
        pretrain_lr.main([*argv, "--frozen", "--rescale"])


def test_views_reach_the_pretraining_only_and_are_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--views colour: the method makes its views with the variant's arguments during
    the pretraining (and its own views again after); rows and run folder name them."""
    from view_variants import VARIANTS

    from lightly_derm.methods import BYOL

    out = _study_out(tmp_path / "study")
    seen: list[dict[str, float]] = []
    own = vars(BYOL)["cpu_view_transform"]

    def fake_job(*, out, callbacks, **options):
        views = BYOL.cpu_view_transform(None, 32).transform  # type: ignore[arg-type]
        jitter = next(
            t
            for t in views.transforms[0].transform.transforms
            if type(t).__name__ == "RandomApply"
        ).transforms[0]
        seen.append({"hue": max(jitter.hue or (0, 0)), "out": Path(out).name})
        return _pretrained(out, callbacks)

    monkeypatch.setattr(lightly_derm.jobs, "pretrain", fake_job)
    monkeypatch.setattr(pretrain_lr, "finetune", lambda *a, **k: {"val_jaccard": 0.5})
    output = tmp_path / "table.md"
    argv = [
        "--study-out", str(out), "--jobs", str(tmp_path / "jobs"), "--methods", "byol",
        "--optimizer", "adamw", "--lrs", "0.001", "--epochs", "2",
        "--finetune-seeds", "0", "--label-fractions", "0.1", "--output", str(output),
    ]  # fmt: skip
    assert pretrain_lr.main(argv) == 0
    assert pretrain_lr.main([*argv, "--views", "colour"]) == 0
    assert VARIANTS["colour"]["cj_hue"] == 0.0
    assert seen[0]["hue"] > 0 and seen[1]["hue"] == 0.0  # lightly's default hue 0.1
    assert seen[1]["out"].endswith("-colour-fold0")
    assert "colour" not in seen[0]["out"]
    assert vars(BYOL)["cpu_view_transform"] is own  # restored
    rows = pretrain_lr.read_rows(output.with_suffix(".jsonl"))
    assert [r["views"] for r in rows] == ["default", "default", "colour"]
    text = output.read_text()
    assert "| adamw | 0.001 | 2 | colour |" in text
    assert "| adamw | 0.001 | 2 | default |" in text


def test_other_images_are_pretrained_on_once_for_every_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _study_out(tmp_path / "study")
    for split in ("train", "val"):
        (out / "data" / "isic_64_10" / "folds" / "fold_1" / split).mkdir(parents=True)
    unlabelled = tmp_path / "derma"
    unlabelled.mkdir()
    jobs: list[tuple[str, str]] = []
    tuned: list[tuple[str, bool]] = []

    def fake_job(*, data, out, callbacks, **options):
        jobs.append((data, Path(out).name))
        return _pretrained(out, callbacks)

    def fake_finetune(backbone, train, *args, **kwargs):
        tuned.append((train.parent.name, backbone is not None))
        return {"val_jaccard": 0.5}

    monkeypatch.setattr(lightly_derm.jobs, "pretrain", fake_job)
    monkeypatch.setattr(pretrain_lr, "finetune", fake_finetune)
    output = tmp_path / "table.md"
    argv = [
        "--study-out", str(out), "--jobs", str(tmp_path / "jobs"), "--methods", "byol",
        "--optimizer", "adamw", "--lrs", "0.001", "--epochs", "1", "--folds", "0", "1",
        "--finetune-seeds", "0", "--label-fractions", "0.1", "--output", str(output),
        "--pretrain-data", str(unlabelled),
    ]  # fmt: skip
    assert pretrain_lr.main(argv) == 0
    assert jobs == [(str(unlabelled), "byol-adamw0.001-e1-seed0-on-derma")]
    assert tuned == [
        ("fold_0", False), ("fold_0", True), ("fold_1", False), ("fold_1", True)
    ]  # fmt: skip
    rows = pretrain_lr.read_rows(output.with_suffix(".jsonl"))
    assert [r["pretrain_data"] for r in rows] == ["fold", "derma"] * 2
    assert "| adamw | 0.001 | 1 | default | – | derma |" in output.read_text()


def test_method_args_reach_the_pretraining_and_name_its_rows_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _study_out(tmp_path / "study")
    jobs: list[tuple[dict[str, object], str]] = []

    def fake_job(*, method_args, out, callbacks, **options):
        jobs.append((method_args, Path(out).name))
        return _pretrained(out, callbacks)

    monkeypatch.setattr(lightly_derm.jobs, "pretrain", fake_job)
    monkeypatch.setattr(pretrain_lr, "finetune", lambda *a, **k: {"val_jaccard": 0.5})
    output = tmp_path / "table.md"
    argv = [
        "--study-out", str(out), "--jobs", str(tmp_path / "jobs"), "--methods",
        "gravis", "--lrs", "0.0075", "--epochs", "2", "--finetune-seeds", "0",
        "--label-fractions", "0.1", "--output", str(output),
    ]  # fmt: skip
    assert pretrain_lr.main(argv) == 0
    assert pretrain_lr.main([*argv, "--method-args", '{"num_views": 8, "b": 0.5}']) == 0
    # the same arguments in another spelling are the same pretraining: nothing reruns
    assert pretrain_lr.main([*argv, "--method-args", '{"b":0.5,"num_views":8}']) == 0
    assert [name for _, name in jobs] == [
        "gravis-sgd0.0075-e2-seed0-fold0",
        "gravis-sgd0.0075-e2-seed0-b_0.5-num_views_8-fold0",
    ]
    assert "num_views" not in jobs[0][0]
    assert jobs[1][0]["num_views"] == 8 and jobs[1][0]["b"] == 0.5
    assert jobs[1][0]["lr"] == 0.0075 and jobs[1][0]["optimizer"] == "sgd"
    rows = pretrain_lr.read_rows(output.with_suffix(".jsonl"))
    assert [r["method_args"] for r in rows] == ["", "", '{"b":0.5,"num_views":8}']
    text = output.read_text()
    assert '| sgd | 0.0075 | 2 | default | {"b":0.5,"num_views":8} | fold |' in text
    assert "| sgd | 0.0075 | 2 | default | – | fold |" in text
    # the command in the report can be pasted into a shell
    assert """--method-args '{"b":0.5,"num_views":8}'`""" in text
    for bad, message in (
        ("[1]", "must be a JSON object"),
        ("{n: 1}", "is not JSON"),
        ('{"lr": 0.1, "b": 1}', "sets lr, which the grid sets itself: use --optimizer"),
    ):
        with pytest.raises(SystemExit, match=message):
            pretrain_lr.main([*argv, "--method-args", bad])


def test_a_missing_fold_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no staged ISIC fold 0 under .*study/data"):
        pretrain_lr.main(
            ["--study-out", str(tmp_path / "study"), "--jobs", str(tmp_path / "j"),
             "--output", str(tmp_path / "t.md")]
        )  # fmt: skip


def test_backbone_of_the_real_pretraining_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One real (tiny) pretraining through the library's job: the backbone file exists
    and every stage moved; LARS reaches the deep stages."""
    images = tmp_path / "train" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            images / f"ISIC_{i:07d}.jpg"
        )
    monkeypatch.setitem(pretrain_lr.PRETRAIN, "input_size", 32)
    monkeypatch.setitem(pretrain_lr.PRETRAIN, "batch_size", 4)
    monkeypatch.setitem(pretrain_lr.PRETRAIN, "num_workers", 0)
    from lightly_derm.jobs import pretrain

    args = SimpleNamespace(jobs=tmp_path / "jobs", pretrain_seed=0, pretrain_data=None)
    backbone, info = pretrain_lr._pretrain(
        pretrain, "byol", "lars", 1.0, 1, "default", "", images.parent, 0, args
    )
    assert backbone.is_file()
    assert set(info["moved"]) == set(pretrain_lr.STAGES)
    assert all(v > 0 for v in info["moved"].values())
    state = torch.load(backbone, weights_only=True)
    assert isinstance(state, dict) and "layer4.1.conv2.weight" in state


def test_a_real_fine_tune_reports_how_it_turned_the_encoder(tmp_path: Path) -> None:
    """One real (tiny) fine-tune through finetune_length.finetune with the callback
    the rows use: every encoder stage is measured and turned."""
    import finetune_length
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"ISIC_{i:07d}.jpg"
        )
        mask = np.zeros((40, 40), dtype=np.uint8)
        mask[10:30, 5 + i : 25 + i] = 255
        Image.fromarray(mask).save(
            tmp_path / "masks" / f"ISIC_{i:07d}_segmentation.png"
        )
    turn = pretrain_lr.Movement("net.encoder")
    scores = finetune_length.finetune(
        None, tmp_path, None, 2, 0, 1.0, image_size=32, batch_size=2, callbacks=[turn]
    )
    assert 0 <= scores["val_jaccard"] <= 1
    assert set(turn.turned) == set(pretrain_lr.STAGES)
    assert all(v > 0 for v in turn.turned.values())
