#!/usr/bin/env bash
# The documentation site: docs/*.md and the notebooks (their committed outputs, not re-executed),
# built by mkdocs in strict mode (a broken link or a missing page fails) into site/.
# Open site/index.html in a browser; the site needs no network (no web fonts, no CDN). Search
# works when it is served: python -m http.server -d site, then http://localhost:8000.
# Extra arguments go to `mkdocs build` (e.g. --site-dir /tmp/site).
export MINIRC_EXTRAS="${MINIRC_EXTRAS-docs}"
source "$(dirname "$0")/venv.sh"
export NO_MKDOCS_2_WARNING=1  # mkdocs-material's banner about its successor
exec python -m mkdocs build --strict "$@"
