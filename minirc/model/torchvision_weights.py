"""torchvision's COCO-trained Mask R-CNN weights files: their preset, their BatchNorm eps, their hash.

torchvision publishes two ResNet-50-FPN Mask R-CNN files (``MaskRCNN_ResNet50_FPN_Weights.COCO_V1`` and
``MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1``; see :data:`WEIGHTS` and docs/torchvision_weights.md).
Two things decide whether minirc computes with such a file what torchvision computes:

* the layout -- the keys tell it (a v1 file does not load into the v2 preset: missing keys);
* the backbone's BatchNorm eps -- the keys do **not** tell it. torchvision builds ``maskrcnn_resnet50_fpn``
  with ``FrozenBatchNorm2d`` and, for the COCO_V1 weights only, sets every eps to 0.0
  (``overwrite_eps(model, 0.0)``, pytorch/vision#2940: the file was trained when FrozenBatchNorm2d had
  no eps, before pytorch/vision#2933 made its default 1e-5); the same file run with eps 1e-5 gives
  other numbers, with no error. The v2 file was trained with ``nn.BatchNorm2d`` (eps 1e-5).

:func:`check_batch_norm` states which eps a model uses and why; for a file of :data:`WEIGHTS` (known by
its name) a model with another eps is a ValueError. :func:`check_hash` applies torch hub's rule: a
file named ``<name>-<hex>.<ext>`` must have a SHA-256 digest starting with ``<hex>``.
``from_torchvision_weights(path)`` builds the file's preset, checks both and loads it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass

LOG = logging.getLogger(__name__)

# torch.hub's HASH_REGEX (torch/hub.py, load_state_dict_from_url with check_hash=True): the hex
# digits between a '-' and a '.' of the file name are a prefix of the file's SHA-256 hex digest
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")
_CHUNK = 1 << 20  # bytes read at a time while hashing (a weights file is ~170 MB)
BN_EPS = 1e-5  # torch's BatchNorm2d default, minirc's BatchNorm2d and every head norm


@dataclass(frozen=True)
class WeightsFile:
    """One of torchvision's published weights files (the values of its ``Weights`` enum ``meta``)."""
    url: str  # where torchvision downloads it from (download it yourself: minirc fetches nothing)
    torchvision: str  # the torchvision builder and weights enum value
    preset: str  # the minirc preset whose layout and keys it fills (minirc.model.config.PRESETS)
    backbone_norm: str  # what torchvision runs the ResNet body's norms as
    eps: float  # that norm's eps with these weights
    why: str  # where that eps comes from
    num_params: int  # parameters, 91 classes
    box_ap: float  # COCO val2017 box AP torchvision reports for it
    mask_ap: float  # and mask AP


WEIGHTS = {
    "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth": WeightsFile(
        url="https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
        torchvision="maskrcnn_resnet50_fpn(weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1)",
        preset="torchvision_resnet50", backbone_norm="FrozenBatchNorm2d", eps=0.0,
        why="torchvision calls overwrite_eps(model, 0.0) for these weights: they were trained when its "
            "FrozenBatchNorm2d had no eps (pytorch/vision#2933 made the default 1e-5, #2940 keeps 0 here)",
        num_params=44_401_393, box_ap=37.9, mask_ap=34.6),
    "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth": WeightsFile(
        url="https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
        torchvision="maskrcnn_resnet50_fpn_v2(weights=MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1)",
        preset="torchvision_resnet50_v2", backbone_norm="BatchNorm2d", eps=BN_EPS,
        why="maskrcnn_resnet50_fpn_v2 builds its body with nn.BatchNorm2d (eps 1e-5, torch's default), "
            "the layers these weights were trained with",
        num_params=46_359_409, box_ap=47.4, mask_ap=41.8),
}


def known_weights(path) -> WeightsFile | None:
    """The :data:`WEIGHTS` entry of a file, by its base name (torch hub's cache keeps the name), or None."""
    return WEIGHTS.get(os.path.basename(os.fspath(path)))


