"""Batches for training: a seeded, resumable :class:`DataLoader` and :class:`RandomHorizontalFlip`.

Determinism without hidden state: the order of epoch ``e`` is ``default_rng([seed, e])``'s
permutation, and the augmentation of the ``k``-th sample of epoch ``e`` draws from
``default_rng([seed, e, k, 1])``. The loader's whole state is therefore ``(epoch, position)``
(``position`` = batches already served in the epoch): save it in a checkpoint, load it, and the
next batch -- images, flips and all -- is the one the uninterrupted run would have seen.

A batch is ``(images, targets)``: a list of (3, H, W) float32 arrays and a list of target dicts,
the input format of torchvision's detection models (images of different sizes are fine: the
model's transform batches them).
"""
from __future__ import annotations

import numpy as np

from minirc._checks import number, positive_int


class RandomHorizontalFlip:
    """Mirror an image and its target left-right with probability ``p``.

    Called as ``transform(image, target, rng)``; returns new arrays (the inputs are not modified).
    Boxes flip in continuous coordinates, ``x1' = W - x2``, ``x2' = W - x1`` (torchvision's
    references/detection/transforms.py convention): pixel column ``j`` covering ``[j, j+1)`` goes to
    column ``W-1-j`` covering ``[W-1-j, W-j)``, so a tight box stays tight.
    """

    def __init__(self, p: float = 0.5):
        self.p = number(p, "p", 0.0, 1.0)

    def __call__(self, image, target, rng):
        if not rng.random() < self.p:
            return image, target
        width = image.shape[-1]
        target = dict(target)
        image = np.ascontiguousarray(image[..., ::-1])
        if "boxes" in target:
            boxes = np.array(target["boxes"], dtype=np.float32, copy=True)
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            target["boxes"] = boxes
        if "masks" in target:
            target["masks"] = np.ascontiguousarray(target["masks"][..., ::-1])
        return image, target

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply transforms one after another, each called as ``t(image, target, rng)``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target, rng):
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target


class DataLoader:
    """Seeded mini-batches of a map-style data set (``len(ds)``, ``ds[i] -> (image, target)``).

    batch_size: images per batch; shuffle: a new permutation per epoch (else 0..N-1 in order);
    seed: seeds the permutations and the augmentation; transform: ``t(image, target, rng)``, e.g.
    :class:`RandomHorizontalFlip`; drop_last: skip an incomplete final batch.

    ``for images, targets in loader`` serves the rest of the current epoch; :meth:`next_batch`
    serves batches forever, rolling over epochs (what a trainer counting iterations wants).
    """

    def __init__(self, dataset, batch_size: int = 2, shuffle: bool = True, seed: int = 0,
                 transform=None, drop_last: bool = False):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"dataset: expected an object with __len__ and __getitem__, got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = positive_int(batch_size, "batch_size")
        self.shuffle = bool(shuffle)
        self.seed = positive_int(seed, "seed", minimum=0)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform: expected a callable t(image, target, rng) or None, got {transform!r}")
        self.transform = transform
        self.drop_last = bool(drop_last)
        if len(self) == 0:
            raise ValueError(f"dataset: {len(dataset)} images make no batch of {batch_size} "
                             f"(drop_last={drop_last})")
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of ``epoch`` in the order they are served."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def next_batch(self):
        """The next ``(images, targets)``, starting a new epoch when the current one is used up."""
        if self.position >= len(self):
            self.epoch += 1
            self.position = 0
        start = self.position * self.batch_size
        indices = self.order(self.epoch)[start:start + self.batch_size]
        images, targets = [], []
        for k, i in enumerate(indices):
            image, target = self.dataset[int(i)]
            if self.transform is not None:
                rng = np.random.default_rng([self.seed, self.epoch, start + k, 1])
                image, target = self.transform(image, target, rng)
            images.append(image)
            targets.append(target)
        self.position += 1
        return images, targets

    def __iter__(self):
        if self.position >= len(self):  # the previous epoch is finished: begin the next one
            self.epoch += 1
            self.position = 0
        while self.position < len(self):
            yield self.next_batch()

    # ---- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self.position), "seed": int(self.seed),
                "batch_size": int(self.batch_size)}

    def load_state_dict(self, state: dict) -> None:
        for key in ("batch_size", "seed"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"state[{key!r}]: the checkpoint's loader used {key}={state[key]}, "
                                 f"this loader has {getattr(self, key)}; resume needs the same value")
        self.epoch = positive_int(state["epoch"], "state['epoch']", minimum=0)
        self.position = positive_int(state["position"], "state['position']", minimum=0)
