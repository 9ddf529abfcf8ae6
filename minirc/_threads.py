"""Thread settings for minirc's CPU kernels, applied once at ``import minirc``.

minirc parallelises with Numba (``prange``); its convolutions and linear layers call BLAS on many
small matrices. Two pools of threads fighting over the same cores costs more than it gives:
OpenBLAS's own threads spin between calls, and on this project's 2-core machines a 16-channel 3x3
conv ran 10x faster with one BLAS thread (docs/performance.md, ``benchmarks/bench_threads.py``).

* ``NUMBA_THREADING_LAYER`` defaults to ``workqueue`` (lowest cost per launch for our many small
  kernels: 3x faster per training step than OpenMP when cores are shared);
* BLAS is limited to ``MINIRC_BLAS_THREADS`` threads (default 1) through ``threadpoolctl``;
  large products still use the other cores: :mod:`minirc.ops.split_gemm` cuts them into bands,
  one single-threaded BLAS call per band on our own (sleeping, not spinning) threads,
  ``MINIRC_GEMM_THREADS`` of them.

Set either environment variable yourself to choose differently.
"""
from __future__ import annotations

import os
import sys

BLAS_THREADS_VAR = "MINIRC_BLAS_THREADS"


def configure() -> None:
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    if "numba" in sys.modules:  # numba read its config already: set the layer it picks at first launch
        sys.modules["numba"].config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"]
    limit = os.environ.get(BLAS_THREADS_VAR, "1")
    if limit.lower() in ("", "none", "0"):
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional at import time; installed with minirc
        return
    import numpy  # noqa: F401  -- loads OpenBLAS: threadpoolctl limits only libraries already loaded
    threadpool_limits(limits=int(limit), user_api="blas")
