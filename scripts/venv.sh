# Sourced by demo.sh and test.sh: create (or reuse) ./.venv and install minirc into it.
# Reinstalls only when setup.cfg changed since the last install (a stamp file holds its hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$(command -v python3.11 || command -v python3)"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[minirc] creating virtual environment in $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.minirc-installed"
WANT="$(sha256sum "$ROOT/setup.cfg" | cut -d' ' -f1)-${MINIRC_EXTRAS:-test}"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  echo "[minirc] installing minirc[${MINIRC_EXTRAS:-test}] (first run takes a minute or two)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[${MINIRC_EXTRAS:-test}]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
