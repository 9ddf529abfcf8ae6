"""The whole Mask R-CNN on the "cuda" backend with its data on the (simulated) GPU.

One SGD step and one inference on a micro model (32 x 32 image, 4 channels everywhere) run once on
"cpu" and once on "cuda" from the same weights and the same sampler seed. The cuda run must give the
cpu run's losses, gradients, updated weights and detections, with every parameter, gradient,
momentum buffer and loss a device array; and it must copy data between host and device only at the
edges listed in docs/cuda_backend.md (counted by wrapping the simulator's copy functions).

Speed: Numba's simulator starts one Python thread per CUDA thread, so the model step would take
minutes. :func:`_fast_simulator` runs the blocks of barrier-free kernels (all but the GEMM) thread
after thread in the calling thread -- a legal CUDA schedule, since those kernels never wait for each
other -- and shrinks the GEMM's tile to 1 x 1 (its summation order does not depend on the tile;
tests/ops/test_matmul.py covers the 16 x 16 tiling). The module then takes ~30 s on 2 cores.
"""
import collections
import importlib
import threading
import traceback

import numpy as np
import pytest

import minirc
import minirc.random
from minirc.backend import cuda_available, cuda_simulated
from minirc.cuda_utils import is_device_array, to_host
from minirc.model import config as C
from minirc.model.mask_rcnn import MaskRCNN
from minirc.optim import SGD

pytestmark = pytest.mark.cuda

MICRO = {
    "transform.min_size": (32,), "transform.max_size": 32,
    "backbone.widths": (4, 4, 4, 4), "backbone.stem_channels": 4, "backbone.norm": "frozen_bn",
    "fpn.out_channels": 4,
    "rpn.pre_nms_top_n_train": 20, "rpn.post_nms_top_n_train": 10,
    "rpn.pre_nms_top_n_test": 20, "rpn.post_nms_top_n_test": 10, "rpn.batch_size_per_image": 16,
    "roi_heads.batch_size_per_image": 8, "roi_heads.detections_per_img": 5, "roi_heads.score_thresh": 0.0,
    "box_head.pool_size": 2, "box_head.sampling_ratio": 1, "box_head.representation_size": 8,
    "mask_head.pool_size": 2, "mask_head.sampling_ratio": 1, "mask_head.layers": (4,), "mask_head.dim_reduced": 4,
}
LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


# ----- a faster simulator ----------------------------------------------------------------------

def _run_block_in_caller(manager, grid_point, *args):
    """Run every thread of one block in order, in the calling thread (kernels without barriers)."""
    from numba.cuda.simulator.kernelapi import Dim3

    me = threading.current_thread()  # the simulator's cuda.threadIdx/blockIdx read this object
    names = ("threadIdx", "blockIdx", "syncthreads")
    saved = {k: me.__dict__[k] for k in names if k in me.__dict__}
    me.blockIdx, me.syncthreads = Dim3(*grid_point), (lambda: None)
    try:
        for point in np.ndindex(*manager._block_dim):
            me.threadIdx = Dim3(*point)
            manager._f(*args)
    finally:
        for k in names:
            me.__dict__.pop(k, None)
        me.__dict__.update(saved)


@pytest.fixture(scope="module")
def _fast_simulator():
    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    if not cuda_simulated():  # a real GPU needs no help
        yield
        return
    import numba.cuda.simulator.kernel as sim

    matmul = importlib.import_module("minirc.ops.matmul")  # the module, not the function it exports
    original_run, original_tile = sim.BlockManager.run, matmul.TILE

    def run(manager, grid_point, *args):
        one_thread = int(np.prod(manager._block_dim)) == 1
        if "syncthreads" in manager._f.__code__.co_names and not one_thread:
            return original_run(manager, grid_point, *args)
        return _run_block_in_caller(manager, grid_point, *args)

    sim.BlockManager.run, matmul.TILE = run, 1
    try:
        yield
    finally:
        sim.BlockManager.run, matmul.TILE = original_run, original_tile


# ----- counting host <-> device copies (simulator only) -------------------------------------------

class CopyLog:
    """Counts copies by phase and by the minirc file that asked for them.

    d2h: device -> host (``copy_to_host``); h2d: host -> device (``cuda.to_device``); implicit: NumPy
    arrays passed straight to a kernel (Numba copies those in *and back out* around the launch);
    numpy_view: a device array read through NumPy's array protocol (works only in the simulator).
    """

    def __init__(self):
        self.phase = None
        self.counts = collections.Counter()  # (phase, kind, file)

    def note(self, kind):
        if self.phase is not None:
            self.counts[(self.phase, kind, self._site())] += 1

    @staticmethod
    def _site():
        """The innermost minirc file behind a copy; a cached constant (shape, index table) is its own site."""
        for frame in reversed(traceback.extract_stack()[:-3]):
            name = frame.filename.split("/minirc/")[-1]
            if "/minirc/" not in frame.filename or name in ("cuda_utils.py", "testing.py"):
                continue
            if name == "cuda_array.py":
                if frame.name == "constant":
                    return "cuda_array.py:constant"
                continue  # a helper: the caller asked for the copy
            return name
        return "?"

    def files(self, phase, kind):
        return {f for (p, k, f), n in self.counts.items() if p == phase and k == kind and n}

    def total(self, phase, kind):
        return sum(n for (p, k, _), n in self.counts.items() if p == phase and k == kind)

    def table(self) -> str:
        """The copies as a table (``pytest -s -k copies`` prints it; docs/cuda_backend.md quotes it)."""
        rows = [f"{p:10s} {k:10s} {n:4d}  {f}" for (p, k, f), n in sorted(self.counts.items())]
        return "\n".join(["phase      kind       count  requested by", *rows])


