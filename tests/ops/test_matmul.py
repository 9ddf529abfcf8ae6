"""matmul: hand-computed values, backend agreement (with transposes and partial tiles), errors, empties."""
import numpy as np
import pytest

from minirc.ops.matmul import matmul
from minirc.testing import assert_backends_agree

A = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)      # (2, 3)
B = np.array([[1, 0], [0, 1], [2, -1]], dtype=np.float32)    # (3, 2)
AB = np.array([[7, -1], [16, -1]], dtype=np.float32)         # row i of A dotted with column j of B


def test_golden(backend):
    np.testing.assert_array_equal(matmul(A, B, backend=backend), AB)


def test_golden_transposed_operands(backend):
    # A^T stored as (3, 2) and B^T as (2, 3): the flags read them back as A and B
    got = matmul(A.T.copy(), B.T.copy(), transpose_a=True, transpose_b=True, backend=backend)
    np.testing.assert_array_equal(got, AB)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_backends_agree(backend, ta, tb, rng):
    # K = 21 spans two 16-wide tiles and M, N are not multiples of 16: partial tiles on every edge
    a = rng.standard_normal((21, 5) if ta else (5, 21)).astype(np.float32)
    b = rng.standard_normal((18, 21) if tb else (21, 18)).astype(np.float32)
    expected = (a.T if ta else a) @ (b.T if tb else b)
    got = matmul(a, b, transpose_a=ta, transpose_b=tb, backend=backend)
    assert got.dtype == np.float32 and got.shape == (5, 18)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_float64_stays_float64(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    out = assert_backends_agree(lambda backend: matmul(a, b, backend=backend), rtol=1e-12, atol=1e-12)
    assert out.dtype == np.float64


@pytest.mark.parametrize("shape_a,shape_b,shape_out", [((0, 3), (3, 4), (0, 4)), ((2, 0), (0, 4), (2, 4)),
                                                       ((2, 3), (3, 0), (2, 0))])
def test_empty(backend, shape_a, shape_b, shape_out):
    out = matmul(np.ones(shape_a, np.float32), np.ones(shape_b, np.float32), backend=backend)
    assert out.shape == shape_out
    np.testing.assert_array_equal(out, 0)  # an empty sum is 0


def test_cuda_device_arrays_stay_on_device(rng):
    from minirc.backend import cuda_available
    from minirc.cuda_utils import is_device_array, to_device
    from minirc.ops.matmul import gemm_cuda_device

    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    a, b = to_device(A), to_device(B)
    out = matmul(a, b, backend="cuda")
    assert is_device_array(out)
    np.testing.assert_array_equal(out.copy_to_host(), AB)
    gemm_cuda_device(a, b, out, accumulate=True)  # c += a @ b
    np.testing.assert_array_equal(out.copy_to_host(), 2 * AB)


@pytest.mark.parametrize("a,b,err,match", [
    (np.ones(3, np.float32), B, ValueError, "a: expected 2 dimensions"),
    (A, np.ones((3, 2, 1), np.float32), ValueError, "b: expected 2 dimensions"),
    (A, np.ones((4, 2), np.float32), ValueError, "b: expected 3 rows"),
    (A, B.astype(np.float64), TypeError, "b: expected the dtype of a"),
    (A.astype(np.int32), B, TypeError, "a: expected float32 or float64"),
])
def test_errors(a, b, err, match):
    with pytest.raises(err, match=match):
        matmul(a, b, backend="numpy")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        matmul(A, B, backend="tpu")
