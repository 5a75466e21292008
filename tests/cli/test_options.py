"""The options are generated from the configuration dataclasses: help, docs, spellings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from lightly_derm.cli import COMMANDS, build_parser, command_parser, main
from lightly_derm.cli.options import option_rows, plain_text
from lightly_derm.jobs.evaluate import EvaluateConfig
from lightly_derm.jobs.pretrain import PretrainConfig
from lightly_derm.jobs.segment import SegmentConfig
from tests.cli.test_pretrain_cli import one_error_line, run

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.rst"
CONFIGS = {
    "pretrain": PretrainConfig,
    "evaluate": EvaluateConfig,
    "segment": SegmentConfig,
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_field_is_an_option_with_help(name: str) -> None:
    """Each field of the configuration appears once in --help, with its docstring."""
    config_cls = CONFIGS[name]
    help_text = command_parser(COMMANDS[name]).format_help()
    rows = {row["name"]: row for row in option_rows(config_cls)}
    assert set(rows) == {f.name for f in dataclasses.fields(config_cls)}
    for field_name, row in rows.items():
        assert row["help"], f"{name} {field_name} has no docstring entry"
        assert f"  {row['option']} " in help_text or f"  {row['option']}," in help_text
    # the preset values and rules show next to the option, from the same objects
    epochs = rows["epochs"] if "epochs" in rows else rows["finetune_epochs"]
    assert epochs["demo"] == str(config_cls.PRESETS["demo"][epochs["name"]])
    assert "[integer ≥ 1]" in epochs["help"]


def test_docs_render_every_subcommand_table() -> None:
    text = DOCS.read_text()
    for name in COMMANDS:
        assert f".. lightly-derm-options:: {name}" in text


def test_top_level_help_lists_the_subcommands() -> None:
    text = build_parser().format_help()
    for name in (*COMMANDS, "plugins"):
        assert name in text


def test_underscore_spelling_and_shared_names(tmp_path, capsys) -> None:
    out = str(tmp_path / "seg")
    code, printed, _ = run(
        capsys, "segment", "--input_size", "32", "--batch_size=4", "--out", out,
        "--print_config",
    )  # fmt: skip
    assert code == 0
    config = yaml.safe_load(printed)
    assert config["input_size"] == 32 and config["batch_size"] == 4
    # the demo preset's resnet18, with the small-image stem at 32 px (no backbone named)
    assert config["backbone"] == "resnet18-cifar" and config["epochs"] == 3


def test_old_image_size_is_read_with_a_warning(tmp_path, capsys) -> None:
    out = str(tmp_path / "seg")
    with pytest.warns(FutureWarning, match="--image-size is deprecated"):
        code, printed, _ = run(
            capsys, "segment", "--image-size", "48", "--out", out, "--print-config"
        )
    assert code == 0 and yaml.safe_load(printed)["input_size"] == 48
    path = tmp_path / "old.yaml"
    path.write_text("image_size: 40\n")
    with pytest.warns(FutureWarning, match="'image_size' is deprecated"):
        code, printed, _ = run(
            capsys, "segment", "--config", str(path), "--out", out, "--print-config"
        )
    assert yaml.safe_load(printed)["input_size"] == 40
    from lightly_derm.jobs.segment import resolve_segment_config

    with pytest.warns(FutureWarning):
        config = SegmentConfig.create({}, {"image_size": 24}, "segment")
    assert resolve_segment_config(config).input_size == 24


def test_presets_fill_only_what_is_not_given(tmp_path) -> None:
    demo = PretrainConfig(epochs=2).resolved()
    assert (demo.epochs, demo.input_size, demo.backbone) == (2, 64, "resnet18")
    real = PretrainConfig(method="simclr", data=str(tmp_path)).resolved()
    assert (real.epochs, real.input_size, real.num_workers is not None) == (
        100,
        224,
        True,
    )
    assert real.synthetic_images is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--embedding-images", "-1"], "embedding_images must be an integer >= 0"),
        (["--synthetic-classes", "0"], "synthetic_classes must be an integer >= 1"),
        (["--labels", "labels.csv"], "--labels needs --data"),
        (["--max-steps", "0"], "max_steps must be an integer >= 1"),
    ],
)
def test_rules_are_one_line_errors(tmp_path, capsys, argv, message) -> None:
    code, _, err = run(capsys, "pretrain", "--out", str(tmp_path), *argv)
    assert code == 2 and message in one_error_line(err)


def test_parser_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--fractions", "x"])
    assert info.value.code == 2
    assert '"fractions"' in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path) -> None:
    """An error that does not come from lightly-derm's checks is not hidden."""
    import sys

    job = sys.modules["lightly_derm.jobs.pretrain"]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(job, "pretrain_dataset", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["pretrain", "--out", str(tmp_path / "run"), "--no-plots"])


def test_plain_text() -> None:
    assert plain_text(":class:`~a.B` and ``x``, 5%") == "B and x, 5%%"
