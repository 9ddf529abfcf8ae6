"""split_dot: a large product cut into bands over our own threads gives np.matmul's numbers."""
import numpy as np
import pytest

from minirc.ops import split_gemm
from minirc.ops.split_gemm import split_dot

# (M, K, N): wide outputs are cut into column bands, tall ones into row bands
SHAPES = [(64, 576, 1024), (1024, 576, 64), (96, 300, 97), (3, 4096, 2)]


@pytest.fixture
def threads(monkeypatch):
    def set_threads(n):
        monkeypatch.setenv(split_gemm.THREADS_VAR, str(n))
        monkeypatch.setattr(split_gemm, "MIN_SPLIT_WORK", 1)  # split even these small test products
    return set_threads


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [2, 3])
def test_bands_give_np_dot_numbers(threads, shape, dtype, n_threads):
    threads(n_threads)
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    want = np.dot(a, b)
    np.testing.assert_allclose(split_dot(a, b), want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-3 if dtype == np.float32 else 1e-9)
    out = np.full((m, n), np.nan, dtype)
    assert split_dot(a, b, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-3)


def test_transposed_views_are_read_in_place(threads):
    threads(2)
    rng = np.random.default_rng(1)
    a_t = rng.standard_normal((300, 80)).astype(np.float32)   # a = a_t.T, a (80, 300)
    b_t = rng.standard_normal((500, 300)).astype(np.float32)  # b = b_t.T, b (300, 500)
    np.testing.assert_allclose(split_dot(a_t.T, b_t.T), a_t.T @ b_t.T, rtol=1e-5, atol=1e-4)


def test_one_thread_and_small_products_are_one_matmul(monkeypatch):
    calls = []
    monkeypatch.setattr(split_gemm, "gemm_executor", lambda n: calls.append(n))
    monkeypatch.setenv(split_gemm.THREADS_VAR, "1")
    a = np.ones((64, 64), np.float32)
    split_dot(np.ones((512, 512), np.float32), np.ones((512, 512), np.float32))
    monkeypatch.setenv(split_gemm.THREADS_VAR, "2")
    np.testing.assert_array_equal(split_dot(a, a), np.full((64, 64), 64, np.float32))  # below MIN_SPLIT_WORK
    assert calls == []


def test_empty_products(threads):
    threads(2)
    assert split_dot(np.ones((0, 3)), np.ones((3, 5))).shape == (0, 5)
    np.testing.assert_array_equal(split_dot(np.ones((4, 0)), np.ones((0, 5))), np.zeros((4, 5)))


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_thread_count_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv(split_gemm.THREADS_VAR, value)
    with pytest.raises(ValueError, match="MINIRC_GEMM_THREADS: expected a positive integer"):
        split_gemm.gemm_threads()


def test_default_is_the_usable_cores_at_most_four(monkeypatch):
    monkeypatch.delenv(split_gemm.THREADS_VAR, raising=False)
    assert 1 <= split_gemm.gemm_threads() <= split_gemm.MAX_DEFAULT_THREADS
