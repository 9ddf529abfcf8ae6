"""Why minirc sets its own thread defaults (minirc/_threads.py): time the same work under each setting.

Runs two workloads in fresh subprocesses (thread settings are read at import) and prints each
setting's time relative to minirc's defaults, all from one run: conv2d forward+backward alone on
small model-like shapes, and a whole training step of the ``shapes_demo`` model (2 images), where
BLAS threads compete with Numba's threads between calls. "split GEMMs" is minirc.ops.split_gemm:
large products cut into bands over our own sleeping threads, each band single-threaded BLAS.

    .venv/bin/python benchmarks/bench_threads.py
"""
import json
import os
import subprocess
import sys

DEFAULT = "minirc default (workqueue, 1 BLAS thread, split GEMMs)"
SETTINGS = {
    DEFAULT: {},
    "workqueue, 1 BLAS thread, GEMMs whole": {"MINIRC_GEMM_THREADS": "1"},
    "OpenMP layer, 1 BLAS thread": {"NUMBA_THREADING_LAYER": "omp"},
    "workqueue, 2 BLAS threads": {"MINIRC_BLAS_THREADS": "2"},
    "OpenMP layer, 2 BLAS threads": {"NUMBA_THREADING_LAYER": "omp", "MINIRC_BLAS_THREADS": "2"},
}

VARIABLES = ("NUMBA_THREADING_LAYER", "MINIRC_BLAS_THREADS", "MINIRC_GEMM_THREADS")

WORK = r"""
import json, numpy as np, minirc
from minirc.ops.conv2d import conv2d_forward, conv2d_backward
from minirc.testing import call_times
rng = np.random.default_rng(0)
shapes = [(2, 16, 16, 32, 3), (2, 32, 32, 16, 3), (2, 64, 64, 32, 3), (2, 64, 64, 32, 1)]
cases = []
for n, c, o, h, k in shapes:
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((o, c, k, k)).astype(np.float32)
    cases.append((x, w, k // 2))
def run():
    for x, w, p in cases:
        y = conv2d_forward(x, w, None, 1, p, 1)
        conv2d_backward(y, x, w, 1, p, 1)
def median_time(fn, repeats=5):
    return sorted(call_times(fn, repeats))[repeats // 2]

from minirc.model import MaskRCNN, shapes_demo
from minirc.data import ShapesDataset
from minirc.optim import SGD
minirc.random.manual_seed(0)
model = MaskRCNN(shapes_demo()); model.train()
images, targets = zip(*[ShapesDataset(num_images=2, seed=0)[i] for i in range(2)])
opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
def step():
    losses = model(list(images), list(targets))
    total = sum(losses.values(), minirc.Tensor(np.float32(0)))
    opt.zero_grad(); total.backward(); opt.step()
print(json.dumps([median_time(run), median_time(step)]))
"""


def main():
    results = {}
    for name, env in SETTINGS.items():
        full = {k: v for k, v in os.environ.items() if k not in VARIABLES}
        full.update(env)
        out = subprocess.run([sys.executable, "-c", WORK], env=full, capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results[DEFAULT]
    print(f"{'setting':45s} {'conv ms':>9s} {'x default':>10s} {'step ms':>9s} {'x default':>10s}")
    for name, (conv, step) in results.items():
        print(f"{name:45s} {conv * 1e3:9.2f} {conv / base[0]:10.2f} {step * 1e3:9.1f} {step / base[1]:10.2f}")


if __name__ == "__main__":
    main()
