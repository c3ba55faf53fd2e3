"""The report's figures: each a valid PNG data URI whose drawn figure (caught as it is
saved) has the panels, lines, bars and labels the inputs call for, counted by hand."""

from __future__ import annotations

import base64

import cv2
import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.patches import Rectangle

from scripts.plan.grid import PRETRAINED_STRATEGIES, STRATEGIES
from scripts.report import plots


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved while the test runs (then saved as usual)."""
    figures = []
    save = matplotlib.figure.Figure.savefig

    def keep(figure, *args, **kwargs):
        figures.append(figure)
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures


def decoded(uri: str, kind: str = "png") -> np.ndarray:
    """The image of a ``data:image/<kind>;base64,`` URI (BGR), checking its signature."""
    prefix = f"data:image/{kind};base64,"
    assert uri.startswith(prefix)
    data = base64.b64decode(uri[len(prefix):], validate=True)
    assert data.startswith(b"\x89PNG\r\n\x1a\n" if kind == "png" else b"\xff\xd8\xff")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.size > 0
    return image


def panels(figure) -> list:
    return [ax for ax in figure.axes if ax.get_visible()]


def test_to_data_uri_is_a_png_of_the_figure_and_closes_it():
    figure, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    image = decoded(plots.to_data_uri(figure))
    assert image.shape[1] > image.shape[0] > 20  # wider than tall, like the figure
    assert figure.number not in plt.get_fignums()


def test_jpeg_data_uri_keeps_the_colour_order():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    image = decoded(plots.jpeg_data_uri(red), "jpeg")
    assert image.shape == (32, 32, 3)
    assert image[..., 2].min() > 200 and image[..., :2].max() < 60  # red in BGR order


def runs_table(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model", "strategy", "weights", "fraction", "f1_macro"])


def test_metric_by_strategy_one_panel_per_model_bars_are_seed_means(drawn):
    table = runs_table([("scratch_cnn", "scratch", "none", 1.0, 0.4), ("scratch_cnn", "scratch", "none", 1.0, 0.6),
                        ("vgg16", "full", "imagenet", 1.0, 0.6), ("vgg16", "partial", "imagenet", 1.0, 0.7),
                        ("vgg16", "partial", "imagenet", 1.0, 0.9),
                        ("vgg16", "partial", "imagenet", 0.5, 0.1)])  # a smaller training fraction: not drawn
    decoded(plots.metric_by_strategy(table, "f1_macro", "macro-F1"))
    scratch, vgg = panels(drawn[0])
    assert (scratch.get_title(), vgg.get_title()) == ("scratch_cnn", "vgg16")
    assert [bar.get_height() for bar in scratch.patches] == pytest.approx([0.5])
    assert [bar.get_height() for bar in vgg.patches] == pytest.approx([0.8, 0.6])  # partial before full
    assert [label.get_text() for label in vgg.get_xticklabels()] == ["partial", "full"]
    assert [len(c.get_offsets()) for c in vgg.collections] == [2, 1]  # one point per seed
    assert scratch.get_ylabel() == "macro-F1"


def test_metric_by_strategy_colours_the_sources_side_by_side_and_names_them_in_the_legend(drawn):
    table = runs_table([("vgg16", "partial", "imagenet", 1.0, 0.7), ("vgg16", "partial", "hed", 1.0, 0.5)])
    plots.metric_by_strategy(table, "f1_macro", "macro-F1")
    (vgg,) = panels(drawn[0])
    assert [label.get_text() for label in vgg.get_xticklabels()] == ["partial"]
    hed, imagenet = vgg.patches
    assert (hed.get_height(), imagenet.get_height()) == pytest.approx((0.5, 0.7))
    assert hed.get_x() < imagenet.get_x() and hed.get_facecolor() != imagenet.get_facecolor()
    (legend,) = drawn[0].legends
    assert [text.get_text() for text in legend.get_texts()] == ["hed", "imagenet"]


def test_metric_by_strategy_tick_labels_do_not_overlap_at_five_strategies_by_three_sources(drawn):
    rows = [("vgg16", "scratch", "none", 1.0, 0.5)] + [
        ("vgg16", strategy, source, 1.0, 0.7) for strategy in PRETRAINED_STRATEGIES
        for source in ("hed", "imagenet", "radimagenet")]
    plots.metric_by_strategy(runs_table(rows), "f1_macro", "macro-F1")
    figure = drawn[0]
    figure.canvas.draw()
    (vgg,) = panels(figure)
    labels = vgg.get_xticklabels()
    assert [label.get_text() for label in labels] == list(STRATEGIES)
    boxes = [label.get_window_extent() for label in labels]
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert len(vgg.patches) == 1 + 4 * 3


def test_metric_by_strategy_wraps_many_models_into_rows_at_one_scale(drawn):
    """12 backbones and the baseline: rows of 5, 5 and 3 panels, each row labelled, every
    backbone panel as wide as the others (the short row keeps their scale)."""
    models = [f"backbone{i:02d}" for i in range(12)]
    rows = [("scratch_cnn", "scratch", "none", 1.0, 0.5)] + [
        (model, strategy, "imagenet", 1.0, 0.7) for model in models for strategy in ("frozen", "partial")]
    plots.metric_by_strategy(runs_table(rows), "f1_macro", "macro-F1")
    drawn[0].canvas.draw()
    shown = panels(drawn[0])
    assert [ax.get_title() for ax in shown] == sorted([*models, "scratch_cnn"])
    tops = sorted({round(ax.get_position().y1, 3) for ax in shown}, reverse=True)
    per_row = [[ax for ax in shown if round(ax.get_position().y1, 3) == top] for top in tops]
    assert [len(row) for row in per_row] == [5, 5, 3]
    assert [bool(row[0].get_ylabel()) for row in per_row] == [True] * 3
    widths = {round(ax.get_position().width, 3) for ax in shown if ax.get_title() != "scratch_cnn"}
    assert max(widths) - min(widths) < 0.01


def perfect_run(title: str, seeds: int, labels: list[int]) -> dict:
    y_true = np.asarray(labels)
    return {"title": title, "predictions": [(y_true, np.eye(3)[y_true] * 0.8 + 0.2 / 3)] * seeds}


def test_curve_grid_draws_one_curve_per_class_and_seed(drawn):
    """Five configurations on a 2 x 4 grid (three panels hidden); two seeds of 3 classes,
    but the third configuration's test set lacks class 2. ROC panels add the diagonal."""
    runs = [perfect_run(f"run {i}", 2, [0, 1, 2, 0] if i != 2 else [0, 1, 0, 1]) for i in range(5)]
    decoded(plots.curve_grid(runs, ["a", "b", "c"], "roc"))
    shown = panels(drawn[0])
    assert len(drawn[0].axes) == 8 and [ax.get_title() for ax in shown] == [f"run {i}" for i in range(5)]
    assert [len(ax.get_lines()) for ax in shown] == [7, 7, 5, 7, 7]
    # a perfect ranking reaches a true positive rate of 1 at no false positive
    assert all((line.get_xydata() == [0, 1]).all(axis=1).any() for line in shown[0].get_lines()[:6])
    assert [t.get_text() for t in shown[0].get_legend().get_texts()] == ["a", "b", "c"]


