import copy

import numpy as np
import pytest

from minirc.nn.module import Parameter
from minirc.optim import SGD, LinearWarmup, MultiStepLR, WarmupMultiStepLR


def params64():
    return [Parameter(np.array([1.0, -2.0]))]


def test_sgd_two_steps_by_hand_momentum_and_weight_decay():
    (p,) = params = params64()
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    p.grad = np.array([0.5, 0.5])
    opt.step()
    # d = g + wd p = [0.51, 0.48]; first step: buffer = d; p -= lr d
    np.testing.assert_allclose(p.data, [0.949, -2.048], rtol=1e-12)
    p.grad = np.array([-1.0, 0.0])
    opt.step()
    # d = [-1 + 0.00949, -0.02048]; buffer = 0.9 [0.51, 0.48] + d = [-0.53151, 0.41152]
    np.testing.assert_allclose(opt.state_dict()["state"][0]["momentum_buffer"], [-0.53151, 0.41152], rtol=1e-12)
    np.testing.assert_allclose(p.data, [1.002151, -2.089152], rtol=1e-12)


def test_sgd_nesterov_and_dampening_by_hand():
    (p,) = params = params64()
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    p.grad = np.array([0.5, 0.5])
    opt.step()  # d + m * buffer = 1.9 d
    np.testing.assert_allclose(p.data, [1 - 0.1 * 1.9 * 0.51, -2 - 0.1 * 1.9 * 0.48], rtol=1e-12)
    (q,) = params = params64()
    opt = SGD(params, lr=1.0, momentum=0.5, dampening=0.5)
    for _ in range(2):
        q.grad = np.array([1.0, 1.0])
        opt.step()  # buffers: 1, then 0.5 * 1 + (1 - 0.5) * 1 = 1 (the first step is not dampened)
    np.testing.assert_allclose(q.data, [-1.0, -4.0])


def test_plain_sgd_and_params_without_grad_are_skipped():
    a, b = Parameter(np.ones(2, np.float32)), Parameter(np.ones(2, np.float32))
    opt = SGD([a, b], lr=0.5)
    a.grad = np.array([1.0, 2.0], np.float32)
    opt.step()
    assert a.data.tolist() == [0.5, 0.0] and b.data.tolist() == [1, 1]
    assert a.dtype == np.float32
    opt.zero_grad()
    assert a.grad is None


def test_param_groups_override_defaults():
    a, b = Parameter(np.ones(1)), Parameter(np.ones(1))
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 1.0, "weight_decay": 0.0}], lr=0.1, weight_decay=1.0)
    a.grad = b.grad = np.zeros(1)
    opt.step()
    assert a.data[0] == pytest.approx(0.9) and b.data[0] == 1.0  # only a's group decays


def _run(params, opt, grads):
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi.copy()
        opt.step()


def test_state_dict_resume_is_bit_identical(rng):
    grads = [[rng.standard_normal((3, 2)).astype(np.float32)] for _ in range(6)]
    kwargs = dict(lr=0.02, momentum=0.9, weight_decay=1e-4)
    p = [Parameter(rng.standard_normal((3, 2)).astype(np.float32))]
    opt = SGD(p, **kwargs)
    _run(p, opt, grads[:3])
    saved_w, saved_opt = p[0].data.copy(), copy.deepcopy(opt.state_dict())
    _run(p, opt, grads[3:])
    q = [Parameter(saved_w)]
    resumed = SGD(q, lr=123.0)
    resumed.load_state_dict(saved_opt)
    assert resumed.param_groups[0]["lr"] == 0.02 and resumed.param_groups[0]["momentum"] == 0.9
    _run(q, resumed, grads[3:])
    np.testing.assert_array_equal(q[0].data, p[0].data)


def test_sgd_errors():
    p = params64()
    with pytest.raises(ValueError, match="lr: expected a number in"):
        SGD(p, lr=-1.0)
    with pytest.raises(ValueError, match="nesterov: needs momentum > 0"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="params: expected at least one parameter"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="params: expected Tensors"):
        SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": p}, {"params": p}], lr=0.1)
    with pytest.raises(ValueError, match="state_dict: parameter groups of sizes"):
        SGD(p, lr=0.1).load_state_dict({"state": {}, "param_groups": []})


def test_sgd_bit_identical_to_torch(rng):
    torch = pytest.importorskip("torch")
    shapes = [(16, 3, 3, 3), (5,)]
    w0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(50)]
    for kwargs in (dict(lr=0.02, momentum=0.9, weight_decay=1e-4),
                   dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)):
        ref = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in w0]
        ref_opt = torch.optim.SGD(ref, **kwargs)
        ours = [Parameter(w.copy()) for w in w0]
        opt = SGD(ours, **kwargs)
        for g in grads:
            for r, gi in zip(ref, g):
                r.grad = torch.from_numpy(gi.copy())
            ref_opt.step()
        _run(ours, opt, grads)
        for r, o in zip(ref, ours):
            np.testing.assert_array_equal(o.data, r.detach().numpy())


