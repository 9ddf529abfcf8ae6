"""A small real data set that needs no download: fluorescence nuclei shipped inside ``stardist``.

The PyPI package ``stardist`` (BSD-3-Clause) bundles one 512x512 fluorescence microscopy image of
cell nuclei and its hand-made **instance label image** (``stardist/data/images/img2d.tif`` and
``mask2d.tif``; 125 nuclei, 25..751 pixels each, median 440). They come from the 2018 Kaggle Data
Science Bowl, stage 1 training set (BBBC038v1; Caicedo et al., "Nucleus segmentation across
imaging experiments: the 2018 Data Science Bowl", Nature Methods 16, 2019), released under CC0.

minirc only reads those two files: it finds the installed package's folder without importing it
(importing stardist would load its compiled extensions and csbdeep) and decodes the TIFFs with
Pillow. Nothing is ever fetched from the network. Install with ``pip install stardist`` (its
dependencies are not needed here: ``pip install --no-deps stardist`` is enough).

The image is cut into square tiles; the last column of tiles is held out for evaluation, the rest
is for training (with the default 128-pixel tiles: 12 training and 4 held-out tiles). A nucleus cut
by a tile border keeps its visible part if that part has at least ``min_area`` pixels.

``NucleiTiles(split)[i] -> (image, target)`` with the API of :class:`minirc.data.ShapesDataset`:
image (3, H, W) float32 in [0, 1] (the grey image repeated in R, G, B; intensities scaled so that
the 1st and 99.8th percentiles of the whole image map to 0 and 1, then clipped), target with
``boxes`` (M, 4) x1y1x2y2 tight around each mask (``x2`` = last column + 1), ``labels`` all 1
("nucleus"), ``masks`` (M, H, W) uint8, ``image_id`` (tile index + 1), ``iscrowd`` zeros,
``area`` = mask pixel count.

:func:`write_nuclei_coco` writes the tiles as COCO files (``minirc data nuclei --out DIR``):
``DIR/images/nuclei_NN.png`` (8-bit grey, NN = image id), ``DIR/train.json`` and ``DIR/val.json``
with one category ``{"id": 1, "name": "nucleus"}`` and RLE segmentations.
"""
from __future__ import annotations

import importlib.util
import numbers
import os

import numpy as np

BACKGROUND = "__background__"
PACKAGE = "stardist"
INSTALL_HINT = ("the real nuclei data ships inside the PyPI package 'stardist': install it with "
                "`pip install stardist` (or `pip install --no-deps stardist`: minirc only reads its "
                "two sample TIFF files)")
SPLITS = ("train", "val", "all")