def test_precision_recall_curves_have_recall_on_the_x_axis(drawn):
    """A perfect ranking has precision 1 down to recall 0: the point (0, 1), not (1, 0)."""
    plots.curve_grid([perfect_run("r", 1, [0, 1, 2, 0])], ["a", "b", "c"], "pr")
    (panel,) = panels(drawn[0])
    assert len(panel.get_lines()) == 3 and panel.get_xlabel() == "recall"
    assert all((line.get_xydata() == [0, 1]).all(axis=1).any() for line in panel.get_lines())


def test_curve_grid_of_a_two_class_dataset_draws_the_positive_class_only(drawn):
    runs = [{"title": "r", "predictions": [(np.array([0, 1, 1]), np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]))]}]
    plots.curve_grid(runs, ["NORMAL", "PNEUMONIA"], "roc", positive=1)
    (panel,) = panels(drawn[0])
    assert len(panel.get_lines()) == 2  # the positive class's curve and the diagonal


def test_confusion_grid_prints_the_counts_summed_over_seeds(drawn):
    seeds = [np.array([[3, 1], [0, 2]]), np.array([[2, 2], [1, 1]])]
    decoded(plots.confusion_grid([{"title": "r", "confusion": seeds}], ["NORMAL", "PNEUMONIA"]))
    (panel,) = panels(drawn[0])
    assert [t.get_text() for t in panel.texts] == ["5", "3", "1", "3"]
    np.testing.assert_allclose(panel.get_images()[0].get_array(), [[5 / 8, 3 / 8], [1 / 4, 3 / 4]])


