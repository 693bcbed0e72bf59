"""The report's plots: PNG files (matplotlib, offline) and Mermaid `xychart-beta` charts,
which GitHub draws inside a PR comment without any image hosting."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # pyplot-free: no GUI backend, no global figure state
from matplotlib.ticker import MaxNLocator

BASE_COLOUR, NEW_COLOUR = "#9e9e9e", "#1f77b4"
BASE_LIGHT, NEW_LIGHT = "#d0d0d0", "#9ecae1"
CURVE_GRID = np.round(np.linspace(0, 1, 11), 2)
CLASS_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

Plots = dict[str, pd.DataFrame]


@dataclass(frozen=True)
class Image:
    path: Path
    title: str


def confusion_matrix(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Counts with actual labels as rows and predicted labels as columns, in ``labels`` order."""
    present = [*labels, *sorted((set(frame["actual"]) | set(frame["predicted"])) - set(labels))]
    return pd.crosstab(frame["actual"], frame["predicted"]).reindex(index=present, columns=present, fill_value=0)


def _best_tpr(roc: pd.DataFrame, fpr: float) -> float:
    """The highest true-positive rate reachable at this false-positive rate or below."""
    reachable = roc.loc[roc["fpr"] <= fpr + 1e-9, "tpr"]
    return float(reachable.max()) if len(reachable) else 0.0


def _best_precision(curve: pd.DataFrame, recall: float) -> float:
    """Interpolated precision: the best precision at this recall or above."""
    reachable = curve.loc[curve["recall"] >= recall - 1e-9, "precision"]
    return float(reachable.max()) if len(reachable) else 0.0


def sampled_curve(name: str, frame: pd.DataFrame) -> list[float]:
    """ROC or precision-recall read at CURVE_GRID, so two curves share one x-axis."""
    reader = _best_tpr if name == "roc" else _best_precision
    return [round(reader(frame, float(x)), 4) for x in CURVE_GRID]


def _mermaid(
    title: str, x_title: str, categories: list[str], y_title: str, series: list[list[float]], colours: str
) -> str:
    values = [value for line in series for value in line]
    low, high = min(values), max(values)
    padding = (high - low) * 0.1 or 0.05
    lines = [
        "```mermaid",
        f'%%{{init: {{"themeVariables": {{"xyChart": {{"plotColorPalette": "{colours}"}}}}}}}}%%',
        "xychart-beta",
        f"    title {json.dumps(title)}",
        f"    x-axis {json.dumps(x_title)} [{', '.join(categories)}]",
        f"    y-axis {json.dumps(y_title)} {max(low - padding, 0):.4g} --> {high + padding:.4g}",
        *(f"    line [{', '.join(f'{value:.4g}' for value in line)}]" for line in series),
        "```",
    ]
    return "\n".join(lines)


def mermaid_training(base: pd.DataFrame | None, new: pd.DataFrame) -> str:
    """Training and validation loss per epoch, base and new overlaid."""
    epochs = max(len(new), len(base) if base is not None else 0)
    series, colours = [], []
    if base is not None:
        series += [base["train_loss"].tolist(), base["validation_loss"].tolist()]
        colours += [BASE_LIGHT, BASE_COLOUR]
    series += [new["train_loss"].tolist(), new["validation_loss"].tolist()]
    colours += [NEW_LIGHT, NEW_COLOUR]
    categories = [str(epoch) for epoch in range(1, epochs + 1)]
    return _mermaid("Loss per epoch", "epoch", categories, "loss", series, ", ".join(colours))


