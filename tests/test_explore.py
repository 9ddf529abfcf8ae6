"""The notebooks' explorers: their numbers, and their drawing functions without ipywidgets."""
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from minirc import explore as E  # noqa: E402
from minirc.ops.nms import nms  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_cell_average_is_the_mean_of_each_cell():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(E.cell_average(image, 2), [[2.5, 4.5], [10.5, 12.5]])
    with pytest.raises(ValueError, match="divisible by the stride 3"):
        E.cell_average(image, 3)


def test_paste_of_a_constant_mask_fills_its_integer_box():
    pasted = E.paste_bilinear(np.ones((4, 4), np.float32), (2, 3, 6, 5), 8, 8)
    assert (pasted[3:5, 2:6] == 1).all()
    assert pasted.sum() == 8  # nothing outside the box's 4 x 2 pixels


def test_align_read_points_aligned_true_are_the_sub_bin_centres_and_legacy_is_half_a_cell_later():
    box, stride = (16.0, 32.0, 48.0, 64.0), 16
    pts = E.align_read_points(box, stride, 2, 1, aligned=True)  # one sample per bin: the bin centres
    np.testing.assert_allclose(np.unique(pts[:, 0]), [24, 40], atol=1e-4)
    np.testing.assert_allclose(np.unique(pts[:, 1]), [40, 56], atol=1e-4)
    legacy = E.align_read_points(box, stride, 2, 1, aligned=False)
    np.testing.assert_allclose(legacy - pts, stride / 2, atol=1e-4)  # down-right by half a cell


def test_roipool_bins_of_an_aligned_box_are_its_cells():
    xs, ys = E.roipool_bin_edges((32, 16, 95, 47), 16, 2)  # cells 2..6 x 1..3 (inclusive ends)
    assert xs == [(32, 80), (64, 112)]  # 5 cells, bins of 2.5: [0, 3) and [2, 5) share cell 4
    assert ys == [(16, 48), (32, 64)]  # 3 cells, bins of 1.5: [0, 2) and [1, 3)


def test_roi_case_aligned_beats_the_others_on_a_sub_cell_box():
    ious = {k: E.roi_case(offset=0.5, box_size=40, stride=16, kind=k)["iou"] for k in E.POOLINGS}
    assert ious["RoIAlign aligned=True"] > ious["RoIAlign aligned=False"] > ious["RoIPool"]
    with pytest.raises(ValueError, match="offset"):
        E.roi_case(offset=1.5)
    with pytest.raises(ValueError, match="kind"):
        E.pool_box("RoIWarp?", np.zeros((4, 4)), (0, 0, 8, 8), 2, 4)


@pytest.mark.parametrize("kind", E.POOLINGS)
def test_roi_explorer_figure_draws_three_titled_panels(kind):
    fig = E.roi_explorer_figure(offset=0.25, box_size=24, stride=8, kind=kind, sampling_ratio=-1, output_size=7)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3 and all(ax.get_title() and ax.get_xlabel() for ax in panels)


def test_anchor_coverage_finds_the_box_no_anchor_fits():
    gt = np.array([[0, 0, 64, 64], [100, 100, 110, 200]], np.float32)  # a size-64 anchor; a 10 x 100 sliver
    best, anchor = E.anchor_coverage(gt, (256, 256))
    assert best[0] == pytest.approx(1.0) and best[1] < 0.5
    np.testing.assert_array_equal(anchor[0], [0, 0, 64, 64])
    fig, ax = plt.subplots()
    assert E.draw_anchor_coverage(ax, gt, (256, 256), threshold=0.7).tolist() == [1]
    assert "1 of 2 boxes" in ax.get_title()
    assert E.anchor_coverage(np.zeros((0, 4)), (256, 256))[0].shape == (0,)


def test_nms_steps_match_minirc_nms_and_name_the_suppressor():
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [20, 20, 30, 30], [0, 1, 10, 11]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    kept, by = E.nms_steps(boxes, scores, 0.5)
    assert kept == nms(boxes, scores, 0.5).tolist() == [3, 1, 2]
    assert by == {0: 3}
    assert kept != E.nms_steps(boxes, E.reorder_scores(boxes, scores, "reversed"), 0.5)[0]


def test_reorder_scores_keeps_the_values():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 3, 3], [0, 0, 2, 2]], np.float32)
    scores = np.array([0.9, 0.5, 0.7], np.float32)
    np.testing.assert_array_equal(E.reorder_scores(boxes, scores, "reversed"), scores[[1, 0, 2]])
    np.testing.assert_array_equal(E.reorder_scores(boxes, scores, "largest first"), scores[[1, 0, 2]])
    with pytest.raises(ValueError, match="order"):
        E.reorder_scores(boxes, scores, "random")


def test_nms_and_coverage_figures_draw_without_widgets(monkeypatch, capsys):
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], np.float32)
    assert E.nms_figure(boxes, np.array([0.9, 0.8]), 0.5).axes[0].get_title().endswith("keeps 1 of 2")
    E.anchor_coverage_figure(boxes, (256, 256), size_scale=0.5, ratios="1")
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets now raises ImportError
    E.interactive(E.nms_figure, threshold=(0.1, 0.9, 0.1, 0.5))
    assert "ipywidgets is not installed" in capsys.readouterr().out


def test_interactive_builds_sliders_and_dropdowns():
    widgets = pytest.importorskip("ipywidgets")
    assert isinstance(E._widget(widgets, "t", (0.1, 0.9, 0.1, 0.5)), widgets.FloatSlider)
    assert E._widget(widgets, "n", (1, 9, 1, 3)).value == 3
    assert E._widget(widgets, "order", list(E.SCORE_ORDERS)).value == "as scored"
    with pytest.raises(TypeError, match="order"):
        E._widget(widgets, "order", "as scored")
