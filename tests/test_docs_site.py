"""The documentation site builds in strict mode, offline, with every notebook's figures.

Skipped unless the ``docs`` extra is installed (``bash scripts/docs.sh`` installs it). The build
takes about 20-40 s (ten notebooks converted), hence ``slow``.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocs_jupyter")
pytest.importorskip("jupyter_server_mathjax")

ROOT = Path(__file__).resolve().parents[1]
# a script, image, stylesheet or font the browser would fetch from another host (plain <a> links
# to other sites are fine: nothing is requested until the reader clicks)
REMOTE = re.compile(r"""\ssrc\s*=\s*["'](?:https?:)?//|<link\s[^>]*href\s*=\s*["'](?:https?:)?//"""
                    r"""|url\(\s*["']?(?:https?:)?//|@import\s+["']?(?:https?:)?//""")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _png_outputs(notebook: Path) -> int:
    cells = json.loads(notebook.read_text())["cells"]
    return sum("image/png" in out.get("data", {}) for c in cells if c["cell_type"] == "code"
               for out in c.get("outputs", []))


def test_every_notebook_page_shows_its_figures(site):
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for nb in notebooks:
        page = site / "notebooks" / f"{nb.stem}.html"
        assert page.is_file(), f"{page.name} missing from the site"
        shown = page.read_text().count('src="data:image/png')
        assert shown == _png_outputs(nb), f"{nb.name}: {shown} figures on the page"


def test_only_ipynb_notebooks_are_published(site):
    assert not list((site / "notebooks").glob("*.py")), "jupytext twins must not be copied into the site"


def test_no_request_leaves_the_site(site):
    offenders = []
    for path in site.rglob("*"):
        if path.suffix in (".html", ".css") and REMOTE.search(path.read_text(errors="replace")):
            offenders.append(str(path.relative_to(site)))
    assert not offenders, f"pages loading from another host: {offenders[:5]}"


def test_math_renders_from_the_local_mathjax(site):
    page = (site / "notebooks" / "01_conv_layers.html").read_text()
    src = re.search(r'<script src="([^"]*MathJax\.js[^"]*)"', page).group(1)
    assert not src.startswith(("http:", "https:", "//"))
    assert (site / "notebooks" / src.split("?")[0]).resolve().is_file()
    assert (site / "assets" / "mathjax" / "config" / "local" / "minirc.js").is_file()