def hash_prefix(path) -> str | None:
    """The SHA-256 prefix a file's name carries (``...-bf2d0c1e.pth`` -> ``"bf2d0c1e"``), or None."""
    m = HASH_REGEX.search(os.path.basename(os.fspath(path)))
    return m.group(1) if m and m.group(1) else None


def sha256(path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_hash(path) -> str | None:
    """torch hub's check: the file's SHA-256 must start with the hex digits in its name.

    Returns the checked prefix, or None when the name carries none (nothing to check). Raises
    FileNotFoundError for a missing file and ValueError (naming the file, both digests) on a mismatch:
    a download cut short or a damaged file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights: no file {path!r}")
    prefix = hash_prefix(path)
    if prefix is None:
        return None
    digest = sha256(path)
    if not digest.startswith(prefix):
        raise ValueError(f"weights: {path!r}: its SHA-256 starts with {digest[:len(prefix)]}, its name says "
                         f"{prefix} (torch hub names a file <name>-<first digits of its SHA-256>.pth): the file "
                         f"is incomplete or damaged; download it again")
    return prefix


def model_batch_norm(config) -> tuple:
    """(layer name, eps) of the ResNet body's norms in a model built from ``config``."""
    if config.backbone.norm == "bn":
        return "BatchNorm2d", BN_EPS
    return "FrozenBatchNorm2d", float(config.backbone.frozen_bn_eps)


def check_batch_norm(config, path=None) -> str:
    """Which BatchNorm eps a model of ``config`` runs the weights in ``path`` with, and why (one line).

    For a file of :data:`WEIGHTS` a model with another backbone eps is a ValueError that names the
    preset to use; for any other file (or a state dict, ``path=None``) the eps is the config's and the
    line says so. The FPN and head norms (v2 layout) are BatchNorm2d with eps 1e-5 in both libraries.
    """
    layer, eps = model_batch_norm(config)
    setting = "backbone.norm='bn'" if layer == "BatchNorm2d" else "backbone.frozen_bn_eps"
    entry = known_weights(path) if path is not None else None
    if entry is None:
        source = "a state dict" if path is None else f"{os.path.basename(os.fspath(path))!r}"
        return (f"backbone {layer} eps {eps:g}, from the model's config ({setting}); {source} is not one of "
                f"torchvision's published files, so the eps it was trained with is unknown (torchvision's "
                f"COCO_V1 maskrcnn_resnet50_fpn file needs 0, its v2 file and ImageNet-initialised models 1e-5)")
    if eps != entry.eps:
        raise ValueError(f"weights: {os.path.basename(os.fspath(path))} is {entry.torchvision}, run with "
                         f"{entry.backbone_norm} eps {entry.eps:g} ({entry.why}); the model uses {layer} eps "
                         f"{eps:g}, which changes every feature: build it with the {entry.preset!r} preset")
    return f"backbone {layer} eps {eps:g}: {os.path.basename(os.fspath(path))} is {entry.torchvision}; {entry.why}"


def from_torchvision_weights(path, preset: str | None = None, check_file_hash: bool = True, **preset_kwargs):
    """A :class:`~minirc.model.mask_rcnn.MaskRCNN` in eval mode with the weights of a torchvision ``.pth`` file.

    preset: a name of ``minirc.model.config.PRESETS``; default the one :data:`WEIGHTS` lists for the
    file's name. preset_kwargs go to the preset (``num_classes=...``). Checks the hash in the name
    (:func:`check_hash`) and the BatchNorm eps (:func:`check_batch_norm`) before loading.
    """
    from minirc.model.config import preset as make_preset
    from minirc.model.mask_rcnn import MaskRCNN, load_torchvision_state_dict

    entry = known_weights(path)
    if preset is None:
        if entry is None:
            raise ValueError(f"preset: {os.path.basename(os.fspath(path))!r} is not one of torchvision's files "
                             f"{sorted(WEIGHTS)}: name the preset (e.g. 'torchvision_resnet50')")
        preset = entry.preset
    if check_file_hash:
        check_hash(path)
    model = load_torchvision_state_dict(MaskRCNN(make_preset(preset, **preset_kwargs)), path)
    return model.eval()