def test_history_grid_two_lines_per_seed_and_the_fine_tuning_switch(drawn):
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "phase": ["warmup", "warmup", "finetune", "finetune"],
                            "loss": [1.0, 0.8, 0.7, 0.6], "val_loss": [1.1, 0.9, 0.8, 0.85]})
    plain = history.assign(phase="train")
    decoded(plots.history_grid([{"title": "fine-tuned", "histories": [(1, history), (2, history)]},
                                {"title": "scratch", "histories": [(1, plain)]}], "loss"))
    tuned, scratch = panels(drawn[0])
    assert len(tuned.get_lines()) == 2 * 2 + 2  # train and validation per seed, a switch line per seed
    assert len(scratch.get_lines()) == 2
    switch = tuned.get_lines()[2]
    assert list(switch.get_xdata()) == [2.5, 2.5]
    assert list(tuned.get_lines()[1].get_ydata()) == [1.1, 0.9, 0.8, 0.85]
    assert [t.get_text() for t in tuned.get_legend().get_texts()] == ["seed 1", "seed 2"]


def test_learning_curve_one_panel_per_backbone_with_the_baseline_in_each(drawn):
    rows = []
    for model, strategy, weights, values, beats in [
            ("scratch_cnn", "scratch", "none", [0.5, 0.6], [None, None]),
            ("vgg16", "partial", "imagenet", [0.7, 0.8], [True, False]),
            ("vgg16", "full", "imagenet", [0.6, 0.9], [False, True]),
            ("resnet50", "partial", "imagenet", [0.4, 0.65], [False, False])]:
        for n_train, value, beat in zip([20, 100], values, beats, strict=True):
            rows.append({"model": model, "strategy": strategy, "weights": weights, "n_train": n_train,
                         "value": value, "test_low": value - 0.1, "test_high": value + 0.1, "beats": beat})
    decoded(plots.learning_curve(pd.DataFrame(rows), "macro-F1"))
    resnet, vgg = panels(drawn[0])
    assert (resnet.get_title(), vgg.get_title()) == ("resnet50", "vgg16")
    assert [line.get_label() for line in vgg.get_lines()] == [
        "scratch_cnn (baseline)", "partial (imagenet)", "full (imagenet)"]
    assert list(vgg.get_lines()[0].get_ydata()) == [0.5, 0.6]
    points = [c for c in vgg.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in points] == [1, 1, 1, 1]  # per strategy: wins filled, the rest hollow
    assert list(points[0].get_offsets()[0]) == [20, 0.7]  # vgg16 partial beats the baseline at 20 images
    assert len(resnet.get_lines()) == 2 and vgg.get_ylabel() == "test macro-F1"


def test_reliability_grid_bars_for_the_filled_bins_and_dots_after_scaling(drawn):
    def bins(counts):
        return [{"low": i / 4, "high": (i + 1) / 4, "confidence": i / 4 + 0.1, "accuracy": i / 4, "count": c}
                for i, c in enumerate(counts)]

    decoded(plots.reliability_grid([{"title": "scaled", "before": bins([0, 5, 3, 2]), "after": bins([1, 0, 4, 5])},
                                    {"title": "unscaled", "before": bins([1, 1, 1, 1]), "after": None}]))
    scaled, unscaled = panels(drawn[0])
    assert [bar.get_height() for bar in scaled.patches] == pytest.approx([0.25, 0.5, 0.75])
    dots = [line for line in scaled.get_lines() if line.get_marker() == "o"]
    assert len(dots) == 1 and list(dots[0].get_xdata()) == pytest.approx([0.1, 0.6, 0.85])
    assert len(unscaled.patches) == 4 and len(unscaled.get_lines()) == 1  # the diagonal only


def test_mean_heatmap_grid_draws_the_lung_box_over_each_map(drawn):
    box = [0.1, 0.2, 0.9, 0.7]
    cams = [{"title": "a", "cam": np.eye(4), "score": 0.25}, {"title": "b", "cam": np.ones((2, 2)), "score": None}]
    decoded(plots.mean_heatmap_grid(cams, box))
    first, second = panels(drawn[0])
    np.testing.assert_array_equal(first.get_images()[0].get_array(), np.eye(4))
    (outline,) = [p for p in first.patches if isinstance(p, Rectangle)]
    assert outline.get_xy() == pytest.approx((0.1, 0.2))
    assert (outline.get_width(), outline.get_height()) == pytest.approx((0.8, 0.5))
    assert first.get_title() == "a\nscore 0.25 (mean over seeds)" and "score –" in second.get_title()
