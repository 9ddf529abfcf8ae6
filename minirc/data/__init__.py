"""Data sets and loaders: synthetic shapes (the built-in default, no download), batching, augmentation."""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "ShapesDataset": ".shapes", "SHAPES": ".shapes", "masks_to_boxes": ".shapes",
    "DataLoader": ".loader", "RandomHorizontalFlip": ".loader", "Compose": ".loader",
    "COCODataset": ".coco", "read_image": ".coco", "NucleiTiles": ".real", "load_nuclei": ".real",
})
