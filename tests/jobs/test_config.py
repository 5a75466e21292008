from __future__ import annotations

import dataclasses

import pytest

from lightly_derm.jobs.config import (
    JobConfig,
    check_kwargs,
    close_matches_hint,
    load_yaml_mapping,
    parse_key_values,
)


@dataclasses.dataclass
class Options(JobConfig):
    epochs: int | None = None
    batch_size: int | None = None
    grids: list[int] | None = None


def test_parse_key_values_reads_yaml_scalars() -> None:
    values = parse_key_values(
        ["lr=1e-3", "normalize=false", "grids=[8, 4, 2]", "variant=attention", "t="]
    )
    assert values == {
        "lr": 1e-3,
        "normalize": False,
        "grids": [8, 4, 2],
        "variant": "attention",
        "t": None,
    }
    assert parse_key_values(["num-views=6"]) == {"num_views": 6}
    assert parse_key_values(["x=[unclosed"]) == {"x": "[unclosed"}
    for bad in (["lr"], ["=3"]):
        with pytest.raises(ValueError, match="takes key=value pairs"):
            parse_key_values(bad)


class Method:
    def __init__(self, backbone: str = "resnet50", lr: float = 0.1, num_views: int = 4):
        pass


def test_check_kwargs() -> None:
    check_kwargs(Method, {"lr": 0.5, "num_views": 2}, "method 'm'")
    with pytest.raises(
        ValueError,
        match=r"unknown argument 'lrr' for method 'm'; did you mean 'lr'\? Valid: lr, num_views\.",
    ):
        check_kwargs(
            Method, {"lrr": 0.5}, "method 'm'", reserved={"backbone": "--backbone"}
        )
    with pytest.raises(
        ValueError, match="'backbone' of method 'm' is set by --backbone"
    ):
        check_kwargs(
            Method, {"backbone": "x"}, "method 'm'", reserved={"backbone": "--backbone"}
        )

    def anything(**kwargs):
        return kwargs

    check_kwargs(anything, {"whatever": 1}, "f")  # **kwargs accepts every name


def test_config_keys_are_checked_and_round_trip(tmp_path) -> None:
    options = Options.from_mapping({"batch-size": 8, "epochs": None})
    assert options == Options(batch_size=8)
    assert options.given() == {"batch_size": 8}
    with pytest.raises(
        ValueError, match=r"unknown option 'epoch' in the file; did you mean 'epochs'\?"
    ):
        Options.from_mapping({"epoch": 3}, source="the file")
    with pytest.raises(ValueError, match="must be a mapping"):
        Options.from_mapping([1, 2])  # type: ignore[arg-type]
    full = Options(epochs=3, batch_size=8, grids=(16, 8, 4))  # type: ignore[arg-type]
    path = full.save(tmp_path / "sub" / "config.yaml")
    assert Options.load(path) == Options(epochs=3, batch_size=8, grids=[16, 8, 4])
    assert full.updated({"epochs": 5}).epochs == 5 and full.epochs == 3


def test_load_yaml_mapping_errors(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert load_yaml_mapping(path) == {}
    path.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_yaml_mapping(path)
    path.write_text("just a string\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_yaml_mapping(path)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_yaml_mapping(tmp_path / "none.yaml")


def test_close_matches_hint() -> None:
    assert (
        close_matches_hint("epoch", ["epochs", "seed"])
        == "did you mean 'epochs'? Valid: epochs, seed."
    )
    assert close_matches_hint("zzz", ["epochs"]) == "Valid: epochs."
