"""docs/io.md's torchvision builders, run as written: every preset's export loads into its torchvision
twin with strict=True and gives the same detections (skipped without torch and torchvision)."""
import os
import re

import numpy as np
import pytest

from minirc.io import save_pth
from minirc.model import config as C
from randomised_models import randomised

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "io.md")


def _doc_code() -> dict:
    """The first Python block of the section 'Rebuilding a preset in torchvision', executed."""
    with open(DOC) as f:
        text = f.read()
    section = text.split("## Rebuilding a preset in torchvision", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "docs/io.md", "exec"), namespace)
    return namespace


def _randomised(cfg, seed):
    return randomised(cfg, seed, noise=0.05).eval()


def _loaded(ref, model, path):
    save_pth(model.torchvision_state_dict(), path)
    ref.load_state_dict(torch.load(path, weights_only=True), strict=True)
    for k, v in ref.state_dict().items():
        assert v.numpy().tobytes() == model.state_dict()[k].astype(v.numpy().dtype).tobytes(), k
    return ref.eval()


@pytest.mark.parametrize("preset,call", [("tiny", ("torchvision_tiny", {})),
                                         ("shapes_demo", ("torchvision_shapes_demo", {})),
                                         ("shapes_stride16", ("torchvision_shapes_demo", {"pool_level": 4})),
                                         ("shapes_stride32", ("torchvision_shapes_demo", {"pool_level": 5}))])
def test_small_presets_give_torchvisions_detections(preset, call, tmp_path):
    build = _doc_code()[call[0]]
    model = _randomised(C.override(C.preset(preset, num_classes=3), {"roi_heads.score_thresh": 0.0}), 0)
    ref = build(3, **call[1])
    ref.roi_heads.score_thresh = 0.0
    ref = _loaded(ref, model, tmp_path / f"{preset}.pth")
    image = np.random.default_rng(0).random((3, 100, 120)).astype(np.float32)
    with torch.no_grad():
        want = {k: v.numpy() for k, v in ref([torch.from_numpy(image)])[0].items()}
    got = model([image])[0]
    assert len(want["boxes"]) > 5 and len(got["boxes"]) == len(want["boxes"])
    np.testing.assert_array_equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-2)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
    np.testing.assert_allclose(got["masks"], want["masks"][:, 0], atol=1e-2)   # torchvision: (D, 1, H, W)


def test_resnet50_preset_loads_strictly(tmp_path):
    """torchvision_resnet50: every key, shape and value of the export lands in torchvision's model."""
    build = _doc_code()["torchvision_resnet50"]
    model = _randomised(C.torchvision_resnet50(num_classes=5), 1)
    ref = _loaded(build(5), model, tmp_path / "r50.pth")
    assert ref.backbone.body.bn1.eps == 0.0 and len(ref.state_dict()) == len(model.state_dict())
