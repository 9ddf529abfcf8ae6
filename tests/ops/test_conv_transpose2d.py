"""conv_transpose2d: hand-computed values (the mask head's kernel 2 stride 2), the adjoint identity
with conv2d, torch parity, backend agreement, errors, empties."""
import numpy as np
import pytest

from minirc.ops.conv2d import conv2d_forward
from minirc.ops.conv_transpose2d import conv_transpose2d_backward, conv_transpose2d_forward

X4 = np.array([[[[1, 2], [3, 4]]]], np.float32)            # (1, 1, 2, 2)
K4 = np.array([[[[1, 10], [100, 1000]]]], np.float32)      # (in 1, out 1, 2, 2)


def test_golden_kernel2_stride2(backend):
    # kernel 2, stride 2: each input pixel stamps its own 2x2 block, x[i, j] * K, no overlap
    y = conv_transpose2d_forward(X4, K4, np.array([0.5], np.float32), stride=2, backend=backend)
    expected = np.array([[1, 10, 2, 20], [100, 1000, 200, 2000],
                         [3, 30, 4, 40], [300, 3000, 400, 4000]], np.float32) + 0.5
    np.testing.assert_array_equal(y[0, 0], expected)
    # each input pixel's gradient is the sum of its block: 1 + 10 + 100 + 1000
    dx, dw, db = conv_transpose2d_backward(np.ones((1, 1, 4, 4), np.float32), X4, K4, stride=2, backend=backend)
    np.testing.assert_array_equal(dx[0, 0], np.full((2, 2), 1111))
    np.testing.assert_array_equal(dw[0, 0], np.full((2, 2), 10))  # every tap saw 1 + 2 + 3 + 4
    np.testing.assert_array_equal(db, [16])


def test_golden_overlapping_stride1(backend):
    # stride 1, 2x2 ones kernel on x = [[1, 2]]: the stamps overlap in the middle column
    y = conv_transpose2d_forward(np.array([[[[1, 2]]]], np.float32), np.ones((1, 1, 2, 2), np.float32),
                                 backend=backend)
    np.testing.assert_array_equal(y[0, 0], [[1, 3, 2], [1, 3, 2]])


def test_mask_head_formula(rng):
    # docs/semantics.md section 13: y[o, 2i+a, 2j+b] = bias[o] + sum_c x[c, i, j] * W[c, o, a, b]
    x = rng.standard_normal((2, 3, 2, 3)).astype(np.float32)
    w = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    expected = np.zeros((2, 4, 4, 6), np.float32)
    for i in range(2):
        for j in range(3):
            for a in range(2):
                for c in range(2):
                    expected[:, :, 2 * i + a, 2 * j + c] = b + x[:, :, i, j] @ w[:, :, a, c]
    np.testing.assert_allclose(conv_transpose2d_forward(x, w, b, 2, backend="cpu"), expected, rtol=1e-5, atol=1e-5)


CASES = [  # (N, Cin, Cout, H, W, k, stride, padding, output_padding, dilation)
    (1, 2, 3, 3, 3, 2, 2, 0, 0, 1),
    (2, 2, 2, 3, 4, 3, (2, 1), (1, 0), (1, 0), (1, 2)),
]


def _random_case(case, rng, dtype=np.float32):
    n, ci, co, h, w, k, s, p, op, d = case
    x = rng.standard_normal((n, ci, h, w)).astype(dtype)
    wt = rng.standard_normal((ci, co, k, k)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    y = conv_transpose2d_forward(x, wt, b, s, p, op, d, backend="numpy")
    return x, wt, b, rng.standard_normal(y.shape).astype(dtype), (s, p, op, d)


def test_adjoint_of_conv2d(rng):
    # <conv2d(y), x> == <y, conv_transpose2d(x)> for the same weight: the two are transposes
    x, w, _, g, (s, p, op, d) = _random_case(CASES[1], rng, np.float64)
    lhs = np.sum(conv2d_forward(g, w, None, s, p, d, backend="numpy") * x)
    rhs = np.sum(g * conv_transpose2d_forward(x, w, None, s, p, op, d, backend="numpy"))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_backends_match_reference(backend, case, rng):
    x, w, b, g, geom = _random_case(case, rng)
    np.testing.assert_allclose(conv_transpose2d_forward(x, w, b, *geom, backend=backend),
                               conv_transpose2d_forward(x, w, b, *geom, backend="numpy"), rtol=1e-5, atol=1e-5)
    for got, want in zip(conv_transpose2d_backward(g, x, w, *geom, backend=backend),
                         conv_transpose2d_backward(g, x, w, *geom, backend="numpy")):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_torch_parity(case, rng):
    torch = pytest.importorskip("torch")
    x, w, b, g, (s, p, op, d) = _random_case(case, rng, np.float64)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, s, p, op, 1, d)
    ty.backward(torch.tensor(g))
    for backend in ("numpy", "cpu"):
        np.testing.assert_allclose(conv_transpose2d_forward(x, w, b, s, p, op, d, backend=backend),
                                   ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        for got, t in zip(conv_transpose2d_backward(g, x, w, s, p, op, d, backend=backend), (tx, tw, tb)):
            np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_empty_batch(backend):
    x = np.zeros((0, 2, 3, 3), np.float32)
    w = np.ones((2, 4, 2, 2), np.float32)
    assert conv_transpose2d_forward(x, w, np.ones(4, np.float32), 2, backend=backend).shape == (0, 4, 6, 6)
    dx, dw, db = conv_transpose2d_backward(np.zeros((0, 4, 6, 6), np.float32), x, w, 2, backend=backend)
    assert dx.shape == (0, 2, 3, 3)
    np.testing.assert_array_equal(dw, np.zeros((2, 4, 2, 2)))
    np.testing.assert_array_equal(db, np.zeros(4))


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(w=np.ones((2, 1, 2, 2), np.float32)), ValueError, "weight: expected 1 input channels"),
    (dict(b=np.ones(2, np.float32)), ValueError, r"bias: expected shape \(1,\)"),
    (dict(output_padding=2), ValueError, "output_padding: expected values smaller than stride"),
    (dict(stride=0), ValueError, "stride: expected values >= 1"),
    (dict(padding=3), ValueError, "padding: .* output size would be"),
])
def test_errors(kwargs, err, match):
    args = dict(w=K4, b=None, stride=2, padding=0, output_padding=0) | kwargs
    with pytest.raises(err, match=match):
        conv_transpose2d_forward(X4, args["w"], args["b"], args["stride"], args["padding"],
                                 args["output_padding"])


def test_grad_out_shape_error():
    with pytest.raises(ValueError, match=r"grad_out: expected shape \(1, 1, 4, 4\)"):
        conv_transpose2d_backward(np.ones((1, 1, 3, 3), np.float32), X4, K4, stride=2)
