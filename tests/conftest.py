"""Test-session set-up.

CUDA kernels run under Numba's simulator unless MINIRC_TEST_GPU=1 says a real GPU is to be used.
The variable must be set before numba.cuda is first imported, hence here, before minirc.
Keep simulated shapes tiny: the simulator runs every CUDA thread as Python.
"""
import os

if os.environ.get("MINIRC_TEST_GPU", "0") in ("", "0"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from minirc.backend import cuda_available  # noqa: E402

ALL_BACKENDS = ("numpy", "cpu", "cuda")


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Each backend in turn; 'cuda' is marked and skipped where neither GPU nor simulator exists."""
    if request.param == "cuda" and not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    return request.param


def pytest_collection_modifyitems(items):
    for item in items:
        if "backend" in getattr(item, "fixturenames", ()) and "[cuda" in item.nodeid:
            item.add_marker(pytest.mark.cuda)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