@pytest.fixture(scope="module")
def copy_log(_fast_simulator):
    log = CopyLog()
    if not cuda_simulated():
        yield log
        return
    import numba.cuda.simulator.cudadrv.devicearray as devicearray
    import numba.cuda.simulator.kernel as sim
    from numba import cuda

    saved = (devicearray.FakeCUDAArray.copy_to_host, cuda.to_device, devicearray.FakeCUDAArray.__getattr__,
             sim.FakeCUDAKernel.__call__)
    to_host_, to_device_, getattr_, call_ = saved

    def copy_to_host(self, *a, **k):
        log.note("d2h")
        return to_host_(self, *a, **k)

    def to_device(ary, *a, **k):
        log.note("h2d")
        return to_device_(ary, *a, **k)

    def getattr_logged(self, name):
        if name.startswith("__array"):
            log.note("numpy_view")
        return getattr_(self, name)

    def call(kernel, *args):
        if not (kernel._device or sim._kernel_context):
            for a in args:
                if isinstance(a, np.ndarray) and a.ndim > 0:
                    log.note("implicit")
        return call_(kernel, *args)

    (devicearray.FakeCUDAArray.copy_to_host, cuda.to_device, devicearray.FakeCUDAArray.__getattr__,
     sim.FakeCUDAKernel.__call__) = (copy_to_host, to_device, getattr_logged, call)
    try:
        yield log
    finally:
        (devicearray.FakeCUDAArray.copy_to_host, cuda.to_device, devicearray.FakeCUDAArray.__getattr__,
         sim.FakeCUDAKernel.__call__) = saved


# ----- the two runs --------------------------------------------------------------------------------

def _example():
    rng = np.random.default_rng(0)
    image = rng.random((3, 32, 32)).astype(np.float32) * 0.2
    image[:, 8:24, 6:20] += 0.6
    masks = np.zeros((1, 32, 32), np.uint8)
    masks[0, 8:24, 6:20] = 1
    target = {"boxes": np.array([[6, 8, 20, 24]], np.float32), "labels": np.array([1]), "masks": masks}
    return [image], [target]


def _run(backend, log=None):
    """Build the micro model, take one SGD step (momentum, weight decay), then predict."""
    images, targets = _example()
    minirc.random.manual_seed(0)
    model = MaskRCNN(C.override(C.tiny(num_classes=3), MICRO))
    optimizer = SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9,
                    weight_decay=1e-4)
    minirc.random.manual_seed(1)  # the samplers draw the same anchors and RoIs on both backends
    log = log or CopyLog()
    initial = model.state_dict()
    with minirc.use_backend(backend):
        log.phase = "placement"  # the forward would do it too: parameters and buffers go to the GPU once
        model.place_for_backend()
        log.phase = "forward"
        losses = model(images, targets)
        log.phase = "backward"
        total = sum(losses[k] for k in LOSS_KEYS)
        optimizer.zero_grad()
        total.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        log.phase = "step"
        optimizer.step()
        log.phase = "values"
        values = {k: v.item() for k, v in losses.items()}
        log.phase = "eval"
        model.eval()
        detections = model(images)
        log.phase = None
    return dict(model=model, optimizer=optimizer, losses=losses, values=values, grads=grads,
                detections=detections, initial=initial)


@pytest.fixture(scope="module")
def runs(copy_log):
    return _run("cpu"), _run("cuda", copy_log)


# ----- the tests ------------------------------------------------------------------------------------

def test_losses_equal_the_cpu_losses_and_stay_on_the_device(runs):
    cpu, gpu = runs
    assert set(gpu["losses"]) == set(LOSS_KEYS)
    assert all(is_device_array(v.data) for v in gpu["losses"].values())
    for k in LOSS_KEYS:
        assert np.isfinite(cpu["values"][k])
        np.testing.assert_allclose(gpu["values"][k], cpu["values"][k], rtol=1e-4, atol=1e-7, err_msg=k)


