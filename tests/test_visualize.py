"""Drawing helpers: what ends up on the axes (patches, limits, skipped low scores), not pixels."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from minirc.visualize import (draw_boxes, draw_instances, label_pixel_axes,  # noqa: E402
                              show_predictions_vs_ground_truth)


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_draw_boxes_places_each_rectangle_at_its_corner(ax):
    draw_boxes(ax, np.array([[1, 2, 5, 10], [0, 0, 3.5, 1]], np.float32), "red", lw=2, ls="--")
    rects = ax.patches
    assert len(rects) == 2
    assert (rects[0].get_x(), rects[0].get_y(), rects[0].get_width(), rects[0].get_height()) == (1, 2, 4, 8)
    assert rects[1].get_width() == 3.5 and rects[1].get_linestyle() == "--"


def test_draw_boxes_accepts_no_boxes(ax):
    draw_boxes(ax, np.zeros((0, 4), np.float32), "red")
    assert len(ax.patches) == 0


def test_label_pixel_axes_puts_row_zero_at_the_top(ax):
    label_pixel_axes(ax, 64, 48, "t")
    assert ax.get_xlim() == (0, 64) and ax.get_ylim() == (48, 0)
    assert ax.get_xlabel() == "x (pixels)" and ax.get_title() == "t"


def test_draw_instances_skips_scores_below_the_threshold(ax):
    image = np.zeros((3, 16, 16), np.float32)
    boxes = np.array([[1, 1, 8, 8], [4, 4, 12, 12]], np.float32)
    masks = np.zeros((2, 16, 16), np.float32)
    masks[:, 5:7, 5:7] = 1
    draw_instances(ax, image, boxes, np.array([1, 2]), np.array([0.9, 0.2]), masks, ["bg", "a", "b"],
                   score_threshold=0.5)
    assert len(ax.patches) == 1 and [t.get_text() for t in ax.texts] == ["a 0.90"]


def test_predictions_vs_ground_truth_needs_matching_lengths():
    image = np.zeros((3, 16, 16), np.float32)
    target = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}
    with pytest.raises(ValueError, match="same non-zero length"):
        show_predictions_vs_ground_truth([image], [target, target], [target])
