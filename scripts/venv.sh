# Sourced by demo.sh and test.sh: create (or reuse) ./.venv and install minirc into it.
#
# MINIRC_EXTRAS names the setup.cfg extras the caller needs, comma-separated (test.sh: "test";
# demo.sh: none, the runtime packages are enough). A stamp file records the hash of setup.cfg and
# the extras installed with it; pip runs again only when setup.cfg changed or an extra is missing,
# so running the demo after the tests installs nothing.
#
# --no-compile: pip would otherwise byte-compile every module of scipy, matplotlib, numba, ...
# (about 20 s of the demo's 10-minute allowance on the 2-core machine); Python compiles the few
# modules that are imported on first use instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$(command -v python3.11 || command -v python3)"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[minirc] creating virtual environment in $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.minirc-installed"
HASH="$(sha256sum "$ROOT/setup.cfg" | cut -d' ' -f1)"
WANT_EXTRAS="${MINIRC_EXTRAS-test}"
stamp_hash="" have_extras=""
[[ -f "$STAMP" ]] && read -r stamp_hash have_extras < "$STAMP" || true
[[ "$stamp_hash" == "$HASH" ]] || have_extras=""
missing=0
for extra in ${WANT_EXTRAS//,/ }; do
  [[ ",$have_extras," == *",$extra,"* ]] || missing=1
done
if [[ "$stamp_hash" != "$HASH" || $missing == 1 ]]; then
  # keep what is installed and add what is asked for: the demo after the tests needs nothing new
  all_extras="$(echo "$have_extras,$WANT_EXTRAS" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
  target="$ROOT${all_extras:+[$all_extras]}"
  echo "[minirc] installing minirc${all_extras:+[$all_extras]} (the first run takes a minute)"
  "$VENV/bin/python" -m pip install --quiet --no-compile --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --no-compile -e "$target"
  echo "$HASH $all_extras" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
