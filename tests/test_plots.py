"""The report's curve charts: one per class, titled with the class, the base overlaid only for the same class."""

from pathlib import Path

import numpy as np
import pandas as pd

from mlops.ml.evaluate import curves
from mlops.report import plots

LABELS = ["cats", "dogs", "birds"]


def three_class_curves(seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[y]
    return curves(y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), LABELS)


def test_each_class_gets_a_mermaid_chart_titled_with_it_and_the_base_only_where_it_has_that_class() -> None:
    new = three_class_curves(0)["roc"]
    base = three_class_curves(1)["roc"].query("`class` != 'birds'")
    charts = plots.mermaid_curve("roc", base, new).split("\n\n")
    assert [chart.splitlines()[3].strip() for chart in charts] == [
        f'title "ROC curve, {label} vs rest"' for label in LABELS
    ]
    assert [chart.count("    line [") for chart in charts] == [2, 2, 1]


def test_a_curve_file_without_classes_is_one_untitled_curve() -> None:
    frame = pd.DataFrame({"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.8, 1.0]})
    assert 'title "ROC curve"' in plots.mermaid_curve("roc", None, frame)


def test_the_pngs_draw_every_class_in_one_figure_per_curve(tmp_path: Path) -> None:
    new, base = three_class_curves(0), three_class_curves(1)
    images = plots.render_pngs(base, new, LABELS, lambda name: tmp_path / f"{name}.png")
    titles = {image.path.name: image.title for image in images}
    assert titles["roc.png"] == "ROC curve, each class vs rest, base and new"
    assert titles["precision_recall.png"] == "Precision-recall curve, each class vs rest, base and new"
    assert all(image.path.stat().st_size > 1000 for image in images)


def test_two_labels_draw_the_positive_class_alone() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    roc = curves(y, np.column_stack([1 - scores, scores]), ["negative", "positive"])["roc"]
    assert 'title "ROC curve, positive vs rest"' in plots.mermaid_curve("roc", None, roc)