def test_gradients_and_updated_weights_equal_the_cpu_ones_on_the_device(runs):
    cpu, gpu = runs
    assert set(gpu["grads"]) == set(cpu["grads"]) and len(cpu["grads"]) > 20
    for name, g in gpu["grads"].items():
        assert is_device_array(g), f"{name}: gradient left the device"
        np.testing.assert_allclose(to_host(g), cpu["grads"][name], rtol=1e-3, atol=1e-6, err_msg=name)
    model = gpu["model"]
    assert all(is_device_array(p.data) for p in model.parameters())
    assert all(is_device_array(b) for b in model.buffers() if b.dtype.kind == "f")
    buffers = [s["momentum_buffer"] for s in gpu["optimizer"].state.values()]
    assert len(buffers) == len(gpu["grads"]) and all(is_device_array(b) for b in buffers)
    expected = cpu["model"].state_dict()
    for key, value in model.state_dict().items():  # host copies of the updated device weights
        np.testing.assert_allclose(value, expected[key], rtol=1e-4, atol=1e-6, err_msg=key)
    moved = {k for k, v in expected.items() if not np.array_equal(v, cpu["initial"][k])}
    assert {k for k, g in cpu["grads"].items() if np.any(g)} <= moved <= set(cpu["grads"])  # a real step


def test_detections_equal_the_cpu_detections(runs):
    cpu, gpu = runs
    for want, got in zip(cpu["detections"], gpu["detections"]):
        assert len(want["boxes"]) > 0 and len(got["boxes"]) == len(want["boxes"])
        np.testing.assert_array_equal(got["labels"], want["labels"])
        for key in ("boxes", "scores", "masks"):
            assert isinstance(got[key], np.ndarray)  # outputs come back to the host
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_back_on_cpu_the_model_moves_to_the_host(runs):
    _, gpu = runs
    model, optimizer = gpu["model"], gpu["optimizer"]
    images, targets = _example()
    with minirc.use_backend("cpu"):
        detections = model(images)  # eval mode still: the placement follows the backend
        assert not any(is_device_array(p.data) for p in model.parameters())
        for want, got in zip(gpu["detections"], detections):
            np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-4, atol=1e-6)
        model.train()
        minirc.random.manual_seed(1)
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()  # device momentum buffers follow their parameters back
    assert all(isinstance(s["momentum_buffer"], np.ndarray) for s in optimizer.state.values())


# Files that may copy device data to the host during a training step: the RPN reads its detached
# objectness and deltas to decode proposals; matching, proposal filtering and mask-target building
# run on host arrays (their kernels copy results back); .item()/.numpy() of the outputs.
DOWNLOAD_EDGES = {"detection/rpn.py", "ops/box_iou.py", "ops/boxes.py", "ops/nms.py", "ops/_roi_sampling.py",
                  "autograd.py"}  # ops/_roi_sampling.py: roi_align's kernel launches


@pytest.mark.skipif(not cuda_simulated(), reason="counts copies through the simulator")
def test_copies_happen_only_at_the_edges(runs, copy_log):
    log = copy_log
    print("\n" + log.table())
    for phase in ("forward", "backward", "step", "eval"):
        assert log.total(phase, "implicit") == 0, "a NumPy array went straight to a kernel (copied in and out)"
        assert log.total(phase, "numpy_view") == 0, "a device array was read as a NumPy array"
    assert log.files("placement", "h2d") == {"nn/module.py"} and log.total("placement", "d2h") == 0
    assert log.files("forward", "d2h") <= DOWNLOAD_EDGES, log.files("forward", "d2h")
    assert log.total("forward", "d2h") <= 10  # 2 RPN outputs + the host stages of one image
    assert log.total("backward", "d2h") == 0, log.files("backward", "d2h")
    assert log.total("step", "d2h") == 0 and log.total("step", "h2d") == 0  # SGD: scalars by value
    assert log.total("values", "d2h") == len(LOSS_KEYS)  # one scalar per loss, at the very end
    # uploads: the image batch, targets, sampled indices, RoIs, index tables -- never a layer's data
    layers = {"model/backbone.py", "model/fpn.py", "nn/layers.py", "nn/module.py", "optim/sgd.py",
              "ops/conv2d.py", "ops/activation.py", "ops/frozen_batch_norm.py", "ops/matmul.py"}
    for phase in ("forward", "backward"):
        assert not log.files(phase, "h2d") & layers, log.files(phase, "h2d")


@pytest.mark.parametrize("loss_type", ["sigmoid", "softmax"])
def test_mask_losses_on_device_logits(loss_type):
    """Both mask losses keep device logits on the device (the softmax's max shift included)."""
    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    from minirc import Tensor
    from minirc.cuda_utils import to_device
    from minirc.model.mask_head import mask_loss

    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    labels, targets = np.array([2, 1]), rng.random((2, 2, 2)).astype(np.float32)
    host, dev = Tensor(logits.copy(), requires_grad=True), Tensor(to_device(logits), requires_grad=True)
    with minirc.use_backend("cuda"):
        want, got = mask_loss(host, labels, targets, loss_type), mask_loss(dev, labels, targets, loss_type)
        want.backward()
        got.backward()
    assert is_device_array(got.data) and is_device_array(dev.grad)
    np.testing.assert_allclose(to_host(got.data), want.numpy(), rtol=1e-5)
    np.testing.assert_allclose(to_host(dev.grad), host.grad, rtol=1e-4, atol=1e-7)
