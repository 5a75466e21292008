"""Reading image labels from ISIC 2016–2019 ground-truth CSVs and generic label CSVs.

Builds on Python's :mod:`csv`; the CSV is parsed once, at construction. The format is
detected from the header:

- ``isic2016``: ``image_id, label`` (or no header) with ``benign``/``malignant`` or 0/1;
  classes ``benign, malignant``.
- ``isic2017``: ``image_id, melanoma, seborrheic_keratosis`` (one-hot, at most one 1; both
  0 = nevus); classes ``melanoma, seborrheic_keratosis, nevus``.
- ``isic2018``: ``image, MEL, NV, BCC, AKIEC, BKL, DF, VASC`` (Task 3, one-hot); classes
  are the columns.
- ``isic2019``: ``image, MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK`` (one-hot); classes are
  the columns.
- ``generic``: an id column (``image_id``, ``image``, ``image_name``, ``isic_id``,
  ``filename``, ``file_name``, ``file``, ``path``, ``id``, ``name``) and a label column
  (``label``, ``target``, ``class``, ``diagnosis``, ``dx``, ``category``, ``y``); classes
  are the sorted label names, or ``0…max`` for integer labels.

Other columns are ignored (the shared ISIC 2017 ``labels.csv`` adds metadata columns and
reads as ``isic2017``). Ids may carry an image extension (``ISIC_0000000.jpg``), which
is dropped. In a generic CSV an empty label or ``-1`` means unlabelled. DermaMNIST's
``labels.csv`` (``image_id, dx, …``) reads as generic; its sorted ``dx`` names are
MedMNIST's class order.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightly_derm.data.image_io import IMAGE_EXTENSIONS
from lightly_derm.errors import ConfigError, DataError

#: The one-hot ISIC formats: format name → (id column, class columns).
ISIC_ONE_HOT_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "isic2019": (
        "image",
        ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"),
    ),
    "isic2018": ("image", ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")),
    "isic2017": ("image_id", ("melanoma", "seborrheic_keratosis")),
}
ISIC2017_NEITHER = "nevus"
ISIC2016_CLASSES = ("benign", "malignant")
ID_COLUMNS = (
    "image_id",
    "image",
    "image_name",
    "isic_id",
    "filename",
    "file_name",
    "file",
    "path",
    "id",
    "name",
)
LABEL_COLUMNS = ("label", "target", "class", "diagnosis", "dx", "category", "y")

#: The largest integer label of a generic CSV: integer labels are class indices
#: ``0 … K−1`` and make K classes, so a stray ``3000000000`` would make 3e9 classes.
MAX_CLASS_INDEX = 99_999

#: One line per known format, for error messages.
KNOWN_FORMATS = (
    "ISIC 2016 (image_id, label: benign/malignant or 0/1; header optional); "
    "ISIC 2017 (image_id, melanoma, seborrheic_keratosis); "
    "ISIC 2018 Task 3 (image, MEL, NV, BCC, AKIEC, BKL, DF, VASC); "
    "ISIC 2019 (image, MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK); "
    f"generic (an id column: {', '.join(ID_COLUMNS)}; "
    f"and a label column: {', '.join(LABEL_COLUMNS)})"
)

_ISIC_ID = re.compile(r"^ISIC_\d+", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+(\.0*)?")
_TRUE = {"1", "1.0", "1.", "true"}
_FALSE = {"0", "0.0", "0.", "false", ""}


@dataclass
class LabelTable:
    """Image ids with integer targets, as read from a label CSV.

    Attributes:
        ids: Image ids (file names without extension), in CSV order.
        targets: (N,) int64 targets, ``-1`` = unlabelled.
        classes: The class names, ``classes[t]`` for target ``t``.
        format: The detected format (``"isic2017"``, ``"generic"``, …).
        path: The CSV read.
        lines: The CSV line of each id (for messages), when read from a file.
    """

    ids: list[str]
    targets: np.ndarray
    classes: list[str]
    format: str
    path: str | None = None
    lines: list[int] | None = field(default=None, repr=False)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {key: i for i, key in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def where(self, index: int) -> str:
        """``"labels CSV <path> line <n>"`` for the row ``index``, for messages."""
        source = f"labels CSV {self.path}" if self.path else "the labels"
        if self.lines is None:
            return f"{source} row {index + 1}"
        return f"{source} line {self.lines[index]}"

    def get(self, image_id: str, default: int | None = None) -> int | None:
        """The target of ``image_id`` (extension optional), or ``default``."""
        i = self._index.get(normalize_id(image_id))
        return int(self.targets[i]) if i is not None else default


def normalize_id(value: str) -> str:
    """An image id without surrounding spaces, leading ``./`` and image extension."""
    value = value.strip().replace("\\", "/")
    while value.startswith("./"):
        value = value[2:]
    lower = value.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return value[: -len(ext)]
    return value


def _unknown(path: str, header: list[str]) -> DataError:
    return DataError(
        f"labels CSV {path} has columns {header}, which match no known format. "
        f"Known formats: {KNOWN_FORMATS}"
    )


def _parse_flag(value: str, path: str, line: int, column: str) -> int:
    v = value.strip().lower()
    if v in _TRUE:
        return 1
    if v in _FALSE:
        return 0
    raise DataError(
        f"labels CSV {path} line {line}: column {column!r} must be 0 or 1, got {value!r}"
    )


def read_labels_csv(
    path: str | os.PathLike[str], task: str | None = None
) -> LabelTable:
    r"""Reads an ISIC ground-truth CSV or a generic label CSV (see the module docstring).

    Args:
        path: The CSV file.
        task: ``None`` for all classes, or one class name (case-insensitive) for a
            one-vs-rest binary task with classes ``["not_<name>", "<name>"]`` — for
            example ``"melanoma"`` for ISIC 2017 Part 3a or ``"MEL"`` for ISIC 2019.

    Returns:
        The :class:`LabelTable`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: (a ``ValueError``) Unknown columns (the message lists the columns
            found and the known formats), a one-hot row that is not one-hot, a duplicated
            id, an empty id, an empty CSV, a negative integer label other than ``-1``,
            an integer label above :data:`MAX_CLASS_INDEX`, or integer labels mixed with
            names; messages name the file and line.
        ConfigError: (a ``ValueError``) An unknown ``task``.

    Example:
        >>> import tempfile, pathlib
        >>> csv_path = pathlib.Path(tempfile.mkdtemp()) / "gt.csv"
        >>> _ = csv_path.write_text(
        ...     "image_id,melanoma,seborrheic_keratosis\n"
        ...     "ISIC_0000000,0.0,0.0\nISIC_0000002,1.0,0.0\n")
        >>> table = read_labels_csv(csv_path)
        >>> table.format, table.classes, table.targets.tolist()
        ('isic2017', ['melanoma', 'seborrheic_keratosis', 'nevus'], [2, 0])
        >>> read_labels_csv(csv_path, task="melanoma").targets.tolist()
        [0, 1]
    """
    path_str = os.fspath(path)
    if not Path(path_str).is_file():
        raise FileNotFoundError(f"labels CSV not found: {path_str}")
    rows: list[list[str]] = []
    lines: list[int] = []  # the line each row starts on (blank lines are skipped)
    with open(path_str, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        start = 1
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append(row)
                lines.append(start)
            start = reader.line_num + 1
    if not rows:
        raise DataError(f"labels CSV {path_str} is empty")
    header = [cell.strip() for cell in rows[0]]
    table = _read_rows(path_str, header, rows, lines)
    if len(table) == 0:
        raise DataError(f"labels CSV {path_str} has a header but no rows")
    first_line: dict[str, int] = {}
    for i, image_id in enumerate(table.ids):
        if not image_id:
            raise DataError(f"{table.where(i)}: empty image id")
        if image_id in first_line:
            raise DataError(
                f"{table.where(i)}: image id {image_id!r} appears again (first on "
                f"line {first_line[image_id]}); each image needs one label"
            )
        first_line[image_id] = table.lines[i] if table.lines else i + 1
    if task is not None:
        table = _one_vs_rest(table, task)
    return table


def _read_rows(
    path: str, header: list[str], rows: list[list[str]], lines: list[int]
) -> LabelTable:
    lower = [h.lower() for h in header]
    # One-hot ISIC formats: all class columns present (case-sensitive names as issued,
    # compared case-insensitively).
    for name, (one_hot_id, class_cols) in ISIC_ONE_HOT_FORMATS.items():
        wanted = [c.lower() for c in class_cols]
        if one_hot_id in lower and all(c in lower for c in wanted):
            return _read_one_hot(
                path, name, header, rows, lines, one_hot_id, class_cols
            )
    # ISIC 2016: no header (first cell an ISIC id) or image_id + label with
    # benign/malignant/0/1 values.
    if _ISIC_ID.match(header[0]) and len(header) == 2:
        return _read_isic2016(path, rows, lines, start=0)
    if len(header) == 2 and lower[0] in ID_COLUMNS and lower[1] in LABEL_COLUMNS:
        values = {row[1].strip().lower() for row in rows[1:] if len(row) > 1}
        isic_ids = all(_ISIC_ID.match(row[0].strip()) for row in rows[1:] if row)
        if values and (
            values <= {"benign", "malignant"}
            or (isic_ids and values <= {"0", "1", "0.0", "1.0"})
        ):
            return _read_isic2016(path, rows, lines, start=1)
    id_col = next((c for c in ID_COLUMNS if c in lower), None)
    label_col = next((c for c in LABEL_COLUMNS if c in lower), None)
    if id_col is None or label_col is None:
        raise _unknown(path, header)
    return _read_generic(path, rows, lines, lower.index(id_col), lower.index(label_col))


def _cell(row: list[str], j: int, path: str, line: int) -> str:
    if j >= len(row):
        raise DataError(
            f"labels CSV {path} line {line}: expected at least {j + 1} columns, got {len(row)}"
        )
    return row[j]


def _read_one_hot(
    path: str,
    name: str,
    header: list[str],
    rows: list[list[str]],
    lines: list[int],
    id_col: str,
    class_cols: tuple[str, ...],
) -> LabelTable:
    lower = [h.lower() for h in header]
    id_j = lower.index(id_col)
    col_j = [lower.index(c.lower()) for c in class_cols]
    neither = name == "isic2017"
    ids, targets = [], []
    for line, row in zip(lines[1:], rows[1:], strict=True):
        ids.append(normalize_id(_cell(row, id_j, path, line)))
        flags = [
            _parse_flag(_cell(row, j, path, line), path, line, header[j]) for j in col_j
        ]
        total = sum(flags)
        if total == 1:
            targets.append(flags.index(1))
        elif total == 0 and neither:
            targets.append(len(class_cols))
        else:
            expected = "at most one 1" if neither else "exactly one 1"
            raise DataError(
                f"labels CSV {path} line {line} ({ids[-1]}): the {name} one-hot columns "
                f"{list(class_cols)} must hold {expected}, got {flags}"
            )
    classes = list(class_cols) + ([ISIC2017_NEITHER] if neither else [])
    return LabelTable(
        ids, np.asarray(targets, dtype=np.int64), classes, name, path, lines[1:]
    )


def _read_isic2016(
    path: str, rows: list[list[str]], lines: list[int], start: int
) -> LabelTable:
    ids, targets = [], []
    for line, row in zip(lines[start:], rows[start:], strict=True):
        ids.append(normalize_id(_cell(row, 0, path, line)))
        value = _cell(row, 1, path, line).strip().lower()
        if value in ("benign", "malignant"):
            targets.append(ISIC2016_CLASSES.index(value))
        elif value in _TRUE or value in ("0", "0.0"):
            targets.append(1 if value in _TRUE else 0)
        else:
            raise DataError(
                f"labels CSV {path} line {line} ({ids[-1]}): an ISIC 2016 label must be "
                f"benign, malignant, 0 or 1, got {value!r}"
            )
    return LabelTable(
        ids,
        np.asarray(targets, dtype=np.int64),
        list(ISIC2016_CLASSES),
        "isic2016",
        path,
        lines[start:],
    )


def _read_generic(
    path: str, rows: list[list[str]], lines: list[int], id_j: int, label_j: int
) -> LabelTable:
    ids: list[str] = []
    raw: list[str] = []
    for line, row in zip(lines[1:], rows[1:], strict=True):
        ids.append(normalize_id(_cell(row, id_j, path, line)))
        raw.append(_cell(row, label_j, path, line).strip())
    row_lines = lines[1:]
    present = [(k, v) for k, v in enumerate(raw) if v not in ("", "-1")]
    integer = [_INTEGER.fullmatch(v) is not None for _, v in present]
    if present and all(integer):
        # Integer labels are class indices 0 … K−1.
        values = [int(float(v)) if v not in ("", "-1") else -1 for v in raw]
        for k, value in enumerate(values):
            if value < -1:
                raise DataError(
                    f"labels CSV {path} line {row_lines[k]} ({ids[k]}): label "
                    f"{raw[k]!r} is negative; integer labels are class indices 0, 1, "
                    "…, and only -1 (or an empty cell) means unlabelled"
                )
            if value > MAX_CLASS_INDEX:
                raise DataError(
                    f"labels CSV {path} line {row_lines[k]} ({ids[k]}): integer label "
                    f"{raw[k]} is above {MAX_CLASS_INDEX}; integer labels are class "
                    f"indices 0 … K-1 (K classes), so give class names instead"
                )
        num_classes = max(values) + 1
        classes = [str(c) for c in range(num_classes)]
        targets = np.asarray(values, dtype=np.int64)
    elif any(integer):
        # Names mixed with integers: a label such as "2" would silently become the
        # index of the name "2" among the sorted names.
        k_int = present[integer.index(True)][0]
        k_name = present[integer.index(False)][0]
        raise DataError(
            f"labels CSV {path} line {row_lines[k_int]} ({ids[k_int]}): integer label "
            f"{raw[k_int]!r} mixed with class names such as {raw[k_name]!r} (line "
            f"{row_lines[k_name]}); use class indices 0, 1, … or names throughout "
            "(-1 or an empty cell: unlabelled)"
        )
    else:
        classes = sorted({v for _, v in present})
        lookup = {c: k for k, c in enumerate(classes)}
        targets = np.asarray([lookup.get(v, -1) for v in raw], dtype=np.int64)
    return LabelTable(ids, targets, classes, "generic", path, row_lines)


def _one_vs_rest(table: LabelTable, task: str) -> LabelTable:
    lower = [c.lower() for c in table.classes]
    if task.lower() not in lower:
        raise ConfigError(
            f"task {task!r} is not a class of {table.path} ({table.format}); "
            f"choose one of {table.classes}"
        )
    positive = lower.index(task.lower())
    name = table.classes[positive]
    targets = np.where(
        table.targets < 0, -1, (table.targets == positive).astype(np.int64)
    )
    return LabelTable(
        table.ids, targets, [f"not_{name}", name], table.format, table.path, table.lines
    )
