"""minirc/_threads.py: the thread settings that ``import minirc`` applies."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_minirc_first_limits_blas_to_one_thread():
    """In a fresh process that imports minirc before NumPy (``python -m minirc``), OpenBLAS is
    limited too: threadpoolctl only sees libraries already loaded, so configure loads NumPy first."""
    pytest.importorskip("threadpoolctl")
    code = ("import minirc; from threadpoolctl import threadpool_info; "
            "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    env.pop("MINIRC_BLAS_THREADS", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[1]"
