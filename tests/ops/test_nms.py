"""nms and batched_nms: docs/semantics.md case T6 golden cases, strictness, ties, the float32 threshold trap,
NaN IoU, numpy/cpu/cuda agreement (incl. the CUDA tile edges), hypothesis properties (greedy
invariants; batched never crosses classes), both batched paths and the branch choice, device
arrays, errors, empty inputs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import importlib

from minirc.ops.box_iou import box_iou_numpy
from minirc.ops.nms import batched_nms, batched_nms_coordinate_trick, batched_nms_vanilla, nms

nms_module = importlib.import_module("minirc.ops.nms")  # minirc.ops.nms is the function, not the file

FLOAT_BOXES = np.array([[285.3538, 185.5758, 1193.5110, 851.4551],
                        [285.1472, 188.7374, 1192.4984, 851.0669],
                        [279.2440, 197.9812, 1189.4746, 849.2019]], np.float32)


def _f32(rows):
    return np.array(rows, np.float32)


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def _random_case(n, seed, spread=60.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, spread, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 30, (n, 2))], 1).astype(np.float32)
    scores = rng.choice([0.2, 0.5, 0.5, 0.7, 0.9], n).astype(np.float32) + rng.integers(0, 3, n) * 0.01
    return boxes, scores.astype(np.float32)  # many exact ties on purpose


def problem_strategy(max_n=25):
    """boxes (float32, overlapping a lot), scores with ties, class ids in {0, 1, 2}."""
    def build(n):
        corner = hnp.arrays(np.float32, (n, 2), elements=st.floats(0, 30, width=32))
        size = hnp.arrays(np.float32, (n, 2), elements=st.floats(0.5, 25, width=32))
        scores = hnp.arrays(np.float32, n, elements=st.sampled_from([0.1, 0.3, 0.5, 0.8]))
        idxs = hnp.arrays(np.int64, n, elements=st.integers(0, 2))
        return st.tuples(corner, size, scores, idxs).map(
            lambda t: (np.concatenate([t[0], t[0] + t[1]], 1), t[2], t[3]))
    return st.integers(0, max_n).flatmap(build)


# ---- T6 golden cases -----------------------------------------------------------------------------------
def test_t6_float_boxes(backend):
    keep = _host(nms(FLOAT_BOXES, _f32([0.6370, 0.7569, 0.3966]), 0.2, backend=backend))
    assert keep.dtype == np.int64
    assert keep.tolist() == [1]


@pytest.mark.parametrize("thr, expected", [(0.5, [0, 1]), (0.49, [0])])
def test_t6_threshold_is_strict(backend, thr, expected):
    # IoU is exactly 0.5 (50 / 100): equal to the threshold is kept
    keep = nms(_f32([[0, 0, 10, 10], [0, 0, 10, 5]]), _f32([0.9, 0.8]), thr, backend=backend)
    assert _host(keep).tolist() == expected


def test_t6_ties_keep_lower_index(backend):
    boxes = _f32([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 5]])
    keep = _host(nms(boxes, _f32([0.9, 0.9, 0.5, 0.8]), 0.5, backend=backend))
    assert keep.tolist() == [0, 3, 2]


def test_t6_batched(backend):
    boxes = _f32([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11]])
    keep = _host(batched_nms(boxes, _f32([0.9, 0.8, 0.7]), np.array([0, 1, 0]), 0.5, backend=backend))
    assert keep.dtype == np.int64 and keep.tolist() == [0, 1]


def test_float32_iou_against_float64_threshold(backend):
    # IoU = 30/100: in float32 that is 0.30000001192..., which is > 0.3 as a double (torchvision CPU
    # suppresses; a float32 comparison, as in torchvision's CUDA kernel, would keep both).
    # In float64 the IoU is exactly the double 0.3, so nothing is suppressed.
    boxes = [[0, 0, 10, 10], [0, 0, 10, 3]]
    assert _host(nms(_f32(boxes), _f32([0.9, 0.8]), 0.3, backend=backend)).tolist() == [0]
    assert _host(nms(np.array(boxes, np.float64), np.array([0.9, 0.8]), 0.3, backend=backend)).tolist() == [0, 1]


def test_nan_iou_never_suppresses(backend):
    # two identical points: IoU = 0/0 = NaN. Even a negative threshold (which suppresses every
    # other box, IoU 0 > -1) leaves the NaN pair alone.
    boxes = _f32([[1, 1, 1, 1], [1, 1, 1, 1], [5, 5, 8, 8]])
    assert _host(nms(boxes, _f32([0.9, 0.8, 0.1]), -1.0, backend=backend)).tolist() == [0, 1]
    assert _host(nms(boxes, _f32([0.1, 0.8, 0.9]), -1.0, backend=backend)).tolist() == [2]


def test_scores_of_other_dtypes(backend):
    boxes = _f32([[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60]])
    for scores in (np.array([1, 3, 2], np.uint8), np.array([0.1, 0.3, 0.2], np.float64), [1, 3, 2]):
        assert _host(nms(boxes, scores, 0.5, backend=backend)).tolist() == [1, 2]


# ---- backends ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 63, 64, 65, 100])  # CUDA: within one tile, exactly one, across two
def test_backends_agree(backend, n):
    boxes, scores = _random_case(n, seed=n)
    ref = nms(boxes, scores, 0.5, backend="numpy")
    assert 0 < len(ref) < n or n == 1
    np.testing.assert_array_equal(_host(nms(boxes, scores, 0.5, backend=backend)), ref)


def test_backends_agree_float64(backend):
    boxes, scores = _random_case(40, seed=7)
    boxes = boxes.astype(np.float64)
    np.testing.assert_array_equal(_host(nms(boxes, scores, 0.3, backend=backend)),
                                  nms(boxes, scores, 0.3, backend="numpy"))


def test_cuda_device_arrays_stay_on_device():
    from minirc.backend import cuda_available
    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    from numba import cuda
    boxes, scores = _random_case(20, seed=3)
    out = nms(cuda.to_device(boxes), cuda.to_device(scores), 0.5, backend="cuda")
    assert hasattr(out, "copy_to_host")
    np.testing.assert_array_equal(out.copy_to_host(), nms(boxes, scores, 0.5, backend="numpy"))
    idxs = np.arange(20) % 3
    out = batched_nms(cuda.to_device(boxes), cuda.to_device(scores), cuda.to_device(idxs), 0.5, backend="cuda")
    assert hasattr(out, "copy_to_host")
    np.testing.assert_array_equal(out.copy_to_host(), batched_nms(boxes, scores, idxs, 0.5, backend="numpy"))


def test_empty(backend):
    empty = np.zeros((0, 4), np.float32)
    for out in (nms(empty, np.zeros(0, np.float32), 0.5, backend=backend),
                batched_nms(empty, np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5, backend=backend),
                batched_nms_vanilla(empty, np.zeros(0), np.zeros(0, np.int64), 0.5, backend=backend),
                batched_nms_coordinate_trick(empty, np.zeros(0), np.zeros(0, np.int64), 0.5, backend=backend)):
        out = _host(out)
        assert out.shape == (0,) and out.dtype == np.int64


# ---- properties ----------------------------------------------------------------------------------------
def check_greedy_invariants(boxes, scores, thr, keep):
    n = len(boxes)
    iou = box_iou_numpy(boxes, boxes).astype(np.float64)
    assert keep.dtype == np.int64 and len(set(keep.tolist())) == len(keep)
    rank = sorted(range(n), key=lambda i: (-scores[i], i))  # decreasing score, ties by index
    position = {i: r for r, i in enumerate(rank)}
    assert [position[k] for k in keep] == sorted(position[k] for k in keep)  # score order
    for a in keep:  # no kept pair overlaps above the threshold
        for b in keep:
            assert a == b or not iou[a, b] > thr
    for s in set(range(n)) - set(keep.tolist()):  # each suppressed box has a better kept culprit
        assert any(position[k] < position[s] and iou[k, s] > thr for k in keep)


@settings(max_examples=50, deadline=None)
@given(problem_strategy(), st.sampled_from([0.0, 0.3, 0.5, 0.7]))
def test_nms_properties(problem, thr):
    boxes, scores, _ = problem
    keep = nms(boxes, scores, thr, backend="cpu")
    check_greedy_invariants(boxes, scores, thr, keep)
    np.testing.assert_array_equal(keep, nms(boxes, scores, thr, backend="numpy"))


@settings(max_examples=10, deadline=None)
@given(problem_strategy(max_n=12))
def test_nms_properties_cuda(problem):
    from minirc.backend import cuda_available
    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    boxes, scores, _ = problem
    np.testing.assert_array_equal(_host(nms(boxes, scores, 0.5, backend="cuda")),
                                  nms(boxes, scores, 0.5, backend="numpy"))


@settings(max_examples=50, deadline=None)
@given(problem_strategy(), st.sampled_from([0.0, 0.5, 0.7]))
def test_batched_nms_never_crosses_classes(problem, thr):
    boxes, scores, idxs = problem
    # the trick runs NMS on shifted float32 boxes, which round differently (docs/nms.md), so its
    # classes are checked on the shifted boxes; the per-class loop on the boxes as given.
    # (boxes >= 0 here, as the trick assumes; batched_nms takes the trick below 1000 boxes)
    shifted = boxes + (idxs.astype(np.float32) * (boxes.max(initial=0) + np.float32(1)))[:, None]
    for fn, seen in ((batched_nms_vanilla, boxes), (batched_nms_coordinate_trick, shifted), (batched_nms, shifted)):
        keep = fn(boxes, scores, idxs, thr, backend="cpu")
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        assert keep.tolist() == [i for i in order if i in set(keep.tolist())]  # score order, stable
        for c in np.unique(idxs):  # each class's kept set is plain NMS on that class alone
            members = np.flatnonzero(idxs == c)
            kept_c = keep[idxs[keep] == c]
            check_greedy_invariants(seen[members], scores[members], thr, np.searchsorted(members, kept_c))
            np.testing.assert_array_equal(kept_c, members[nms(seen[members], scores[members], thr)])


# ---- batched_nms: the two paths ------------------------------------------------------------------------
NEGATIVE = _f32([[-100, -100, 10, 10], [-90, -90, 21, 21]])  # IoU 0.66 if they were one class


def test_coordinate_trick_assumes_nonnegative_coordinates():
    # the shift idx * (max + 1) = 22 moves box 1 to [-68, -68, 43, 43], still overlapping box 0
    # (IoU 0.33 > 0.3): torchvision's trick then suppresses across classes; the per-class loop does not
    scores, idxs = _f32([0.9, 0.8]), np.array([0, 1])
    assert batched_nms_coordinate_trick(NEGATIVE, scores, idxs, 0.3).tolist() == [0]
    assert batched_nms_vanilla(NEGATIVE, scores, idxs, 0.3).tolist() == [0, 1]


def test_branch_choice_follows_torchvision_cpu():
    # <= 1000 boxes: coordinate trick; > 1000 boxes (boxes.size > 4000): per-class loop.
    # The negative-coordinate pair tells the two apart; the filler boxes are far away, in class 2.
    scores, idxs = _f32([0.9, 0.8]), np.array([0, 1])
    assert batched_nms(NEGATIVE, scores, idxs, 0.3).tolist() == [0]
    filler = np.tile(_f32([[5000, 5000, 5001, 5001]]), (999, 1)) + np.arange(999, dtype=np.float32)[:, None] * 2
    boxes = np.concatenate([NEGATIVE, filler])
    all_scores = np.concatenate([scores, np.full(999, 0.5, np.float32)])
    all_idxs = np.concatenate([idxs, np.full(999, 2)])
    assert boxes.size == 4004
    keep = batched_nms(boxes, all_scores, all_idxs, 0.3)
    assert keep[:2].tolist() == [0, 1] and len(keep) == 1001
    assert batched_nms(boxes[:1000], all_scores[:1000], all_idxs[:1000], 0.3)[:1].tolist() == [0]


OFFSET_CASE = (_f32([[0.6, 0.6, 10.6, 10.6], [0.6, 0.6, 10.6, 8.1], [0, 0, 1000, 1000]]),
               _f32([0.9, 0.8, 0.1]), np.array([5, 5, 0]))


def test_float32_offset_changes_a_threshold_decision(backend):
    # IoU of boxes 0 and 1 is 0.75 exactly, 0.7500001 in float32 -> the per-class loop suppresses.
    # Shifted by 5 * 1001 = 5005 px, the coordinates round differently and the float32 IoU is 0.75,
    # which is not > 0.75 -> the coordinate trick keeps box 1. torchvision does the same.
    boxes, scores, idxs = OFFSET_CASE
    assert _host(batched_nms_vanilla(boxes, scores, idxs, 0.75, backend=backend)).tolist() == [0, 2]
    assert _host(batched_nms_coordinate_trick(boxes, scores, idxs, 0.75, backend=backend)).tolist() == [0, 1, 2]


def test_batched_paths_agree_on_clipped_boxes(backend):
    boxes, scores = _random_case(30, seed=5)
    idxs = np.random.default_rng(5).integers(0, 4, 30)
    a = _host(batched_nms_vanilla(boxes, scores, idxs, 0.4, backend=backend))
    b = _host(batched_nms_coordinate_trick(boxes, scores, idxs, 0.4, backend=backend))
    np.testing.assert_array_equal(a, b)


# ---- errors --------------------------------------------------------------------------------------------
def test_errors():
    boxes, scores = _random_case(5, seed=0)
    with pytest.raises(ValueError, match="boxes: expected last dimension of size 4"):
        nms(boxes[:, :3], scores, 0.5)
    bad = boxes.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"boxes: expected finite coordinates, row 3"):
        nms(bad, scores, 0.5)
    bad = boxes.copy()
    bad[2, 3] = bad[2, 1] - 1  # y2 < y1
    with pytest.raises(ValueError, match=r"boxes: expected x1 <= x2 and y1 <= y2.*row 2"):
        nms(bad, scores, 0.5)
    with pytest.raises(ValueError, match=r"boxes: .*row 2"):
        batched_nms(bad, scores, np.zeros(5, np.int64), 0.5)
    with pytest.raises(ValueError, match=r"scores: expected shape \(5,\)"):
        nms(boxes, scores[:4], 0.5)
    with pytest.raises(ValueError, match="scores: expected finite values, entry 1"):
        nms(boxes, np.array([0.1, np.nan, 0.3, 0.2, 0.1], np.float32), 0.5)
    with pytest.raises(TypeError, match="iou_threshold"):
        nms(boxes, scores, "0.5")
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(boxes, scores, float("nan"))
    with pytest.raises(ValueError, match=r"idxs: expected shape \(5,\)"):
        batched_nms(boxes, scores, np.zeros(4, np.int64), 0.5)
    with pytest.raises(TypeError, match="idxs: expected integer class ids"):
        batched_nms(boxes, scores, np.zeros(5, np.float32), 0.5)


def test_public_names():
    from minirc.ops import batched_nms as public_batched, nms as public_nms
    assert public_nms is nms and public_batched is batched_nms


def test_default_backend_is_used(monkeypatch):
    calls = []
    monkeypatch.setitem(nms_module._IMPLS, "numpy", lambda *a: calls.append(a) or np.zeros(0, np.int64))
    from minirc.backend import use_backend
    with use_backend("numpy"):
        nms(FLOAT_BOXES, _f32([0.1, 0.2, 0.3]), 0.5)
    assert len(calls) == 1


# ---- optional parity with torchvision ------------------------------------------------------------------
def test_torchvision_parity():
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    from torchvision.ops import boxes as tv_boxes
    for seed in range(5):
        boxes, scores = _random_case(300, seed, spread=200)
        idxs = np.random.default_rng(seed).integers(0, 5, 300)
        tb, ts, ti = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs)
        for thr in (0.3, 0.5, 0.7):
            np.testing.assert_array_equal(nms(boxes, scores, thr), tv_ops.nms(tb, ts, thr).numpy())
            np.testing.assert_array_equal(batched_nms_coordinate_trick(boxes, scores, idxs, thr),
                                          tv_boxes._batched_nms_coordinate_trick(tb, ts, ti, thr).numpy())
            # torchvision's vanilla path sorts with an unstable sort: compare as sets
            assert set(batched_nms_vanilla(boxes, scores, idxs, thr).tolist()) == set(
                tv_boxes._batched_nms_vanilla(tb, ts, ti, thr).tolist())
    t32 = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 3]], dtype=torch.float32)
    assert tv_ops.nms(t32, torch.tensor([0.9, 0.8]), 0.3).tolist() == [0]
    assert tv_ops.nms(t32.double(), torch.tensor([0.9, 0.8]).double(), 0.3).tolist() == [0, 1]
    ti = torch.tensor([0, 1])
    assert tv_boxes._batched_nms_coordinate_trick(torch.from_numpy(NEGATIVE), torch.tensor([0.9, 0.8]), ti,
                                                  0.3).tolist() == [0]
    tb, ts, ti = (torch.from_numpy(a) for a in OFFSET_CASE)
    assert tv_boxes._batched_nms_vanilla(tb, ts, ti, 0.75).tolist() == [0, 2]
    assert tv_boxes._batched_nms_coordinate_trick(tb, ts, ti, 0.75).tolist() == [0, 1, 2]
