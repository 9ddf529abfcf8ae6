"""mkdocs hook: copy MathJax into the built site so notebook math renders offline.

mkdocs-jupyter renders a notebook's LaTeX with MathJax 2, which it would load from a CDN. The
jupyter-server-mathjax package (the ``docs`` extra) ships MathJax 2.7 with the TeX input, the
HTML-CSS output and the STIX-Web fonts; this hook copies those files to ``site/assets/mathjax``
(``custom_mathjax_url`` in mkdocs.yml points there) and adds a local configuration that selects
the STIX-Web fonts, the only ones the package ships.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

MATHJAX_PARTS = ("MathJax.js", "config", "extensions", "jax", "fonts", "localization/en")
# loaded by the `local/minirc` entry of custom_mathjax_url's config list
LOCAL_CONFIG = """MathJax.Hub.Config({
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/minirc.js");
"""


def mathjax_static() -> Path:
    """The static folder of jupyter-server-mathjax (found without importing jupyter_server)."""
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("jupyter-server-mathjax is not installed: install the docs extra "
                           "(pip install -e '.[docs]', or run bash scripts/docs.sh)")
    return Path(list(spec.submodule_search_locations)[0]) / "static"


def on_post_build(config, **kwargs):
    src = mathjax_static()
    dst = Path(config["site_dir"]) / "assets" / "mathjax"
    for part in MATHJAX_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, dst / part, dirs_exist_ok=True)
        else:
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / part, dst / part)
    (dst / "config" / "local").mkdir(parents=True, exist_ok=True)
    (dst / "config" / "local" / "minirc.js").write_text(LOCAL_CONFIG)
