#!/usr/bin/env bash
# The whole test suite: unit tests (CUDA kernels under Numba's simulator unless MINIRC_TEST_GPU=1)
# and every notebook executed in fast mode. Extra arguments go to pytest.
source "$(dirname "$0")/venv.sh"
export MINIRC_FAST=1
set +e
targets=(tests)
compgen -G "notebooks/*.ipynb" > /dev/null && targets+=(notebooks)
python -m pytest "${targets[@]}" --nbmake --nbmake-timeout=600 -p no:cacheprovider "$@"
rc=$?
# pytest's exit 5 means no test ran: that is a failure here, and so is every other non-zero code.
exit $rc
