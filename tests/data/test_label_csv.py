from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lightly_derm.data import read_labels_csv
from lightly_derm.data.label_csv import MAX_CLASS_INDEX
from lightly_derm.errors import ConfigError, DataError

ISIC2018 = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
ISIC2019 = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"


def _write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_hot_rows(columns: int, hot: list[int]) -> str:
    lines = []
    for i, k in enumerate(hot):
        flags = ["0.0"] * columns
        flags[k] = "1.0"
        lines.append(f"ISIC_{i:07d}," + ",".join(flags))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "header,classes,name",
    [
        (ISIC2018, ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"], "isic2018"),
        (
            ISIC2019,
            ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"],
            "isic2019",
        ),
    ],
)
def test_isic_2018_2019_one_hot(
    tmp_path: Path, header: str, classes, name: str
) -> None:
    hot = [1, 0, 6, 2, 1, 5, 3, 4]
    table = read_labels_csv(_write(tmp_path, header + _one_hot_rows(len(classes), hot)))
    assert table.format == name and table.classes == classes
    assert table.targets.tolist() == hot
    assert table.ids == [f"ISIC_{i:07d}" for i in range(len(hot))]


def test_isic2017_three_classes_and_tasks(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "image_id,melanoma,seborrheic_keratosis\n"
        "ISIC_0000000,0.0,0.0\nISIC_0000001,1.0,0.0\nISIC_0000002,0.0,1.0\n",
    )
    table = read_labels_csv(path)
    assert table.classes == ["melanoma", "seborrheic_keratosis", "nevus"]
    assert table.targets.tolist() == [2, 0, 1]
    melanoma = read_labels_csv(path, task="Melanoma")
    assert melanoma.classes == ["not_melanoma", "melanoma"]
    assert melanoma.targets.tolist() == [0, 1, 0]
    assert read_labels_csv(path, task="seborrheic_keratosis").targets.tolist() == [
        0,
        0,
        1,
    ]
    with pytest.raises(
        ValueError, match=r"task 'bcc'.*\['melanoma', 'seborrheic_keratosis', 'nevus'\]"
    ):
        read_labels_csv(path, task="bcc")


def test_isic2017_shared_files_against_csv_module(isic_dir: Path) -> None:
    for name in ("labels.csv", "ISIC-2017_Training_Part3_GroundTruth.csv"):
        table = read_labels_csv(isic_dir / name)
        assert table.format == "isic2017"
        with open(isic_dir / name, newline="") as file:
            rows = list(csv.DictReader(file))
        assert table.ids == [r["image_id"] for r in rows]
        for row, target in zip(rows, table.targets.tolist(), strict=True):
            if float(row["melanoma"]) == 1:
                assert target == 0
            elif float(row["seborrheic_keratosis"]) == 1:
                assert target == 1
            else:
                assert target == 2
    subset = read_labels_csv(isic_dir / "labels.csv")
    assert (subset.targets == 0).sum() == 74 and (subset.targets == 2).sum() == 216


@pytest.mark.parametrize(
    "text",
    [
        "ISIC_0000000,benign\nISIC_0000001,malignant\nISIC_0000002,benign\n",
        "image_id,label\nISIC_0000000,benign\nISIC_0000001,malignant\nISIC_0000002,benign\n",
        "ISIC_0000000,0.0\nISIC_0000001,1.0\nISIC_0000002,0.0\n",
        "image_id,label\nISIC_0000000,0\nISIC_0000001,1\nISIC_0000002,0\n",
    ],
)
def test_isic2016_variants(tmp_path: Path, text: str) -> None:
    table = read_labels_csv(_write(tmp_path, text))
    assert table.format == "isic2016"
    assert table.classes == ["benign", "malignant"]
    assert table.targets.tolist() == [0, 1, 0]
    assert table.ids[0] == "ISIC_0000000"


