"""The study driver and its report (benchmarks/study.py, benchmarks/study_report.py).

The data are toy stand-ins in the real layouts, made from the built-in synthetic
lesions: an ISIC folder (``images/`` + ``masks/``) and a DermaMNIST JPEG export (zip +
``labels.csv``), so the whole path runs in CI without the real data.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import study
import study_report
import yaml

STUDY = Path(__file__).resolve().parents[2] / "benchmarks" / "studies" / "derm_ssl.yaml"
DX = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def _fake_isic(root: Path, count: int) -> Path:
    from PIL import Image

    from lightly_derm.data import SyntheticLesions

    folder = root / "isic2017-seg-subset"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    lesions = SyntheticLesions(count, image_size=48, return_mask=True, seed=1)
    for i in range(count):
        item = lesions[i]
        name = f"ISIC_{i:07d}"
        Image.fromarray(item["image"].permute(1, 2, 0).numpy()).save(
            folder / "images" / f"{name}.jpg"
        )
        Image.fromarray(item["mask"][0].numpy() * 255).save(
            folder / "masks" / f"{name}_segmentation.png"
        )
    return folder


def _fake_dermamnist(root: Path, per_split: dict[str, int]) -> Path:
    from lightly_derm.data import SyntheticLesions

    folder = root / "dermamnist-jpg"
    folder.mkdir()
    rows = []
    with zipfile.ZipFile(folder / "dermamnist_jpg.zip", "w") as archive:
        for split, count in per_split.items():
            lesions = SyntheticLesions(count, image_size=28, split=split, seed=2)
            for i in range(count):
                image, target, _ = lesions[i]
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG")
                image_id = f"DermaMNIST_{split}_{i:05d}"
                archive.writestr(f"images/{image_id}.jpg", buffer.getvalue())
                rows.append([image_id, DX[[5, 4, 1][target]], f"lesion_{split}_{i}"])
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "dx", "lesion_id"])
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study_data")
    _fake_isic(root, 30)
    _fake_dermamnist(root, {"train": 60, "val": 30, "test": 30})
    return root


# ----------------------------------------------------------------------- units
def test_deep_merge_merges_nested_and_replaces_the_rest() -> None:
    base = {"a": {"x": 1, "y": [1]}, "b": 2}
    merged = study.deep_merge(base, {"a": {"y": [3]}, "c": 4})
    assert merged == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 4}
    assert base["a"]["y"] == [1]


def test_load_study_scales_and_errors(tmp_path: Path) -> None:
    smoke = study.load_study(STUDY, "smoke")
    gpu = study.load_study(STUDY, "gpu")
    tiny = study.load_study(STUDY, "gpu", tiny=True)
    assert smoke["methods"] == ["gravis"]
    assert gpu["methods"] == ["gravis", "fgssl", "ap_byol", "byol", "simclr"]
    assert gpu["seeds"] == [0, 1, 2]
    assert tiny["methods"] == gpu["methods"] and tiny["seeds"] == gpu["seeds"]
    assert gpu["imagenet_methods"] == gpu["methods"]  # the continued-from-ImageNet grid
    assert "imagenet" in gpu["references"] and "imagenet" not in smoke["references"]
    assert study.load_study(STUDY, "cpu")["imagenet_methods"] == ["fgssl"]
    assert tiny["datasets"]["isic2017"]["pretrain"]["augment"] == "gpu"
    assert tiny["datasets"]["isic2017"]["pretrain"]["accelerator"] == "cpu"
    with pytest.raises(ValueError, match="--scale 'huge'"):
        study.load_study(STUDY, "huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("scales: {smoke: {}}\n")
    with pytest.raises(ValueError, match="defines no datasets"):
        study.load_study(bad, "smoke")
    bad.write_text(
        "datasets: {d: {task: segmentation, data: x, epochs: 3}}\nscales: {smoke: {}}\n"
    )
    with pytest.raises(ValueError, match="dataset 'd' has unknown key.s. epochs"):
        study.load_study(bad, "smoke")
    bad.write_text(
        "datasets: {d: {task: segmentation, data: x}}\nscales: {smoke: {paralel: 2}}\n"
    )
    with pytest.raises(ValueError, match="unknown key.s. paralel"):
        study.load_study(bad, "smoke")


@pytest.mark.parametrize(
    "path", sorted(STUDY.parent.glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_study_file_loads_at_each_of_its_scales(path: Path) -> None:
    scales = yaml.safe_load(path.read_text())["scales"]
    assert scales
    for scale in scales:
        loaded = study.load_study(path, scale)
        assert loaded["datasets"] and loaded["seeds"], (path.name, scale)
        for spec in loaded["datasets"].values():
            fractions = spec.get("label_fractions", [])
            assert set(study._by_fraction(spec.get("segment_epochs"))) <= set(
                map(float, fractions)
            ), (path.name, scale, "segment_epochs names a fraction the study lacks")


def test_method_args_merge_all_then_the_method_then_imagenet() -> None:
    spec = {
        "method_args": {
            "all": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 5e-4},
            "gravis": {"lr": 2e-3, "temperature": 0.2},
            "+imagenet": {"optimizer": "sgd", "lr": 0.03},
        }
    }
    assert study._method_args(spec, "byol") == {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 5e-4,
    }
    assert study._method_args(spec, "gravis") == {
        "optimizer": "adamw",
        "lr": 2e-3,
        "weight_decay": 5e-4,
        "temperature": 0.2,
    }
    assert study._method_args(spec, "gravis+imagenet") == {
        "optimizer": "sgd",
        "lr": 0.03,
        "weight_decay": 5e-4,
        "temperature": 0.2,
    }
    assert study._method_args(spec, "fgssl+imagenet") == {}  # the authors' preset
    assert study._method_args({}, "byol") == {}
    # the gpu scale: AdamW from random init (encoders that move in ~120 steps), the
    # ImageNet backbone continued with SGD
    for name, spec in study.load_study(STUDY, "gpu")["datasets"].items():
        assert study._method_args(spec, "byol")["optimizer"] == "adamw", name
        assert study._method_args(spec, "byol+imagenet")["optimizer"] == "sgd", name
        assert study._method_args(spec, "fgssl")["backbone_lr"] == 1e-3, name


@pytest.mark.parametrize(("n", "k"), [(10, 3), (290, 3), (7, 2)])
def test_isic_folds_partition_the_ids(n: int, k: int) -> None:
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    folds = study.isic_folds(ids, k)
    assert sorted(i for fold in folds for i in fold) == ids
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert folds == study.isic_folds(list(reversed(ids)), k)


def test_prepare_isic_keeps_held_out_images_out_of_pretraining(
    data_root: Path, tmp_path: Path
) -> None:
    spec = {"folds": 3, "limit": 12, "resize": 32}
    prepared = study.prepare_isic(
        data_root / "isic2017-seg-subset", spec, tmp_path, None
    )
    assert prepared["pairs"] == 12 and prepared["folds"] == [0, 1, 2]
    seen: list[str] = []
    for fold in prepared["fold_dirs"].values():
        train = {p.stem for p in Path(fold["pretrain_data"], "images").iterdir()}
        held = {p.stem for p in Path(fold["val_data"], "images").iterdir()}
        assert not train & held and len(train) + len(held) == 12
        seen += sorted(held)
    assert len(set(seen)) == 12


def test_prepare_dermamnist_subset_is_the_export_layout(
    data_root: Path, tmp_path: Path
) -> None:
    from lightly_derm.data import make_dataset

    spec = {"subset": {"train": 10, "val": 5, "test": 7}}
    prepared = study.prepare_dermamnist(data_root / "dermamnist-jpg", spec, tmp_path)
    for split, count in spec["subset"].items():
        assert len(make_dataset(prepared["eval_data"], split=split)) == count


def _record(method: str, seed: int, fold: int, jaccard: float) -> dict[str, object]:
    rows = [
        {
            "method": method,
            "label_fraction": 0.1,
            "val_jaccard": jaccard,
            "val_dice": jaccard + 0.1,
            "val_jaccard_thresholded": jaccard - 0.1,
        }
    ]
    return {
        "id": f"isic-{method}-seed{seed}-fold{fold}",
        "dataset": "isic",
        "task": "segmentation",
        "method": method,
        "seed": seed,
        "fold": fold,
        "status": "ok",
        "rows": rows,
    }


def test_report_means_over_folds_then_seeds_and_paired_delta(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = {}
    for method in ("gravis", "random"):
        for seed in (0, 1, 2):
            for fold in (0, 1):
                values[method, seed, fold] = float(rng.uniform(0.4, 0.8))
                study.write_json(
                    tmp_path / "results" / f"{method}{seed}{fold}.json",
                    _record(method, seed, fold, values[method, seed, fold]),
                )
    study.write_json(
        tmp_path / "results" / "broken.json",
        {"id": "isic-fgssl-seed0-fold0", "status": "timeout", "rows": []},
    )
    summary = study_report.segmentation_summary(
        study_report.read_results(tmp_path), "isic"
    )[0.1]
    per_seed = [np.mean([values["gravis", s, f] for f in (0, 1)]) for s in (0, 1, 2)]
    mean, std = summary["gravis"]["val_jaccard"]
    assert mean == pytest.approx(np.mean(per_seed))
    assert std == pytest.approx(np.std(per_seed, ddof=1))
    deltas = [
        np.mean([values["gravis", s, f] - values["random", s, f] for f in (0, 1)])
        for s in (0, 1, 2)
    ]
    assert summary["gravis"]["delta"][0] == pytest.approx(np.mean(deltas))
    assert summary["gravis"]["n"] == (3, 6)
    written = study_report.write_report(tmp_path)
    assert {p.name for p in written} == {"study.png", "report.md", "report.rst"}
    md = (tmp_path / "report.md").read_text()
    assert f"{mean:.3f} ± {std:.3f}" in md
    assert "isic-fgssl-seed0-fold0: timeout" in md
    rst = (tmp_path / "report.rst").read_text()
    assert ".. list-table::" in rst and f"{mean:.3f} ± {std:.3f}" in rst


def test_report_pairs_fine_tune_repeats_with_random_inits_same_repeat(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(1)
    values = {}
    for method in ("gravis", "random"):
        for seed in (0, 1):
            record = _record(method, seed, 0, 0.0)
            row = record["rows"][0]  # type: ignore[index]
            record["rows"] = []
            for repeat in (0, 1, 2):
                values[method, seed, repeat] = float(rng.uniform(0.4, 0.8))
                record["rows"].append(  # type: ignore[attr-defined]
                    {
                        **row,
                        "repeat": repeat,
                        "val_jaccard": values[method, seed, repeat],
                    }
                )
            study.write_json(tmp_path / "results" / f"{method}{seed}.json", record)
    summary = study_report.segmentation_summary(
        study_report.read_results(tmp_path), "isic"
    )[0.1]
    deltas = [
        np.mean([values["gravis", s, r] - values["random", s, r] for r in (0, 1, 2)])
        for s in (0, 1)
    ]
    assert summary["gravis"]["delta"][0] == pytest.approx(np.mean(deltas))
    assert summary["gravis"]["delta"][1] == pytest.approx(np.std(deltas, ddof=1))
    assert summary["gravis"]["n"] == (2, 6)


def test_report_pairs_methods_with_the_lightly_baselines_and_counts_ahead(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    values = {}
    methods = ("ap_byol", "byol", "simclr", "random", "ap_byol+imagenet", "imagenet")
    for method in methods:
        for seed in (0, 1):
            for fold in (0, 1, 2):
                values[method, seed, fold] = float(rng.uniform(0.4, 0.8))
                study.write_json(
                    tmp_path / "results" / f"{method}{seed}{fold}.json",
                    _record(method, seed, fold, values[method, seed, fold]),
                )
    summary = study_report.segmentation_summary(
        study_report.read_results(tmp_path), "isic"
    )[0.1]

    def reference(method: str, base: str) -> tuple[float, float, int]:
        per_seed, ahead = [], 0
        for seed in (0, 1):
            diffs = [values[method, seed, f] - values[base, seed, f] for f in (0, 1, 2)]
            per_seed.append(np.mean(diffs))
            ahead += sum(d > 0 for d in diffs)
        return float(np.mean(per_seed)), float(np.std(per_seed, ddof=1)), ahead

    for base in ("random", "byol", "simclr"):
        mean, std, ahead = reference("ap_byol", base)
        (got_mean, got_std), (got_ahead, paired) = (
            (summary["ap_byol"]["delta"], summary["ap_byol"]["ahead"])
            if base == "random"
            else summary["ap_byol"]["vs"][base]
        )
        assert got_mean == pytest.approx(mean) and got_std == pytest.approx(std)
        assert (got_ahead, paired) == (ahead, 6)
    # the lightly baselines are paired with random init only; ImageNet rows with
    # ImageNet transfer, and with no baseline continued from ImageNet here
    assert "vs" not in summary["byol"] and "delta" in summary["byol"]
    assert summary["ap_byol+imagenet"]["vs"] == {}
    mean, _, ahead = reference("ap_byol+imagenet", "imagenet")
    assert summary["ap_byol+imagenet"]["delta"][0] == pytest.approx(mean)
    assert summary["ap_byol+imagenet"]["ahead"] == (ahead, 6)
    study_report.write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Δ vs BYOL (lightly)" in md and "Δ vs SimCLR (lightly)" in md
    mean, std, ahead = reference("ap_byol", "simclr")
    assert f"{mean:+.3f} ± {std:.3f} ({ahead}/6)" in md


def test_report_says_how_far_pretraining_turned_each_stage(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    angles: dict[str, list[list[float]]] = {"gravis": [], "byol": []}
    for method in ("gravis", "byol", "random"):
        for seed in (0, 1):
            for fold in (0, 1, 2):
                record = _record(method, seed, fold, 0.7)
                if method != "random":
                    turned = rng.uniform(0, 20, size=2).round(2).tolist()
                    angles[method].append(turned)
                    record["pretrain"] = {
                        "turned": dict(zip(("conv1", "layer4"), turned, strict=True))
                    }
                study.write_json(
                    tmp_path / "results" / f"{method}{seed}{fold}.json", record
                )
    # a record from before the angles were kept counts in no cell
    old = _record("gravis", 2, 0, 0.7)
    old["pretrain"] = {"seconds": 1.0}
    study.write_json(tmp_path / "results" / "old.json", old)
    stages, summary = study_report.turn_summary(
        study_report.read_results(tmp_path), "isic"
    )
    assert stages == ["conv1", "layer4"] and set(summary) == {"gravis", "byol"}
    for method, jobs in angles.items():
        for i, stage in enumerate(stages):
            column = [job[i] for job in jobs]
            mean, std = summary[method][stage]
            assert mean == pytest.approx(sum(column) / len(column))
            assert std == pytest.approx(float(np.std(column, ddof=1)))
        assert summary[method]["n"] == 6
    study_report.write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "how far pretraining turned" in md and "| layer4 turned ° |" in md
    assert "Turned °: the mean angle" in md
    cells = [f"{m:.1f} ± {s:.1f}" for m, s in (summary["byol"][k] for k in stages)]
    assert f"| BYOL (lightly) | {cells[0]} | {cells[1]} | 6 |" in md


def test_report_without_results_says_pending(tmp_path: Path) -> None:
    study_report.write_report(tmp_path, pending_command="python -m benchmarks.study")
    rst = (tmp_path / "report.rst").read_text()
    assert "Results pending" in rst and "python -m benchmarks.study" in rst
    assert not (tmp_path / "study.png").exists()


# ----------------------------------------------------------------------- runs
def _rows(out: Path) -> dict[str, dict[str, object]]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}


@pytest.mark.slow
def test_smoke_scale_runs_end_to_end_and_reruns_nothing(
    data_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "smoke"
    argv = [
        "--study",
        str(STUDY),
        "--scale",
        "smoke",
        "--out",
        str(out),
        "--data-root",
        str(data_root),
    ]
    assert study.main(argv) == 0
    results = _rows(out)
    assert set(results) == {
        "isic2017-gravis-seed0-fold0",
        "isic2017-random-seed0-fold0",
        "dermamnist-gravis-seed0",
        "dermamnist-random-seed0",
    }
    assert all(r["status"] == "ok" for r in results.values())
    seg = results["isic2017-gravis-seed0-fold0"]["rows"]
    assert [(r["label_fraction"], r["repeat"]) for r in seg] == [
        (0.5, 0),
        (0.5, 1),
        (1.0, 0),
    ]
    repeat = out / "jobs" / "isic2017-gravis-seed0-fold0" / "segment_0.5_r1"
    assert "seed: 1000" in (repeat / "config.yaml").read_text()
    assert all(0 <= r["val_jaccard"] <= 1 for r in seg)
    # where the time went: imports, pretraining and each fine-tune, within the whole
    gravis = results["isic2017-gravis-seed0-fold0"]
    parts = [gravis["import_seconds"], gravis["pretrain"]["seconds"]]
    parts += [r["seconds"] for r in seg]
    assert all(t > 0 for t in parts[1:]) and sum(parts) <= gravis["seconds"]
    # the pretraining says how far it turned each stage (deliverable: it moved)
    turned = gravis["pretrain"]["turned"]
    assert list(turned) == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert all(angle > 0 for angle in turned.values())
    assert "layer4 turned °" in (out / "report.md").read_text()
    derma = results["dermamnist-random-seed0"]["rows"]
    assert 0 < derma[0]["seconds"] <= results["dermamnist-random-seed0"]["seconds"]
    assert [r["method"] for r in derma] == ["random", "supervised"]
    assert derma[0]["knn_k"] in (5, 10) and derma[0]["selection"]["data"] == (
        "the val split"
    )
    assert not list((out / "jobs").rglob("*.ckpt"))  # keep_checkpoints is off
    assert (
        out / "jobs" / "dermamnist-gravis-seed0" / "pretrain" / "backbone.pt"
    ).is_file()
    report = (out / "report.md").read_text()
    assert "GraVIS (lightly-derm)" in report and "not results" in report
    assert (out / "study.png").is_file()
    # a rerun skips what finished
    assert study.main(argv) == 0
    header = json.loads((out / "study.json").read_text())
    assert header["status"] == {}
    # both invocations are on record, and the report names them
    assert [r["status"] for r in header["runs"]] == [{"ok": 4}, {}]
    assert "2 invocations" in (out / "report.md").read_text()


def test_plan_counts_only_its_own_jobs_as_done(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(study, "estimate_seconds", lambda job, s: 60.0)
    loaded = study.load_study(STUDY, "smoke")
    jobs = [
        study.Job("isic2017", "segmentation", "gravis", 0, 0),
        study.Job("isic2017", "segmentation", "random", 0, 0),
    ]
    study.print_plan(jobs, loaded, {jobs[0].id, "dermamnist-gravis-seed1"})
    assert "2 jobs (1 done)" in capsys.readouterr().out


def test_a_rerun_refuses_results_of_another_protocol(tmp_path: Path) -> None:
    spec = {
        "label_fractions": [0.03, 0.1, 1.0],
        "segment_epochs": {0.03: 100},
        "train_data": "anywhere",  # paths are not protocol
    }
    job = study.Job("isic2017", "segmentation", "gravis", 0, 0, spec=spec)
    results = tmp_path / "results"
    results.mkdir()

    def write(stored: dict) -> None:
        record = {"id": job.id, "status": "ok", "protocol": study.protocol(stored)}
        (results / f"{job.id}.json").write_text(json.dumps(record))

    write({**spec, "train_data": "elsewhere"})  # the same protocol: continues
    study.check_protocol(tmp_path, [job], study.finished(tmp_path))
    write({**spec, "label_fractions": [0.1, 1.0]})
    with pytest.raises(
        SystemExit,
        match=r"holds isic2017-gravis-seed0-fold0 from "
        r"another protocol \(label_fractions: \[0\.1, 1\.0\] then",
    ):
        study.check_protocol(tmp_path, [job], study.finished(tmp_path))
    study.check_protocol(tmp_path, [job], set())  # unfinished jobs are rerun anyway
    # results written before records held the protocol: the job's spec file decides
    (results / f"{job.id}.json").write_text(json.dumps({"id": job.id, "status": "ok"}))
    study.check_protocol(tmp_path, [job], study.finished(tmp_path))  # nothing known
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / f"{job.id}.json").write_text(
        json.dumps({"spec": {**spec, "segment_epochs": {"0.03": 20}}})
    )
    with pytest.raises(SystemExit, match="segment_epochs"):
        study.check_protocol(tmp_path, [job], study.finished(tmp_path))


def test_a_rerun_compares_only_what_each_job_runs_with(tmp_path: Path) -> None:
    spec = {
        "pretrain": {"epochs": 10},
        "method_args": {"all": {"lr": 1e-3}, "fgssl": {"backbone_lr": 1e-3}},
        "segment": {"epochs": 4},
    }
    gravis = study.Job("isic2017", "segmentation", "gravis", 0, 0, spec=spec)
    fgssl = study.Job("isic2017", "segmentation", "fgssl", 0, 0, spec=spec)
    random = study.Job("isic2017", "segmentation", "random", 0, 0, spec=spec)
    continued = study.Job("isic2017", "segmentation", "fgssl+imagenet", 0, 0, spec=spec)
    jobs = [gravis, fgssl, random, continued]
    results = tmp_path / "results"
    results.mkdir()

    def write(stored: dict) -> None:
        for job in jobs:
            record = {"id": job.id, "status": "ok", "protocol": study.protocol(stored)}
            (results / f"{job.id}.json").write_text(json.dumps(record))

    # another method's entry, and settings for continued rows, concern only those
    write({**spec, "method_args": {"all": {"lr": 1e-3}}})
    study.check_protocol(
        tmp_path, [gravis, random, continued], study.finished(tmp_path)
    )
    with pytest.raises(SystemExit, match=r"fgssl-seed0-fold0 .*method_args"):
        study.check_protocol(tmp_path, jobs, study.finished(tmp_path))
    write({**spec, "method_args": {**spec["method_args"], "+imagenet": {"lr": 0.03}}})
    study.check_protocol(tmp_path, jobs, study.finished(tmp_path))  # FG-SSL's preset
    # a changed pretraining: every method's job is another protocol, random init's not
    write({**spec, "pretrain": {"epochs": 50}})
    study.check_protocol(tmp_path, [random], study.finished(tmp_path))
    with pytest.raises(SystemExit, match=r"gravis-seed0-fold0 .*\(pretrain:"):
        study.check_protocol(tmp_path, jobs, study.finished(tmp_path))
    # ... unless it changes the backbone, which the reference rows are built from
    write({**spec, "pretrain": {"epochs": 10, "backbone": "resnet50"}})
    with pytest.raises(
        SystemExit,
        match=r"random-seed0-fold0 .*\(backbone: 'resnet50' then, 'resnet18'",
    ):
        study.check_protocol(tmp_path, [random], study.finished(tmp_path))
    write({**spec, "pretrain": {"epochs": 10, "backbone": "resnet18"}})  # the default
    study.check_protocol(tmp_path, [random], study.finished(tmp_path))
    write({**spec, "segment": {"epochs": 5}})  # the fine-tune: every job
    with pytest.raises(SystemExit, match=r"random-seed0-fold0 .*\(segment:"):
        study.check_protocol(tmp_path, [random], study.finished(tmp_path))


def test_command_line_narrows_folds_jobs_and_budget(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--study", str(STUDY), "--scale", "gpu", "--tiny", "--plan-only",
        "--data-root", str(data_root), "--out", str(tmp_path / "out"),
        "--seeds", "0", "--datasets", "isic2017", "--folds", "1",
        "--methods", "random", "gravis", "ap_byol+imagenet",
        "--budget-minutes", "2.5",
    ]  # fmt: skip
    assert study.main(argv) == 0
    plan = capsys.readouterr().out
    jobs = [line.split()[0] for line in plan.splitlines() if line.startswith("  ")]
    assert jobs == [
        "isic2017-gravis-seed0-fold1",
        "isic2017-ap_byol+imagenet-seed0-fold1",
        "isic2017-random-seed0-fold1",
    ]
    assert "(budget 2.5 minutes)" in plan
    with pytest.raises(SystemExit, match="--folds: no fold 5"):
        study.main([*argv[:-4], "--folds", "5"])


def test_command_line_narrows_label_fractions(data_root: Path, tmp_path: Path) -> None:
    argv = [
        "--study", str(STUDY), "--scale", "gpu", "--tiny", "--plan-only",
        "--data-root", str(data_root), "--out", str(tmp_path / "out"),
        "--seeds", "0", "--methods", "random", "--datasets", "isic2017",
    ]  # fmt: skip
    jobs: list[study.Job] = []
    real_build = study.build_jobs

    def build(spec: dict, prepared: dict) -> list[study.Job]:
        jobs.extend(real_build(spec, prepared))
        return jobs

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study, "build_jobs", build)
        assert study.main([*argv, "--label-fractions", "1"]) == 0
    assert [job.spec["label_fractions"] for job in jobs] == [[1.0]]
    with pytest.raises(SystemExit, match=r"--label-fractions: 0.5 is not one of the "):
        study.main([*argv, "--label-fractions", "0.5"])


@pytest.mark.slow
def test_gpu_scale_whole_path_at_tiny_size_on_cpu(
    data_root: Path, tmp_path: Path
) -> None:
    """The gpu grid (all methods, references, GPU views, image cache, self-check)."""
    out = tmp_path / "gpu_tiny"
    argv = [
        "--study",
        str(STUDY),
        "--scale",
        "gpu",
        "--tiny",
        "--seeds",
        "0",
        "--out",
        str(out),
        "--data-root",
        str(data_root),
    ]
    assert study.main(argv) == 0
    assert (out / "self_check" / "results").is_dir()
    results = _rows(out)
    methods = {r["method"] for r in results.values()}
    assert methods == {
        "gravis",
        "fgssl",
        "ap_byol",
        "byol",
        "simclr",
        "random",
        "imagenet",  # ImageNet transfer learning
        "fgssl+imagenet",  # continued from ImageNet (tiny: one method)
    }
    assert all(r["status"] == "ok" for r in results.values())
    continued = results["isic2017-fgssl+imagenet-seed0-fold0"]["pretrain"]["config"]
    assert continued["backbone"] == "efficientnet-lite0"
    assert continued["backbone_weights"] == "imagenet:efficientnet-lite0"
    assert not continued.get("method_args")  # FG-SSL's authors' preset
    imagenet = results["isic2017-imagenet-seed0-fold0"]["rows"][0]
    assert imagenet["backbone"] == "efficientnet-lite0"
    config = results["isic2017-fgssl-seed0-fold0"]["pretrain"]["config"]
    assert config["augment"] == "gpu" and config["cache_images"] is True


def _sleeper_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[study.Job]:
    """One job whose process sleeps for a minute (the driver runs a stand-in script)."""
    monkeypatch.setattr(
        study,
        "job_payload",
        lambda job, s, out: {"id": job.id, "sleep": True, "result": "", "job_dir": ""},
    )
    script = tmp_path / "sleep.py"
    script.write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(study, "__file__", str(script))
    return [study.Job("fake", "classification", "sleeper", 0, None, {})]


def test_timeout_kills_the_job_and_keeps_the_others(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = study.load_study(STUDY, "smoke")
    settings["timeout_minutes"] = 1.5 / 60
    jobs = _sleeper_jobs(tmp_path, monkeypatch)
    status = study.run_jobs(jobs, settings, tmp_path, deadline=1e12)
    assert status == {"fake-sleeper-seed0": "timeout"}
    record = json.loads((tmp_path / "results" / "fake-sleeper-seed0.json").read_text())
    assert record["status"] == "timeout" and record["rows"] == []


def test_a_job_cut_short_continues_its_pretraining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun resumes the job's pretraining from last.ckpt; a fresh job starts anew."""
    import lightly_derm.jobs

    calls: list[dict[str, object]] = []

    class Stop(Exception):
        pass

    def fake_pretrain(**kwargs: object) -> None:
        calls.append(kwargs)
        raise Stop  # only the pretrain call is under test

    monkeypatch.setattr(lightly_derm.jobs, "pretrain", fake_pretrain)
    job = {
        "id": "isic2017-byol-seed0-fold0",
        "dataset": "isic2017",
        "task": "segmentation",
        "method": "byol",
        "seed": 0,
        "fold": 0,
        "spec": {"pretrain_data": str(tmp_path / "data"), "pretrain": {"epochs": 3}},
    }
    job_dir = tmp_path / "job"
    with pytest.raises(Stop):
        study.run_job(job, job_dir)
    assert calls[-1]["overwrite"] is True and "resume" not in calls[-1]
    # what a killed job leaves: the run's config and its last checkpoint
    (job_dir / "pretrain" / "checkpoints").mkdir(parents=True)
    (job_dir / "pretrain" / "config.yaml").write_text("method: byol\n")
    with pytest.raises(Stop):
        study.run_job(job, job_dir)
    assert calls[-1]["overwrite"] is True  # no checkpoint yet: start again
    (job_dir / "pretrain" / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(Stop):
        study.run_job(job, job_dir)
    assert calls[-1] == {
        "out": str(job_dir / "pretrain"),
        "resume": True,
        "verbose": True,
    }


@pytest.mark.parametrize(
    ("stop", "status", "name"),
    [
        (lambda: study.StudyStopped(signal.SIGTERM), 143, "SIGTERM"),
        (KeyboardInterrupt, 130, "SIGINT"),  # Ctrl-C
    ],
)
def test_a_stopped_study_says_how_to_continue_and_exits_128_plus_the_signal(
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stop: Any,
    status: int,
    name: str,
) -> None:
    def stopped(*args: object, **kwargs: object) -> dict[str, str]:
        raise stop()

    monkeypatch.setattr(study, "run_jobs", stopped)
    argv = ["--study", str(STUDY), "--scale", "smoke", "--out", str(tmp_path / "o")]
    assert study.main([*argv, "--data-root", str(data_root)]) == status
    err = capsys.readouterr().err
    assert f"stopped ({name})" in err and "run the same command again" in err
    assert "Traceback" not in err


def test_sigterm_stops_the_driver_and_kills_the_running_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import threading

    settings = study.load_study(STUDY, "smoke")
    jobs = _sleeper_jobs(tmp_path, monkeypatch)
    killed: list[int] = []
    real_kill = study._kill
    monkeypatch.setattr(
        study, "_kill", lambda p: (killed.append(p.pid), real_kill(p))[1]
    )
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(study.StudyStopped) as stopped:
            study.run_jobs(jobs, settings, tmp_path, deadline=1e12)
    finally:
        timer.cancel()
    assert stopped.value.signum == signal.SIGTERM and len(killed) == 1
    assert signal.getsignal(signal.SIGTERM) == before  # the driver's handler is gone


def test_stage_data_writes_small_copies_the_run_reads_unchanged(
    data_root: Path, tmp_path: Path
) -> None:
    from PIL import Image

    from lightly_derm.data import find_isic_pairs

    spec = study.load_study(STUDY, "gpu")
    spec["datasets"]["isic2017"]["resize"] = 32
    dest = tmp_path / "staged"
    (dest / "isic2017-seg-subset" / "images").mkdir(parents=True)
    mine = dest / "isic2017-seg-subset" / "notes.md"
    mine.write_text("mine")
    written = study.stage_data(spec, [dest, data_root], dest)
    assert [p.name for p in written] == ["isic2017-seg-subset", "dermamnist-jpg"]
    assert mine.read_text() == "mine"  # nothing already there is overwritten
    pairs = find_isic_pairs(dest / "isic2017-seg-subset")
    assert len(pairs) == 30
    for pair in pairs:
        assert Path(pair["image"]).suffix == ".jpg"
        with Image.open(pair["image"]) as image, Image.open(pair["label"]) as mask:
            assert min(image.size) == 32 and image.size == mask.size
            assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert (dest / "dermamnist-jpg" / "dermamnist_jpg.zip").read_bytes() == (
        data_root / "dermamnist-jpg" / "dermamnist_jpg.zip"
    ).read_bytes()
    # the run stages from the copies: same pairs, no second resize
    prepared = study.prepare_isic(
        dest / "isic2017-seg-subset", {"folds": 3, "resize": 32}, tmp_path / "run", None
    )
    assert prepared["pairs"] == 30
    # staging again keeps what is there (the copies are not read back as a source)
    assert study.stage_data(spec, [dest, data_root], dest) == written


def test_report_keeps_datasets_an_earlier_invocation_ran(tmp_path: Path) -> None:
    """A rerun with --datasets other must not drop the first dataset's tables."""
    for method in ("gravis", "random"):
        study.write_json(
            tmp_path / "results" / f"{method}.json", _record(method, 0, 0, 0.6)
        )
    # the last invocation ran another dataset only (its settings name just that one)
    study.write_json(
        tmp_path / "study.json",
        {"settings": {"datasets": {"dermamnist": {"task": "classification"}}}},
    )
    study_report.write_report(tmp_path)
    assert "## isic: segmentation" in (tmp_path / "report.md").read_text()


def test_cpu_scale_plan_fits_the_hour_it_promises(
    isic_dir: Path,
    dermamnist_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The cpu scale's estimate (calibrated from measured jobs) stays within 60 minutes."""
    assert isic_dir.parent == dermamnist_dir.parent
    argv = [
        "--study", str(STUDY), "--scale", "cpu", "--plan-only",
        "--data-root", str(isic_dir.parent), "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    assert study.main(argv) == 0
    plan = capsys.readouterr().out
    total = plan.strip().splitlines()[-1]
    assert total.startswith("16 jobs (0 done)"), total
    minutes = float(total.split("about ")[-1].split(" minutes of wall time")[0])
    assert 30 < minutes <= 60, total