def nuclei_files() -> tuple:
    """Paths ``(image_tif, label_tif)`` inside the installed stardist package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(INSTALL_HINT)
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data", "images")
    paths = (os.path.join(folder, "img2d.tif"), os.path.join(folder, "mask2d.tif"))
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise ImportError(f"stardist is installed but lacks its sample files {missing}; {INSTALL_HINT}")
    return paths


def available() -> bool:
    """True when the nuclei sample can be loaded here (stardist's files are installed)."""
    try:
        nuclei_files()
    except ImportError:
        return False
    return True


def load_nuclei():
    """The whole sample: ``(image (512, 512) float32 in [0, 1], labels (512, 512) int32)``.

    labels: 0 = background, k > 0 = the pixels of nucleus k (ids need not be contiguous).
    """
    from PIL import Image

    image_path, label_path = nuclei_files()
    with Image.open(image_path) as im:
        raw = np.asarray(im, dtype=np.float32)
    with Image.open(label_path) as im:
        labels = np.asarray(im).astype(np.int32)
    lo, hi = np.percentile(raw, [1.0, 99.8])          # csbdeep's usual normalisation percentiles
    image = np.clip((raw - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return image, labels


def instances_from_labels(labels: np.ndarray, min_area: int = 1):
    """(H, W) instance label image -> ``masks`` (M, H, W) uint8, ``boxes`` (M, 4) float32, ``area`` (M,).

    One instance per non-zero label with at least ``min_area`` pixels, in increasing label order.
    Boxes are tight in continuous coordinates: columns 3..5 give ``x1 = 3, x2 = 6``.
    """
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    ids = ids[counts >= min_area]
    masks = (labels[None] == ids[:, None, None]).astype(np.uint8)
    boxes = np.zeros((len(ids), 4), dtype=np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return masks, boxes, masks.reshape(len(ids), -1).sum(axis=1).astype(np.float32)


class NucleiTiles:
    """Tiles of the stardist nuclei sample: a real instance-segmentation set that trains on a CPU.

    split: "train" (all tile columns but the last), "val" (the last tile column) or "all".
    tile_size: side of the square tiles in pixels (a divisor of 512 is best; the rest is dropped).
    min_area: smallest visible part (pixels) of a nucleus cut by a tile border to keep as an object.
    """

    def __init__(self, split: str = "train", tile_size: int = 128, min_area: int = 20):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if not isinstance(tile_size, numbers.Integral) or not 16 <= tile_size <= 512:
            raise ValueError(f"tile_size: expected an int in [16, 512], got {tile_size!r}")
        if not isinstance(min_area, numbers.Integral) or min_area < 1:
            raise ValueError(f"min_area: expected an int >= 1, got {min_area!r}")
        self.split, self.tile_size, self.min_area = split, int(tile_size), int(min_area)
        self._image, self._labels = load_nuclei()
        rows, cols = self._image.shape[0] // self.tile_size, self._image.shape[1] // self.tile_size
        if cols < 2 and split != "all":
            raise ValueError(f"tile_size: {tile_size} leaves fewer than 2 tile columns to split train/val")
        tiles = [(r, c) for r in range(rows) for c in range(cols)]
        held_out = [t for t in tiles if t[1] == cols - 1]
        self._tiles = {"train": [t for t in tiles if t not in held_out], "val": held_out, "all": tiles}[split]
        self._grid_cols = cols

    label_to_category_id = {1: 1}

    @property
    def class_names(self) -> tuple:
        return (BACKGROUND, "nucleus")

    @property
    def num_classes(self) -> int:
        return 2

    def __len__(self) -> int:
        return len(self._tiles)

    def __getitem__(self, index: int):
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"index: expected an int, got {index!r}")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index: expected 0 <= index < {len(self)}, got {index}")
        r, c = self._tiles[index]
        s = self.tile_size
        window = (slice(r * s, (r + 1) * s), slice(c * s, (c + 1) * s))
        image = np.repeat(self._image[window][None], 3, axis=0)
        masks, boxes, area = instances_from_labels(self._labels[window], self.min_area)
        m = len(boxes)
        target = {"boxes": boxes, "labels": np.ones(m, dtype=np.int64), "masks": masks,
                  "image_id": r * self._grid_cols + c + 1, "iscrowd": np.zeros(m, dtype=np.uint8),
                  "area": area}
        return np.ascontiguousarray(image), target

    def __repr__(self):
        return f"NucleiTiles(split={self.split!r}, tile_size={self.tile_size}, tiles={len(self)})"


def write_nuclei_coco(out, tile_size: int = 128, min_area: int = 20) -> dict:
    """Write the train and val tiles as COCO files under ``out``; return what was written.

    Returns ``{"train": json path, "val": json path, "image_dir": folder, "train_images": n,
    "train_objects": m, "val_images": ..., "val_objects": ...}``. The PNGs hold the normalised image
    rounded to 8 bits, so reading them back gives the tiles to within 0.5 / 255.
    """
    from PIL import Image

    from minirc.evaluation import dataset_to_coco, save_json

    image_dir = os.path.join(os.fspath(out), "images")
    os.makedirs(image_dir, exist_ok=True)
    written = {"image_dir": image_dir}
    for split in ("train", "val"):
        ds = NucleiTiles(split, tile_size=tile_size, min_area=min_area)
        coco = dataset_to_coco(ds)
        for i, info in enumerate(coco["images"]):
            info["file_name"] = f"nuclei_{info['id']:02d}.png"
            grey = (ds[i][0][0] * 255.0 + 0.5).astype(np.uint8)   # R = G = B: one channel is enough
            Image.fromarray(grey).save(os.path.join(image_dir, info["file_name"]))
        written[split] = save_json(coco, os.path.join(os.fspath(out), f"{split}.json"))
        written[f"{split}_images"], written[f"{split}_objects"] = len(coco["images"]), len(coco["annotations"])
    return written
