"""Tables and a plot from a study's result files (``benchmarks/study.py``).

Reads ``OUT/study.json`` (command, machine, settings) and ``OUT/results/*.json`` (one per
job) and writes ``OUT/report.md`` (Markdown), ``OUT/report.rst`` (reStructuredText, for
``.. include::`` in docs/results.rst) and ``OUT/study.png``: every method's score per seed
(dots; small dots: single fine-tunes, i.e. folds and repeats) with its mean (bar),
random init as a dashed line.

Per seed, a segmentation score is the mean over the folds and fine-tune repeats that
finished; the tables give the mean ± standard deviation over seeds (``n``: seeds, then
runs), and ``Δ random`` the mean paired difference to random init (same seed, fold,
fine-tune repeat and label fraction) with the fine-tunes ahead of all paired; each of
lightly-derm's methods is paired the same way with lightly's BYOL and SimCLR where they
ran, the comparison the study's question is about. A last table per dataset says how far
each method's pretraining turned the encoder's filters, stage by stage: whether it moved
the encoder away from random init at all.

Run::

    python -m benchmarks.study_report benchmarks/results/study_cpu
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

#: Row order and labels.
ORDER: tuple[str, ...] = (
    "gravis",
    "fgssl",
    "ap_byol",
    "byol",
    "simclr",
    "gravis+imagenet",
    "fgssl+imagenet",
    "ap_byol+imagenet",
    "byol+imagenet",
    "simclr+imagenet",
    "imagenet",
    "random",
    "supervised",
)
LABELS: dict[str, str] = {
    "gravis": "GraVIS (lightly-derm)",
    "fgssl": "FG-SSL (lightly-derm)",
    "ap_byol": "AP-BYOL (lightly-derm)",
    "byol": "BYOL (lightly)",
    "simclr": "SimCLR (lightly)",
    "gravis+imagenet": "GraVIS continued from ImageNet",
    "fgssl+imagenet": "FG-SSL continued from ImageNet (authors' preset)",
    "ap_byol+imagenet": "AP-BYOL continued from ImageNet",
    "byol+imagenet": "BYOL continued from ImageNet",
    "simclr+imagenet": "SimCLR continued from ImageNet",
    "imagenet": "ImageNet init, transfer learning (reference)",
    "random": "random init (reference)",
    "supervised": "supervised, end to end (reference)",
}
#: The lightly baselines every lightly-derm method is also paired with.
BASELINES: tuple[str, ...] = ("byol", "simclr")
#: The rows that are no pretraining (the study's ``REFERENCES``).
REFERENCE_ROWS: tuple[str, ...] = ("random", "imagenet", "supervised")
SEGMENTATION_SCORES: tuple[tuple[str, str], ...] = (
    ("val_jaccard", "Jaccard"),
    ("val_dice", "Dice"),
    ("val_jaccard_thresholded", "thr. Jaccard"),
)
CLASSIFICATION_SCORES: tuple[tuple[str, str], ...] = (
    ("knn_accuracy", "kNN acc."),
    ("knn_balanced_accuracy", "kNN bal. acc."),
    ("linear_accuracy", "linear acc."),
    ("linear_balanced_accuracy", "linear bal. acc."),
)


def read_results(out: Path) -> list[dict[str, Any]]:
    """Every readable ``results/*.json`` record, sorted by id."""
    records = []
    for path in sorted((out / "results").glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return records


def _order(methods: Iterable[str]) -> list[str]:
    methods = set(methods)
    return [m for m in ORDER if m in methods] + sorted(methods - set(ORDER))


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else None


def _cell(
    mean: float | None, std: float | None, signed: bool = False, digits: int = 3
) -> str:
    if mean is None:
        return "–"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def _paired(
    by_seed: dict[int, dict[tuple[int, int], dict[str, float]]],
    reference: dict[int, dict[tuple[int, int], dict[str, float]]] | None,
) -> tuple[tuple[float | None, float | None], tuple[int, int]] | None:
    """Paired Jaccard differences to ``reference`` (same seed, fold and repeat).

    Returns the mean ± standard deviation over seeds of each seed's mean difference,
    and (runs ahead, runs paired); ``None`` where nothing pairs.
    """
    if reference is None:
        return None
    per_seed, ahead, count = [], 0, 0
    for seed, folds in by_seed.items():
        paired = [
            folds[f]["val_jaccard"] - reference[seed][f]["val_jaccard"]
            for f in folds
            if f in reference.get(seed, {})
        ]
        if paired:
            per_seed.append(float(np.mean(paired)))
            ahead += sum(d > 0 for d in paired)
            count += len(paired)
    if not per_seed:
        return None
    return _mean_std(per_seed), (ahead, count)


def _delta_cell(
    delta: tuple[float | None, float | None] | None, ahead: tuple[int, int] | None
) -> str:
    """``+0.008 ± 0.004 (7/9)``: a paired difference and the runs ahead of all paired."""
    if delta is None or ahead is None:
        return "–"
    return f"{_cell(*delta, signed=True)} ({ahead[0]}/{ahead[1]})"


def segmentation_summary(
    records: list[dict[str, Any]], dataset: str
) -> dict[float, dict[str, Any]]:
    """``{fraction: {method: {score: (mean, std), "n": ..., "delta": ..., "per_seed": ...}}}``.

    ``delta`` is the paired difference in Jaccard to random init (to ImageNet transfer
    for the rows continued from ImageNet) and ``ahead`` its (runs ahead, runs paired);
    ``vs`` holds the same pair for each lightly baseline trained alike (lightly-derm's
    methods only).
    """
    # per (fraction, method): seed -> (fold, fine-tune repeat) -> row
    runs: dict[
        tuple[float, str], dict[int, dict[tuple[int, int], dict[str, float]]]
    ] = defaultdict(lambda: defaultdict(dict))
    for record in records:
        if record.get("dataset") != dataset or record.get("status") != "ok":
            continue
        for row in record["rows"]:
            key = (float(row["label_fraction"]), row["method"])
            run = (int(record.get("fold") or 0), int(row.get("repeat") or 0))
            runs[key][int(record["seed"])][run] = row
    summary: dict[float, dict[str, Any]] = defaultdict(dict)
    for (fraction, method), by_seed in runs.items():
        entry: dict[str, Any] = {"per_seed": {}, "runs": {}}
        for score, _ in SEGMENTATION_SCORES:
            per_seed = {
                seed: float(np.mean([r[score] for r in folds.values()]))
                for seed, folds in by_seed.items()
            }
            entry["per_seed"][score] = per_seed
            entry["runs"][score] = [
                r[score] for folds in by_seed.values() for r in folds.values()
            ]
            entry[score] = _mean_std(list(per_seed.values()))
        entry["n"] = (len(by_seed), sum(len(f) for f in by_seed.values()))
        # methods continued from ImageNet are paired with ImageNet transfer learning,
        # and with the lightly baselines continued the same way
        suffix = "+imagenet" if method.endswith("+imagenet") else ""
        base = "imagenet" if suffix else "random"
        if method not in REFERENCE_ROWS:
            paired = _paired(by_seed, runs.get((fraction, base)))
            if paired is not None:
                entry["delta"], entry["ahead"] = paired
        if method.removesuffix(suffix) not in BASELINES + REFERENCE_ROWS:
            entry["vs"] = {}
            for baseline in BASELINES:
                paired = _paired(by_seed, runs.get((fraction, baseline + suffix)))
                if paired is not None:
                    entry["vs"][baseline] = paired
        summary[fraction][method] = entry
    return dict(sorted(summary.items()))


def turn_summary(
    records: list[dict[str, Any]], dataset: str
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """How far each method's pretraining turned the encoder, per stage.

    The stages in the order the records give them, and per method
    ``{stage: (mean, std)}`` of the jobs' angles in degrees (the pretrain job's
    :class:`~lightly_derm.callbacks.EncoderChange`: the mean angle between each
    filter's weights before and after pretraining) with ``"n"``, the jobs. Jobs
    recorded before the study kept the angles are left out.
    """
    stages: list[str] = []
    angles: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.get("dataset") != dataset or record.get("status") != "ok":
            continue
        turned = (record.get("pretrain") or {}).get("turned") or {}
        for stage, angle in turned.items():
            if stage not in stages:
                stages.append(stage)
            angles[str(record["method"])][stage].append(float(angle))
    summary: dict[str, dict[str, Any]] = {}
    for method, by_stage in angles.items():
        summary[method] = {s: _mean_std(v) for s, v in by_stage.items()}
        summary[method]["n"] = max(len(v) for v in by_stage.values())
    return stages, summary


def classification_summary(
    records: list[dict[str, Any]], dataset: str
) -> dict[str, Any]:
    """``{method: {score: (mean, std), "per_seed": ..., "n": seeds, "chosen": ...}}``."""
    by_method: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        if record.get("dataset") != dataset or record.get("status") != "ok":
            continue
        for row in record["rows"]:
            by_method[row["method"]][int(record["seed"])] = row
    summary: dict[str, Any] = {}
    for method, by_seed in by_method.items():
        entry: dict[str, Any] = {"per_seed": {}, "n": len(by_seed)}
        for score, _ in CLASSIFICATION_SCORES:
            key = score
            if method == "supervised":
                key = score.replace("linear_", "supervised_")
            values = {s: r[key] for s, r in by_seed.items() if r.get(key) is not None}
            entry["per_seed"][score] = values
            entry[score] = _mean_std(list(values.values()))
        chosen = [
            f"k={r.get('knn_k')}, wd={r.get('linear_weight_decay'):g}"
            + (f", {r['linear_class_weight']}" if r.get("linear_class_weight") else "")
            for r in by_seed.values()
            if r.get("knn_k") is not None and r.get("linear_weight_decay") is not None
        ]
        entry["chosen"] = "; ".join(sorted(set(chosen)))
        summary[method] = entry
    return summary


#: The note under the tables.
NOTES = (
    "Mean ± standard deviation over seeds (a seed's score: the mean over its folds "
    "and fine-tune repeats). Δ Jaccard vs random: the mean paired difference to "
    "random init (same seed, fold, fine-tune repeat and label fraction; ± over seeds), "
    "in brackets the paired fine-tunes ahead of all paired; for the rows continued "
    "from ImageNet, to ImageNet transfer learning instead. Δ vs a lightly baseline: "
    "the same pairing with that baseline trained alike (lightly-derm's methods only). "
    "The supervised row is a ResNet trained end to end on all training labels, scored "
    "by its own classifier (in the linear columns)."
)
#: The title of the table of :func:`turn_summary` (after the data set's name) and its note.
TURN_TITLE = "how far pretraining turned the encoder's filters"
TURN_NOTE = (
    "Turned °: the mean angle in degrees between each filter's weights before and "
    "after pretraining (± over jobs); batch norm undoes a filter's scale, so only "
    "turning changes what a stage computes."
)


def _note(tables: list[tuple[str, str, list[str], list[list[str]]]]) -> str:
    """The note under the tables; with the angles' explanation where they are shown."""
    turned = any(title.endswith(TURN_TITLE) for _, title, _, _ in tables)
    return NOTES + (" " + TURN_NOTE if turned else "")


def failures(records: list[dict[str, Any]]) -> list[str]:
    """``id: status`` of the jobs that did not finish."""
    return [
        f"{r.get('id')}: {r.get('status')}" for r in records if r.get("status") != "ok"
    ]


# ------------------------------------------------------------------------ tables
def _tables(
    out: Path,
) -> tuple[
    dict[str, Any], list[tuple[str, str, list[str], list[list[str]]]], list[str]
]:
    header = {}
    if (out / "study.json").is_file():
        header = json.loads((out / "study.json").read_text())
    records = read_results(out)
    datasets = header.get("settings", {}).get("datasets", {})
    # the last invocation's datasets first, then those only earlier ones ran (a rerun
    # with --datasets must not drop the other datasets' finished results)
    seen = {r.get("dataset") for r in records if r.get("dataset")}
    names = list(datasets) + sorted(str(n) for n in seen - set(datasets))
    tables = []
    for name in names:
        task = datasets.get(name, {}).get("task") or next(
            (r["task"] for r in records if r.get("dataset") == name), None
        )
        if task == "segmentation":
            summary = segmentation_summary(records, name)
            for fraction, methods in summary.items():
                baselines = [
                    b
                    for b in BASELINES
                    if any(b in entry.get("vs", {}) for entry in methods.values())
                ]
                columns = [
                    "method",
                    *[label for _, label in SEGMENTATION_SCORES],
                    "Δ Jaccard vs random (ahead)",
                    *[f"Δ vs {LABELS[b]}" for b in baselines],
                    "n (seeds/runs)",
                ]
                rows = []
                for method in _order(methods):
                    entry = methods[method]
                    rows.append(
                        [LABELS.get(method, method)]
                        + [_cell(*entry[s]) for s, _ in SEGMENTATION_SCORES]
                        + [_delta_cell(entry.get("delta"), entry.get("ahead"))]
                        + [
                            _delta_cell(*entry.get("vs", {}).get(b, (None, None)))
                            for b in baselines
                        ]
                        + [f"{entry['n'][0]}/{entry['n'][1]}"]
                    )
                title = f"{name}: segmentation of the held-out folds, {fraction:.0%} of the training masks"
                tables.append((name, title, columns, rows))
        elif task == "classification":
            by_method = classification_summary(records, name)
            if by_method:
                columns = [
                    "method",
                    *[label for _, label in CLASSIFICATION_SCORES],
                    "chosen on val",
                    "n (seeds)",
                ]
                rows = []
                for method in _order(by_method):
                    entry = by_method[method]
                    rows.append(
                        [LABELS.get(method, method)]
                        + [_cell(*entry[s]) for s, _ in CLASSIFICATION_SCORES]
                        + [entry["chosen"] or "–", str(entry["n"])]
                    )
                title = f"{name}: test split, frozen features (kNN, linear probe)"
                tables.append((name, title, columns, rows))
        stages, turned = turn_summary(records, name)
        if turned:
            columns = ["method", *[f"{s} turned °" for s in stages], "n (jobs)"]
            rows = []
            for method in _order(turned):
                cells = []
                for stage in stages:
                    mean, std = turned[method].get(stage, (None, None))
                    cells.append(_cell(mean, std, digits=1))
                n = str(turned[method]["n"])
                rows.append([LABELS.get(method, method), *cells, n])
            title = f"{name}: {TURN_TITLE}"
            tables.append((name, title, columns, rows))
    return header, tables, failures(records)


def _facts(header: dict[str, Any]) -> list[str]:
    if not header:
        return []
    machine = header.get("machine", {})
    facts = [
        f"study `{header.get('study')}` ({header.get('study_file')}), scale `{header.get('scale')}`"
        + (" with --tiny (toy sizes: not a result)" if header.get("tiny") else ""),
        f"command: `{header.get('command')}`",
        f"machine: {machine.get('platform')}, {machine.get('cpus')} CPUs, GPU {machine.get('gpu') or 'none'}, "
        f"torch {machine.get('torch')}, commit {machine.get('commit')}",
        f"started {header.get('started')}"
        + (
            f", wall time {header['wall_seconds'] / 60:.1f} minutes"
            if header.get("wall_seconds")
            else ", still running or cut short"
        ),
    ]
    runs = header.get("runs") or []
    if len(runs) > 1:
        facts.append(
            f"the results come from {len(runs)} invocations of the study (reruns continue "
            "only what is missing): "
            + "; ".join(
                f"`{r.get('command')}` at {r.get('started')} (commit {r.get('commit')})"
                for r in runs
            )
        )
    if header.get("scale") == "smoke" or header.get("tiny"):
        facts.append(
            "toy sizes that check the code path: these numbers are not results"
        )
    return facts


def markdown(out: Path) -> str:
    """The report as Markdown."""
    header, tables, failed = _tables(out)
    lines = [f"# Study results: {header.get('study', out.name)}", ""]
    lines += [f"- {fact}" for fact in _facts(header)]
    if not tables:
        lines += ["", "No results yet."]
    for _, title, columns, rows in tables:
        lines += [
            "",
            f"## {title}",
            "",
            "| " + " | ".join(columns) + " |",
            "|---|" + "---:|" * (len(columns) - 1),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", _note(tables)]
    if failed:
        lines += ["", "Jobs that did not finish: " + ", ".join(failed)]
    if (out / "study.png").is_file():
        lines += ["", "![scores per method and seed](study.png)"]
    return "\n".join(lines) + "\n"


def restructuredtext(out: Path, pending_command: str | None = None) -> str:
    """The report as reStructuredText (no section titles: for ``.. include::``)."""
    header, tables, failed = _tables(out)
    lines: list[str] = []
    for fact in _facts(header):
        lines.append("- " + fact.replace("`", "``"))
    if not tables:
        lines += [
            "",
            "**Results pending**: no job of this study has finished at this scale yet.",
        ]
        if pending_command:
            lines += ["", "Run it with::", "", f"    {pending_command}"]
    for _, title, columns, rows in tables:
        lines += ["", f".. list-table:: {title}", "   :header-rows: 1", ""]
        for row in [columns, *rows]:
            lines.append(f"   * - {row[0]}")
            lines += [f"     - {cell}" for cell in row[1:]]
    if tables:
        lines += ["", _note(tables)]
    if failed:
        lines += ["", "Jobs that did not finish: " + ", ".join(failed) + "."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ plot
#: The smallest y range of a panel of the plot (scores in [0, 1]).
MIN_Y_SPAN = 0.05


def plot(out: Path) -> Path | None:
    """``study.png``: per-seed scores per method with the mean; ``None`` without results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_results(out)
    panels: list[tuple[str, dict[str, dict[int, float]], list[list[float]] | None]] = []
    finished = {r["dataset"] for r in records if r.get("status") == "ok"}
    header = out / "study.json"
    order = (
        list(json.loads(header.read_text()).get("settings", {}).get("datasets", {}))
        if header.is_file()
        else []
    )
    datasets = [d for d in order if d in finished] + sorted(finished - set(order))
    for name in datasets:
        task = next(r["task"] for r in records if r.get("dataset") == name)
        if task == "segmentation":
            for fraction, methods in segmentation_summary(records, name).items():
                panels.append(
                    (
                        f"{name}: Jaccard, {fraction:.0%} masks",
                        {
                            m: methods[m]["per_seed"]["val_jaccard"]
                            for m in _order(methods)
                        },
                        [methods[m]["runs"]["val_jaccard"] for m in _order(methods)],
                    )
                )
        else:
            summary = classification_summary(records, name)
            for score, label in (
                ("linear_accuracy", "accuracy"),
                ("linear_balanced_accuracy", "balanced accuracy"),
            ):
                panels.append(
                    (
                        f"{name}: linear probe {label}",
                        {m: summary[m]["per_seed"][score] for m in _order(summary)},
                        None,
                    )
                )
    if not panels:
        return None
    columns = min(2, len(panels))
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(
        rows, columns, figsize=(6.5 * columns, 3.6 * rows), squeeze=False
    )
    rng = np.random.default_rng(0)
    colors = plt.get_cmap("tab10")
    for ax, (title, per_method, runs) in zip(axes.flat, panels, strict=False):
        panel_methods = list(per_method)
        for i, method in enumerate(panel_methods):
            reference_row = method in ("random", "supervised", "imagenet")
            color = "0.4" if reference_row else colors(i)
            if runs is not None:
                ax.scatter(
                    i + rng.uniform(-0.18, 0.18, len(runs[i])),
                    runs[i],
                    s=8,
                    color=color,
                    alpha=0.35,
                    linewidths=0,
                )
            values = list(per_method[method].values())
            ax.scatter(
                i + rng.uniform(-0.08, 0.08, len(values)),
                values,
                s=28,
                color=color,
                zorder=3,
            )
            if values:
                ax.hlines(
                    np.mean(values),
                    i - 0.3,
                    i + 0.3,
                    color=color,
                    linewidth=2.5,
                    zorder=4,
                )
        if "random" in per_method and per_method["random"]:
            ax.axhline(
                np.mean(list(per_method["random"].values())),
                color="0.4",
                linestyle="--",
                linewidth=1,
            )
        ax.set_xticks(
            range(len(panel_methods)),
            [m.replace("supervised", "superv.") for m in panel_methods],
            rotation=20,
        )
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        # at least 0.05 of the score's range, so that a difference in the third decimal
        # does not look like a large one
        low, high = ax.get_ylim()
        if high - low < MIN_Y_SPAN:
            middle = (low + high) / 2
            ax.set_ylim(middle - MIN_Y_SPAN / 2, middle + MIN_Y_SPAN / 2)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        "Scores per method: dots = seeds (small: single fine-tunes), bar = mean, dashed = random init",
        fontsize=9,
    )
    fig.tight_layout()
    path = out / "study.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: str | Path, pending_command: str | None = None) -> list[Path]:
    """Writes ``report.md``, ``report.rst`` and ``study.png`` into ``out``; returns them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    png = plot(out)
    if png is not None:
        written.append(png)
    for name, text in (
        ("report.md", markdown(out)),
        ("report.rst", restructuredtext(out, pending_command)),
    ):
        (out / name).write_text(text)
        written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.study_report OUT [--pending-command CMD]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study_report")
    parser.add_argument("out", help="a study's output folder")
    parser.add_argument(
        "--pending-command", help="the command named when there are no results"
    )
    args = parser.parse_args(argv)
    for path in write_report(args.out, args.pending_command):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
