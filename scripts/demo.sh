#!/usr/bin/env bash
# The main job: train a small Mask R-CNN on the synthetic shapes data, evaluate it on held-out
# images and write metrics.json plus figures into runs/demo (or the --out you pass).
source "$(dirname "$0")/venv.sh"
export MPLBACKEND=Agg
exec python -m minirc demo --out runs/demo "$@"
