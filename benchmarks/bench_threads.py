"""Why minirc sets its own thread defaults (minirc/_threads.py): time the same work under each setting.

Runs conv2d forward+backward on small, model-like shapes in fresh subprocesses (thread settings are
read at import) and prints each setting's time relative to minirc's defaults, all from one run.

    .venv/bin/python benchmarks/bench_threads.py
"""
import json
import os
import subprocess
import sys

SETTINGS = {
    "minirc default (workqueue, 1 BLAS thread)": {},
    "OpenMP layer, 1 BLAS thread": {"NUMBA_THREADING_LAYER": "omp"},
    "workqueue, 2 BLAS threads": {"MINIRC_BLAS_THREADS": "2"},
    "OpenMP layer, 2 BLAS threads": {"NUMBA_THREADING_LAYER": "omp", "MINIRC_BLAS_THREADS": "2"},
}

WORK = r"""
import json, time, numpy as np, minirc
from minirc.ops.conv2d import conv2d_forward, conv2d_backward
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
run()
times = []
for _ in range(7):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(json.dumps(sorted(times)[3]))
"""


def main():
    results = {}
    for name, env in SETTINGS.items():
        full = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "MINIRC_BLAS_THREADS")}
        full.update(env)
        out = subprocess.run([sys.executable, "-c", WORK], env=full, capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results["minirc default (workqueue, 1 BLAS thread)"]
    print(f"{'setting':45s} {'ms':>8s} {'x default':>10s}")
    for name, t in results.items():
        print(f"{name:45s} {t * 1e3:8.2f} {t / base:10.2f}")


if __name__ == "__main__":
    main()