def test_generic_strings_integers_and_unlabelled(tmp_path: Path) -> None:
    strings = read_labels_csv(
        _write(
            tmp_path,
            "filename,diagnosis,site\na.jpg,nv,back\nb.png,mel,arm\nc,,leg\nd,nv,x\n",
        )
    )
    assert strings.format == "generic" and strings.classes == ["mel", "nv"]
    assert strings.targets.tolist() == [1, 0, -1, 1]
    assert strings.ids == ["a", "b", "c", "d"]
    assert strings.get("b.png") == 0 and strings.get("zzz") is None
    ints = read_labels_csv(_write(tmp_path, "id,target\nx,2\ny,0\nz,-1\n", "i.csv"))
    assert ints.classes == ["0", "1", "2"] and ints.targets.tolist() == [2, 0, -1]


def test_dermamnist_labels_read_in_medmnist_order(dermamnist_dir: Path) -> None:
    table = read_labels_csv(dermamnist_dir / "labels.csv")
    assert table.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert len(table) == 10015


def test_unknown_columns_name_found_columns_and_formats(tmp_path: Path) -> None:
    path = _write(tmp_path, "foo,bar,MEL\n1,2,3\n")
    with pytest.raises(ValueError) as info:
        read_labels_csv(path)
    message = str(info.value)
    assert "['foo', 'bar', 'MEL']" in message and str(path) in message
    for known in ("ISIC 2016", "ISIC 2017", "ISIC 2018", "ISIC 2019", "generic"):
        assert known in message


@pytest.mark.parametrize(
    "text,match",
    [
        (ISIC2018 + "ISIC_1,1,1,0,0,0,0,0\n", r"line 2 \(ISIC_1\).*exactly one 1"),
        (ISIC2018 + "ISIC_1,0,0,0,0,0,0,0\n", r"line 2.*exactly one 1"),
        (ISIC2018 + "ISIC_1,0,0.5,0,0,0,0,0\n", r"line 2.*'NV' must be 0 or 1"),
        (
            "image_id,melanoma,seborrheic_keratosis\nISIC_1,0,0\nISIC_2,1,1\n",
            r"line 3.*at most one 1",
        ),
        (ISIC2018 + "ISIC_1,0,1\n", r"line 2.*at least"),
        (
            "image_id,label\nISIC_1,benign\n\nISIC_1,malignant\n",
            r"line 4: image id .ISIC_1. appears again \(first on line 2\)",
        ),
        ("ISIC_0000000,maybe\n", "benign, malignant, 0 or 1"),
        ("", "is empty"),
        ("image_id,label\n", "no rows"),
    ],
)
def test_bad_csvs(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_labels_csv(_write(tmp_path, text))


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        read_labels_csv(tmp_path / "nothing.csv")


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        # 3e9 classes: a MemoryError, or all the RAM without a limit
        (["0", "3000000000", "1"], r"line 3 \(b\): integer label 3000000000 is above"),
        # "-5" switched the reader to names, so the label "2" became target 1
        (["2", "-5", "0"], r"line 3 \(b\): label '-5' is negative.*only -1"),
        (["2", "nv", "0"], r"line 2 \(a\): integer label '2' mixed with class names"),
    ],
)
def test_integer_labels_out_of_range_or_mixed_are_refused(
    tmp_path: Path, labels: list[str], match: str
) -> None:
    rows = "".join(f"{i},{v}\n" for i, v in zip("abc", labels, strict=True))
    path = _write(tmp_path, "id,label\n" + rows)
    with pytest.raises(DataError, match=match) as info:
        read_labels_csv(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_largest_class_index_and_unlabelled_integers(tmp_path: Path) -> None:
    path = _write(tmp_path, f"id,label\na,{MAX_CLASS_INDEX}\nb,-1\nc,\nd,+1\n")
    table = read_labels_csv(path)
    assert len(table.classes) == MAX_CLASS_INDEX + 1
    assert table.targets.tolist() == [MAX_CLASS_INDEX, -1, -1, 1]


def test_lines_count_blank_and_quoted_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, 'id,label,note\n\na,nv,"two\nlines"\nb,-7,x\n')
    with pytest.raises(DataError, match=r"line 5 \(b\)"):
        read_labels_csv(path)
    with pytest.raises(ConfigError, match="task 'mel' is not a class"):
        read_labels_csv(_write(tmp_path, "id,label\na,nv\n", "t.csv"), task="mel")