def by_class(frame: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """A curve file's one-vs-rest curves by class name, in file order ("" for a file without a class column)."""
    if frame is None:
        return {}
    if "class" not in frame.columns:
        return {"": frame}
    return {str(label): curve for label, curve in frame.groupby("class", sort=False)}


def curve_title(name: str, label: str) -> str:
    title = "ROC curve" if name == "roc" else "Precision-recall curve"
    return f"{title}, {label} vs rest" if label else title


def mermaid_curve(name: str, base: pd.DataFrame | None, new: pd.DataFrame) -> str:
    """One chart per class of ``new``: its ROC or precision-recall curve, over the base's for the same class."""
    x_title, y_title = ("false positive rate", "true positive rate") if name == "roc" else ("recall", "precision")
    base_curves = by_class(base)
    charts = []
    for label, curve in by_class(new).items():
        before = base_curves.get(label)
        series = [sampled_curve(name, frame) for frame in (before, curve) if frame is not None]
        colours = ", ".join([BASE_COLOUR, NEW_COLOUR] if before is not None else [NEW_COLOUR])
        grid = [f"{x:g}" for x in CURVE_GRID]
        charts.append(_mermaid(curve_title(name, label), x_title, grid, y_title, series, colours))
    return "\n\n".join(charts)


def _save(figure: Figure, path: Path, title: str) -> Image:
    # Fast zlib level: the plots are small either way and rendering is most of the report's time.
    figure.savefig(path, dpi=100, pil_kwargs={"compress_level": 1})
    return Image(path, title)


def _confusion_png(base: pd.DataFrame | None, new: pd.DataFrame, labels: list[str], path: Path) -> Image:
    sides = [("base", base), ("new", new)] if base is not None else [("new", new)]
    figure = Figure(figsize=(4.2 * len(sides), 3.8))
    # Fixed margins: a tight layout would measure every label first and double the drawing time.
    figure.subplots_adjust(left=0.16, right=0.97, bottom=0.14, top=0.92, wspace=0.45)
    axes = figure.subplots(1, len(sides), squeeze=False)
    for axis, (side, frame) in zip(axes[0], sides, strict=True):
        matrix = confusion_matrix(frame, labels)
        axis.imshow(matrix.to_numpy(), cmap="Blues")
        axis.set_xticks(range(len(matrix.columns)), matrix.columns)
        axis.set_yticks(range(len(matrix.index)), matrix.index)
        axis.set_xlabel("predicted")
        axis.set_ylabel("actual")
        axis.set_title(side)
        peak = matrix.to_numpy().max() or 1
        for (row, column), count in np.ndenumerate(matrix.to_numpy()):
            colour = "white" if count > peak / 2 else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=colour)
    return _save(figure, path, "Confusion matrices (test split), base and new")


def _training_png(base: pd.DataFrame | None, new: pd.DataFrame, path: Path) -> Image:
    figure = Figure(figsize=(6, 3.8))
    figure.subplots_adjust(left=0.15, right=0.97, bottom=0.14, top=0.95)
    axis = figure.subplots()
    for side, frame, colour, light in (("base", base, BASE_COLOUR, BASE_LIGHT), ("new", new, NEW_COLOUR, NEW_LIGHT)):
        if frame is None:
            continue
        axis.plot(frame["epoch"], frame["train_loss"], color=light, linestyle="--", marker="o", label=f"{side} train")
        axis.plot(frame["epoch"], frame["validation_loss"], color=colour, marker="o", label=f"{side} validation")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    axis.legend()
    return _save(figure, path, "Loss per epoch, base and new")


def _curve_png(name: str, base: pd.DataFrame | None, new: pd.DataFrame, path: Path) -> Image:
    """All classes' curves in one figure: one colour per class, the base dashed where it has the same class."""
    x, y, x_label, y_label = (
        ("fpr", "tpr", "false positive rate", "true positive rate")
        if name == "roc"
        else ("recall", "precision", "recall", "precision")
    )
    curves, base_curves = by_class(new), by_class(base)
    title = curve_title(name, next(iter(curves))) if len(curves) == 1 else curve_title(name, "each class")
    figure = Figure(figsize=(4.8, 4.2))
    figure.subplots_adjust(left=0.15, right=0.96, bottom=0.12, top=0.92)
    axis = figure.subplots()
    single = len(curves) == 1
    for number, (label, curve) in enumerate(curves.items()):
        colour = NEW_COLOUR if single else CLASS_COLOURS[number % len(CLASS_COLOURS)]
        before = base_curves.get(label)
        if before is not None:
            axis.plot(
                before[x],
                before[y],
                color=BASE_COLOUR if single else colour,
                linestyle="--",
                linewidth=1,
                label="base" if single else f"{label} (base)",
                drawstyle="steps-post",
            )
        axis.plot(curve[x], curve[y], color=colour, label="new" if single else label, drawstyle="steps-post")
    if name == "roc":
        axis.plot([0, 1], [0, 1], color="#cccccc", linestyle=":", label="chance")
    axis.set(xlabel=x_label, ylabel=y_label, xlim=(0, 1), ylim=(0, 1.02), title=title)
    axis.legend(loc="lower right" if name == "roc" else "lower left", fontsize="small")
    return _save(figure, path, f"{title}, base and new")


def render_pngs(base: Plots, new: Plots, labels: list[str], path_for: Callable[[str], Path]) -> list[Image]:
    """One PNG per plot the workspace has; ``path_for(name)`` says where each goes."""
    images = []
    if "confusion" in new:
        images.append(_confusion_png(base.get("confusion"), new["confusion"], labels, path_for("confusion")))
    if "training" in new:
        images.append(_training_png(base.get("training"), new["training"], path_for("training")))
    for name in ("roc", "precision_recall"):
        if name in new:
            images.append(_curve_png(name, base.get(name), new[name], path_for(name)))
    return images
