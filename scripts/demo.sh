#!/usr/bin/env bash
# The main job: train a small Mask R-CNN on the synthetic shapes data, evaluate it on held-out
# images and write metrics.json plus figures into runs/demo (or the --out you pass).
# the runtime packages are enough here (none of the test extras); see venv.sh
# MINIRC_T0: when the command started, so the demo can report the environment phase (venv + imports)
export MINIRC_T0="${MINIRC_T0:-$(date +%s.%N)}"
export MINIRC_EXTRAS="${MINIRC_EXTRAS-}"
source "$(dirname "$0")/venv.sh"
export MPLBACKEND=Agg
exec python -m minirc demo --out runs/demo "$@"
