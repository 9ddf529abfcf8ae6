"""Fuzzing the public ops with hostile arguments on numpy, cpu and the cuda simulator.

Property: every call gives a result or a ValueError/TypeError -- never another exception -- and
all backends give the same result or the same exception type. Shapes are tiny and examples
bounded, so the module takes a few seconds; docs/conventions.md ("Limits") lists the rules.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minirc.backend import cuda_available
from minirc.ops.interpolate import interpolate_nearest
from minirc.ops.max_pool2d import max_pool2d, max_pool2d_backward
from minirc.ops.nms import nms
from minirc.ops.roi_align import roi_align
from minirc.ops.roi_pool import roi_pool

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on extreme values is expected

BACKENDS = ("numpy", "cpu") + (("cuda",) if cuda_available() else ())
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

EXTREME = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 3.7, 1e6, -1e6, 6e10, 1e30, -1e30, 3e38,
                           float("nan"), float("inf"), float("-inf")])
COORD = st.one_of(st.floats(-8, 12, allow_nan=False), EXTREME)
SIZE = st.one_of(st.integers(-1, 4), st.sampled_from([2**20, 2**40]))
DTYPE = st.sampled_from([np.float32, np.float64, np.float16, np.int32])


@st.composite
def feature_maps(draw, max_side=5):
    shape = (draw(st.integers(0, 2)), draw(st.integers(0, 2)),
             draw(st.integers(0, max_side)), draw(st.integers(0, max_side)))
    x = np.random.default_rng(draw(st.integers(0, 99))).standard_normal(shape)
    if x.size and draw(st.booleans()):
        x.flat[draw(st.integers(0, x.size - 1))] = draw(EXTREME)
    return x.astype(draw(DTYPE))


@st.composite
def rois(draw):
    k = draw(st.integers(0, 3))
    rows = [[draw(st.sampled_from([0.0, 1.0, 0.7, -1.0, 2.0, float("nan")]))] + [draw(COORD) for _ in range(4)]
            for _ in range(k)]
    return np.array(rows, np.float32).reshape(k, 5)


def _run(fn, backend):
    """("ok", result) or ("error", exception type); any other exception fails the test."""
    try:
        out = fn(backend)
    except (ValueError, TypeError) as e:
        return "error", type(e)
    return "ok", [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]


def _same_on_every_backend(fn):
    results = {b: _run(fn, b) for b in BACKENDS}
    kinds = {b: (r[0], r[1] if r[0] == "error" else None) for b, r in results.items()}
    assert len(set(kinds.values())) == 1, kinds
    if results["numpy"][0] == "ok":
        for b in BACKENDS[1:]:
            for ref, got in zip(results["numpy"][1], results[b][1]):
                assert ref.shape == got.shape and ref.dtype == got.dtype, (b, ref.shape, got.shape)
                np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=b)


@FUZZ
@given(x=feature_maps(), boxes=rois(), size=SIZE, scale=st.one_of(st.sampled_from([0.25, 1.0]), EXTREME),
       ratio=st.one_of(st.integers(-2, 3), st.sampled_from([2**33])), aligned=st.booleans())
def test_roi_align(x, boxes, size, scale, ratio, aligned):
    _same_on_every_backend(lambda b: roi_align(x, boxes, size, scale, ratio, aligned, backend=b))


@FUZZ
@given(x=feature_maps(), boxes=rois(), size=SIZE, scale=st.one_of(st.sampled_from([0.25, 1.0]), EXTREME))
def test_roi_pool(x, boxes, size, scale):
    _same_on_every_backend(lambda b: roi_pool(x, boxes, size, scale, return_argmax=True, backend=b))


@FUZZ
@given(x=feature_maps(), kernel=SIZE, stride=st.one_of(st.none(), SIZE), padding=st.integers(-1, 3),
       dilation=st.integers(0, 3), ceil_mode=st.booleans())
def test_max_pool2d(x, kernel, stride, padding, dilation, ceil_mode):
    _same_on_every_backend(lambda b: max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, backend=b))


@FUZZ
@given(x=feature_maps(), shift=st.integers(-40, 40), where=st.integers(0, 10**6))
def test_max_pool2d_backward(x, shift, where):
    try:
        out, idx = max_pool2d(x, 2, backend="numpy")
    except (ValueError, TypeError):
        return
    idx = idx.copy()
    if idx.size:
        idx.flat[where % idx.size] += shift  # shift one index anywhere: in or out of its window
    _same_on_every_backend(lambda b: max_pool2d_backward(np.ones_like(out), idx, x.shape, 2, backend=b))


@FUZZ
@given(x=feature_maps(), size=st.one_of(st.none(), SIZE, st.tuples(SIZE, SIZE)),
       scale=st.one_of(st.floats(0.1, 3.0), EXTREME))
def test_interpolate_nearest(x, size, scale):
    factor = None if size is not None else scale
    _same_on_every_backend(lambda b: interpolate_nearest(x, size=size, scale_factor=factor, backend=b))


@FUZZ
@given(n=st.integers(0, 5), data=st.data(), threshold=st.one_of(st.floats(0, 1), EXTREME))
def test_nms(n, data, threshold):
    boxes = np.array([sorted([data.draw(COORD), data.draw(COORD)]) for _ in range(2 * n)], np.float32)
    boxes = boxes.reshape(n, 2, 2).transpose(0, 2, 1).reshape(n, 4) if n else np.zeros((0, 4), np.float32)
    scores = np.array([data.draw(st.one_of(st.floats(0, 1), EXTREME)) for _ in range(n)], np.float32)
    _same_on_every_backend(lambda b: nms(boxes, scores, threshold, backend=b))