# ---- backends: numpy reference, cpu kernel, cuda kernel -------------------------------------------
SGD_OPTIONS = [dict(lr=0.02),
               dict(lr=0.02, weight_decay=1e-4),
               dict(lr=0.04, momentum=0.9, weight_decay=1e-4),
               dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=5e-4),
               dict(lr=0.05, momentum=0.5, dampening=0.5),
               dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
               dict(lr=0.3, momentum=0.7, nesterov=True)]


def _sgd_run(backend, w0, grads, kwargs, lrs=None):
    """Weights and momentum buffers after len(grads) steps, all on the host."""
    from minirc.backend import use_backend
    from minirc.cuda_utils import to_device, to_host

    ps = [Parameter(w.copy()) for w in w0]
    if backend == "cuda":
        for p in ps:
            p.data = to_device(p.data)
    opt = SGD(ps, **kwargs)
    with use_backend("numpy" if backend == "numpy" else "cpu"):  # device arrays select the cuda kernel
        for k, g in enumerate(grads):
            if lrs is not None:
                opt.param_groups[0]["lr"] = lrs[k]
            for p, gi in zip(ps, g):
                p.grad = to_device(gi) if backend == "cuda" else gi.copy()
            opt.step()
    bufs = [opt.state[id(p)]["momentum_buffer"] for p in ps] if kwargs.get("momentum") else []
    return [to_host(p.data) for p in ps], [to_host(b) for b in bufs]


def _sgd_case(rng, dtype, shapes, steps):
    w0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    # gradients of several magnitudes, with exact zeros, so products and sums round differently
    grads = [[(rng.standard_normal(s) * 10.0 ** rng.integers(-4, 2, size=s) * (rng.random(s) > 0.1)).astype(dtype)
              for s in shapes] for _ in range(steps)]
    return w0, grads


@pytest.mark.parametrize("kwargs", SGD_OPTIONS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_backends_bit_identical(rng, kwargs, dtype):
    """numpy, cpu and cuda give the same bits over several steps (the first one included: the buffer
    starts as the gradient) with a changing lr, for weights and momentum buffers."""
    from minirc.backend import cuda_available

    w0, grads = _sgd_case(rng, dtype, [(4, 3, 3, 3), (5,), ()], steps=4)
    lrs = [kwargs["lr"] * f for f in (0.001, 0.3, 1.0, 0.1)]  # warm-up like: lr values that do not round to f32
    ref = _sgd_run("numpy", w0, grads, kwargs, lrs)
    backends = ["cpu"] + (["cuda"] if cuda_available() else [])
    for backend in backends:
        got = _sgd_run(backend, w0, grads, kwargs, lrs)
        for a, b in zip(ref[0] + ref[1], got[0] + got[1]):
            assert a.dtype == b.dtype == dtype
            np.testing.assert_array_equal(b, a, err_msg=backend)
    assert any(not np.array_equal(w, r) for w, r in zip(w0, ref[0]))  # the steps moved the weights


def test_sgd_cpu_parallel_kernel_bit_identical(rng):
    """A parameter of PARALLEL_MIN_SIZE elements or more runs the prange kernel: same bits as numpy."""
    from minirc.optim import sgd

    w0, grads = _sgd_case(rng, np.float32, [(sgd.PARALLEL_MIN_SIZE + 3,), (7, 9)], steps=3)
    for kwargs in (SGD_OPTIONS[2], SGD_OPTIONS[3], SGD_OPTIONS[5]):
        ref, got = _sgd_run("numpy", w0, grads, kwargs), _sgd_run("cpu", w0, grads, kwargs)
        for a, b in zip(ref[0] + ref[1], got[0] + got[1]):
            np.testing.assert_array_equal(b, a)


def test_sgd_cpu_buffer_edge_cases(rng):
    """The cpu update takes what the numpy one takes: a float64 gradient for float32 weights (rounded
    first), a non-contiguous gradient, a read-only loaded momentum buffer; and resumes bit for bit."""
    from minirc.backend import use_backend

    w = rng.standard_normal((6, 4)).astype(np.float32)
    g64 = rng.standard_normal((4, 6)).T  # float64, F-ordered
    out = {}
    for backend in ("numpy", "cpu"):
        p = Parameter(w.copy())
        opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-3)
        with use_backend(backend):
            p.grad = g64
            opt.step()
            saved = opt.state_dict()
            buf = saved["state"][0]["momentum_buffer"]
            buf.flags.writeable = False
            resumed = SGD([p], lr=0.1)
            resumed.load_state_dict(saved)
            p.grad = g64[::-1]
            resumed.step()
        out[backend] = (p.data.copy(), resumed.state_dict()["state"][0]["momentum_buffer"])
    np.testing.assert_array_equal(out["cpu"][0], out["numpy"][0])
    np.testing.assert_array_equal(out["cpu"][1], out["numpy"][1])
    assert out["cpu"][0].dtype == np.float32


# ---- schedules ------------------------------------------------------------------------------------
def _lrs(scheduler, n):
    out = []
    for _ in range(n):
        out.append(scheduler.get_last_lr()[0])
        scheduler.step()
    return out


