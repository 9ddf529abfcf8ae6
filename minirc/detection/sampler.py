"""Balanced sampling of positives and negatives for a loss (Faster R-CNN, Sec. 3.1.3).

An image has ~200k anchors and a handful of objects: a loss over all of them would be swamped by easy
background. Each image instead contributes ``batch_size_per_image`` samples, at most
``positive_fraction`` of them positive, negatives filling whatever positives are missing.

Counting rule (torchvision ``_utils.py::BalancedPositiveNegativeSampler``, detectron2 ``subsample_labels``):
``num_pos = min(#pos, int(batch_size_per_image * positive_fraction))``,
``num_neg = min(#neg, batch_size_per_image - num_pos)``. Positives are labels ``>= 1``, negatives ``== 0``,
anything below 0 is ignored. The subsets are uniform random draws from a seeded NumPy generator,
so the same seed gives the same samples (not the same samples as torch's RNG, which minirc does not copy).
"""
from __future__ import annotations

import numpy as np

from minirc._checks import as_array, number, positive_int


def _default_generator() -> np.random.Generator:
    from minirc.random import generator  # minirc's global seeded generator (minirc.random.manual_seed)

    return generator()


class BalancedPositiveNegativeSampler:
    """``BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)``.

    ``sampler(matched_labels_list, rng=None)`` takes one label array per image (``>= 1`` positive,
    ``0`` negative, ``< 0`` ignored) and returns ``(pos_masks, neg_masks)``: two lists of bool arrays of
    the same lengths. ``rng`` is a ``np.random.Generator``; by default ``minirc.random.generator()``.

    >>> s = BalancedPositiveNegativeSampler(4, 0.25)
    >>> pos, neg = s([np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, -1, -1])], rng=np.random.default_rng(0))
    >>> int(pos[0].sum()), int(neg[0].sum())
    (1, 3)
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        self.batch_size_per_image = positive_int(batch_size_per_image, "batch_size_per_image", minimum=0)
        self.positive_fraction = number(positive_fraction, "positive_fraction", low=0.0, high=1.0)

    def __call__(self, matched_labels_list, rng: np.random.Generator | None = None):
        if not isinstance(matched_labels_list, (list, tuple)):
            raise TypeError("matched_labels_list: expected a list with one label array per image, "
                            f"got {type(matched_labels_list).__name__}")
        if rng is None:
            rng = _default_generator()
        elif not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected a numpy.random.Generator or None, got {type(rng).__name__}")
        pos_masks, neg_masks = [], []
        for i, labels in enumerate(matched_labels_list):
            labels = as_array(labels, f"matched_labels_list[{i}]", ndim=1, allow_device=False)
            pos_mask, neg_mask = self._sample_one(labels, rng)
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks

    def num_samples(self, num_positive: int, num_negative: int) -> tuple[int, int]:
        """How many positives and negatives one image contributes, given how many it has."""
        num_pos = min(num_positive, int(self.batch_size_per_image * self.positive_fraction))
        num_neg = min(num_negative, self.batch_size_per_image - num_pos)  # negatives fill missing positives
        return num_pos, num_neg

    def _sample_one(self, labels: np.ndarray, rng: np.random.Generator):
        positive = np.flatnonzero(labels >= 1)
        negative = np.flatnonzero(labels == 0)
        num_pos, num_neg = self.num_samples(positive.size, negative.size)
        # a random permutation's prefix is a uniform subset without replacement (torch.randperm's role)
        chosen_pos = positive[rng.permutation(positive.size)[:num_pos]]
        chosen_neg = negative[rng.permutation(negative.size)[:num_neg]]
        pos_mask = np.zeros(labels.shape, dtype=bool)
        neg_mask = np.zeros(labels.shape, dtype=bool)
        pos_mask[chosen_pos] = True
        neg_mask[chosen_neg] = True
        return pos_mask, neg_mask

    def __repr__(self):
        return (f"BalancedPositiveNegativeSampler(batch_size_per_image={self.batch_size_per_image}, "
                f"positive_fraction={self.positive_fraction})")