def test_warmup_multistep_values():
    opt = SGD(params64(), lr=0.02)
    lrs = _lrs(WarmupMultiStepLR(opt, milestones=[8, 11], gamma=0.1, warmup_iters=5, warmup_factor=0.001), 13)
    # factor(it) = 0.001 (1 - it/5) + it/5 during warm-up; x0.1 from iteration 8 on, x0.01 from 11 on
    expected = [0.02 * (0.001 * (1 - i / 5) + i / 5) for i in range(5)] + [0.02] * 3 + [0.002] * 3 + [0.0002] * 2
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs[0] == pytest.approx(2e-5) and lrs[1] == pytest.approx(0.004016)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0002)


def test_warmup_and_milestone_overlap():
    opt = SGD(params64(), lr=1.0)
    lrs = _lrs(WarmupMultiStepLR(opt, milestones=[2], warmup_iters=4, warmup_factor=0.0), 5)
    np.testing.assert_allclose(lrs, [0, 0.25, 0.05, 0.075, 0.1])  # both factors multiply


def test_linear_warmup_and_multistep_alone():
    opt = SGD(params64(), lr=1.0)
    np.testing.assert_allclose(_lrs(LinearWarmup(opt, warmup_iters=2, warmup_factor=0.5), 4), [0.5, 0.75, 1, 1])
    opt = SGD(params64(), lr=1.0)
    np.testing.assert_allclose(_lrs(MultiStepLR(opt, [1, 3], gamma=0.5), 5), [1, 0.5, 0.5, 0.25, 0.25])


def test_scheduler_state_dict_round_trip():
    opt = SGD(params64(), lr=0.1, momentum=0.9)
    sched = WarmupMultiStepLR(opt, [6], warmup_iters=4)
    _lrs(sched, 5)
    saved_opt, saved_sched = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
    rest = _lrs(sched, 4)
    opt2 = SGD(params64(), lr=0.1, momentum=0.9)
    sched2 = WarmupMultiStepLR(opt2, [100], warmup_iters=1)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert _lrs(sched2, 4) == rest
    with pytest.raises(ValueError, match="state_dict: unexpected keys"):
        sched2.load_state_dict({"bogus": 1})


def test_schedule_errors():
    opt = SGD(params64(), lr=0.1)
    with pytest.raises(ValueError, match="milestones: expected an increasing list"):
        WarmupMultiStepLR(opt, [5, 3])
    with pytest.raises(TypeError, match="milestones: expected non-negative ints"):
        MultiStepLR(opt, [1.5])
    with pytest.raises(ValueError, match="warmup_factor: expected a number in"):
        LinearWarmup(opt, warmup_factor=2.0)
    with pytest.raises(TypeError, match="optimizer: expected an optimizer"):
        MultiStepLR(object(), [1])


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    for ours_cls, ref_cls, kw, ref_kw in [
            (MultiStepLR, torch.optim.lr_scheduler.MultiStepLR, dict(milestones=[3, 7], gamma=0.1),
             dict(milestones=[3, 7], gamma=0.1)),
            (LinearWarmup, torch.optim.lr_scheduler.LinearLR, dict(warmup_iters=5, warmup_factor=0.001),
             dict(start_factor=0.001, total_iters=5))]:
        ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
        ref = ref_cls(ref_opt, **ref_kw)
        expected = []
        for _ in range(10):
            expected.append(ref.get_last_lr()[0])
            ref_opt.step()
            ref.step()
        np.testing.assert_allclose(_lrs(ours_cls(SGD(params64(), lr=0.02), **kw), 10), expected, rtol=1e-9)


@pytest.mark.cuda
@pytest.mark.parametrize("options", [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    dict(lr=0.05, momentum=0.8, dampening=0.3),
])
def test_sgd_on_device_arrays_equals_the_host_update(options, rng):
    """Same update, same roundings: the CUDA kernel reproduces the host's float32 steps bit for bit."""
    from minirc.backend import cuda_available
    from minirc.cuda_utils import is_device_array, to_device, to_host

    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    w0 = rng.standard_normal((3, 5)).astype(np.float32)
    grads = [rng.standard_normal((3, 5)).astype(np.float32) for _ in range(3)]
    host, dev = Parameter(w0.copy()), Parameter(to_device(w0))
    opt_host, opt_dev = SGD([host], **options), SGD([dev], **options)
    for g in grads:
        host.grad, dev.grad = g, to_device(g)
        opt_host.step()
        opt_dev.step()
        assert is_device_array(dev.data)
        np.testing.assert_array_equal(to_host(dev.data), host.data)
    if options.get("momentum"):
        assert is_device_array(opt_dev.state[id(dev)]["momentum_buffer"])
        saved = opt_dev.state_dict()  # host copies, loadable into a host optimizer
        np.testing.assert_array_equal(saved["state"][0]["momentum_buffer"], opt_host.state[id(host)]["momentum_buffer"])
    opt_dev.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(to_host(dev.grad), 0)


def test_schedule_base_cannot_be_instantiated_without_factor():
    from minirc.optim.lr_scheduler import _Schedule

    class NoFactor(_Schedule):
        pass

    with pytest.raises(TypeError, match="abstract"):
        NoFactor(object())
