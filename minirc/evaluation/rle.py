"""Run-length encoding (RLE) of binary masks, exactly as the COCO format stores them.

A mask of size ``(h, w)`` is read in **column-major** (Fortran) order -- down the first column,
then the second, ... -- and stored as the lengths of its alternating runs, **starting with a run of
zeros** (of length 0 when pixel ``(0, 0)`` is set). So the counts ``[2, 3, 4]`` of a 3x3 mask say:
2 background pixels, 3 foreground, 4 background. The foreground area is the sum of the odd-indexed
counts. This is the convention of the COCO API (``maskApi.c``: ``rleEncode``, ``rleDecode``,
``rleArea``, ``rleToBbox``) and of every COCO JSON file.

Two spellings of one RLE appear in COCO JSON:

* **uncompressed** ``{"size": [h, w], "counts": [2, 3, 4]}`` (a list of ints; crowd annotations);
* **compressed** ``{"size": [h, w], "counts": "23:0"}``: each count (from the 4th on, minus the
  count two places before it -- consecutive runs of one value have similar lengths) is written as
  a signed number in groups of 5 bits, least significant first; each group becomes one character
  ``48 + group (+ 32 when more groups follow)``; the last group's bit 4 is the sign. This is the
  COCO API's ``rleToString`` / ``rleFrString`` ("similar to LEB128 but using 6 bits/char").

Shape shorthand: H W mask height and width; C number of runs. Counts are ``(C,) uint32``.
The public functions take and return COCO dicts; ``encode_counts`` / ``decode_counts`` /
``counts_to_string`` / ``string_to_counts`` are the building blocks. Each hot loop has a readable
NumPy reference (``*_numpy``) and a Numba ``@njit`` kernel that the public functions use; the tests
check the two agree. Masks are binary: any non-zero pixel is foreground.
"""
from __future__ import annotations

import numpy as np
from numba import njit


# ---- counts from a mask -----------------------------------------------------------------------
def encode_counts_numpy(mask: np.ndarray) -> np.ndarray:
    """(H, W) mask -> (C,) uint32 run lengths in column-major order, first run = zeros."""
    flat = np.asarray(mask).ravel(order="F") != 0
    if flat.size == 0:
        return np.zeros(1, dtype=np.uint32)              # the COCO API's RLE of an empty image: [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1   # first index of every run but the first
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds)
    if flat[0]:                                          # the first run must count zeros
        counts = np.concatenate([[0], counts])
    return counts.astype(np.uint32)


@njit(cache=True)
def _encode_counts_kernel(flat):
    out = np.empty(flat.size + 1, dtype=np.uint32)
    k, run, prev = 0, 0, 0
    for j in range(flat.size):
        v = 1 if flat[j] != 0 else 0
        if v != prev:
            out[k] = run
            k += 1
            run, prev = 0, v
        run += 1
    out[k] = run
    return out[:k + 1].copy()


def encode_counts(mask) -> np.ndarray:
    """(H, W) mask (any dtype; non-zero = foreground) -> (C,) uint32 COCO run lengths."""
    mask = _as_mask(mask, "mask")
    flat = np.ascontiguousarray(mask.T).reshape(-1)      # (W, H) C-order = column-major of (H, W)
    if flat.dtype == np.bool_:
        flat = flat.view(np.uint8)
    return _encode_counts_kernel(flat)


# ---- a mask from counts -----------------------------------------------------------------------
def decode_counts(counts, height: int, width: int) -> np.ndarray:
    """(C,) run lengths -> (height, width) uint8 mask of 0/1 (runs alternate 0, 1, 0, ...)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total != height * width:
        raise ValueError(f"counts: the runs add up to {total} pixels, but size [{height}, {width}] "
                         f"has {height * width}")
    values = (np.arange(counts.size) % 2).astype(np.uint8)
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape(width, height).T)   # column-major -> (H, W)


# ---- the compressed string --------------------------------------------------------------------
def counts_to_string_numpy(counts) -> str:
    """Reference of the COCO counts string, one character at a time (see the module docstring)."""
    counts = [int(c) for c in counts]
    chars = []
    for i, x in enumerate(counts):
        if i > 2:                            # delta against the run two places back (same value)
            x -= counts[i - 2]
        more = True
        while more:
            group = x & 0x1F
            x >>= 5                          # Python's >> is arithmetic, as C's on a signed long
            more = x != -1 if group & 0x10 else x != 0   # stop once the rest is pure sign
            chars.append(chr(48 + (group | 0x20 if more else group)))
    return "".join(chars)


@njit(cache=True)
def _counts_to_chars_kernel(counts):
    out = np.empty(7 * counts.size + 1, dtype=np.uint8)  # |delta| < 2**33 -> at most 7 groups
    p = 0
    for i in range(counts.size):
        x = np.int64(counts[i])
        if i > 2:
            x -= np.int64(counts[i - 2])
        more = True
        while more:
            group = x & 0x1F
            x >>= 5
            more = (x != -1) if (group & 0x10) else (x != 0)
            out[p] = 48 + (group | 0x20 if more else group)
            p += 1
    return out[:p].copy()


def counts_to_string(counts) -> str:
    """(C,) run lengths -> the COCO compressed counts string."""
    counts = np.ascontiguousarray(counts, dtype=np.uint32)
    return _counts_to_chars_kernel(counts).tobytes().decode("ascii")


def string_to_counts_numpy(s: str) -> np.ndarray:
    """Reference decoder of a COCO counts string -> (C,) uint32."""
    counts = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:        # negative: extend the sign bit
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return np.array(counts, dtype=np.int64).astype(np.uint32)


@njit(cache=True)
def _chars_to_counts_kernel(chars):
    """Returns (counts, error): error is the index of a bad character or of a cut-off count, else -1."""
    out = np.empty(chars.size, dtype=np.int64)
    m, p = 0, 0
    while p < chars.size:
        x, k, more = np.int64(0), 0, True
        while more:
            if p >= chars.size:
                return np.empty(0, dtype=np.int64), p - 1    # the last group promised more
            c = np.int64(chars[p]) - 48
            if c < 0 or c > 63:
                return np.empty(0, dtype=np.int64), p
            x |= (c & 0x1F) << (5 * k)
            more = (c & 0x20) != 0
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= np.int64(-1) << (5 * k)
        if m > 2:
            x += out[m - 2]
        out[m] = x
        m += 1
    return out[:m].copy(), -1


def string_to_counts(s) -> np.ndarray:
    """COCO compressed counts string (str or bytes) -> (C,) uint32 run lengths."""
    if isinstance(s, str):
        s = s.encode("ascii", errors="replace")
    if not isinstance(s, (bytes, bytearray)):
        raise TypeError(f"counts: expected a COCO counts string, got {type(s).__name__}")
    counts, error = _chars_to_counts_kernel(np.frombuffer(bytes(s), dtype=np.uint8))
    if error >= 0:
        raise ValueError(f"counts: not a COCO counts string (bad or truncated character at position "
                         f"{error} of {s[:40]!r})")
    if counts.size and (counts.min() < 0 or counts.max() > np.iinfo(np.uint32).max):
        raise ValueError(f"counts: the string {s[:40]!r} decodes to run lengths outside [0, 2**32)")
    return counts.astype(np.uint32)


# ---- COCO dicts ---------------------------------------------------------------------------------
def mask_to_rle(mask):
    """(H, W) mask -> ``{"size": [H, W], "counts": str}``; (N, H, W) masks -> a list of N such dicts.

    The result is what a COCO results file stores (``pycocotools.mask.encode`` in one call).
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        return [mask_to_rle(m) for m in mask]
    mask = _as_mask(mask, "mask")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(encode_counts(mask))}


def rle_counts(rle, name: str = "rle"):
    """A COCO RLE dict (compressed or uncompressed) -> ``(height, width, counts)`` with counts (C,) uint32."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise TypeError(f"{name}: expected a COCO RLE dict with 'size' and 'counts', got {str(rle)[:80]}")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise ValueError(f"{name}: field 'size': expected [height, width] (2 ints >= 0), got {size!r}")
    h, w = int(size[0]), int(size[1])
    raw = rle["counts"]
    if isinstance(raw, (str, bytes, bytearray)):
        counts = string_to_counts(raw)
    else:
        counts = np.asarray(raw)
        if counts.ndim != 1 or (counts.size and (counts.dtype.kind not in "iu" or counts.min() < 0)):
            raise ValueError(f"{name}: field 'counts': expected a string or a list of ints >= 0, "
                             f"got {str(raw)[:80]}")
        counts = counts.astype(np.uint32)
    total = int(counts.sum(dtype=np.int64))
    if total != h * w:
        raise ValueError(f"{name}: field 'counts': the runs add up to {total} pixels, but 'size' "
                         f"[{h}, {w}] has {h * w}")
    return h, w, counts


def rle_to_mask(rle) -> np.ndarray:
    """COCO RLE dict (compressed or uncompressed) -> (H, W) uint8 mask of 0/1."""
    h, w, counts = rle_counts(rle)
    return decode_counts(counts, h, w)


def counts_area(counts) -> int:
    """Foreground pixels of (C,) run lengths: the sum of the odd-indexed runs (``rleArea``)."""
    return int(np.asarray(counts, dtype=np.int64)[1::2].sum())


def rle_area(rle) -> int:
    """Number of foreground pixels of a COCO RLE dict."""
    return counts_area(rle_counts(rle)[2])


def counts_to_bbox(counts, height: int, width: int) -> list:
    """Tight box ``[x, y, w, h]`` (COCO, integer pixel edges) of an RLE's foreground; zeros if empty.

    A foreground run that spans two or more columns covers the whole height in between, so the
    box then runs from row 0 to row H-1 (as the COCO API's ``rleToBbox`` concludes).
    """
    counts = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(counts)
    starts = ends - counts
    fg = (np.arange(counts.size) % 2 == 1) & (counts > 0)
    if height == 0 or not fg.any():
        return [0.0, 0.0, 0.0, 0.0]
    first, last = starts[fg], ends[fg] - 1                 # flat indices of each run's end pixels
    x0, x1 = first // height, last // height               # column-major: index = x * H + y
    y0, y1 = first % height, last % height
    xs, xe = int(x0.min()), int(x1.max())
    if np.any(x0 < x1):
        ys, ye = 0, height - 1
    else:
        ys, ye = int(min(y0.min(), y1.min())), int(max(y0.max(), y1.max()))
    return [float(xs), float(ys), float(xe - xs + 1), float(ye - ys + 1)]


def rle_to_bbox(rle) -> list:
    """``[x, y, w, h]`` of a COCO RLE dict (``pycocotools.mask.toBbox``)."""
    h, w, counts = rle_counts(rle)
    return counts_to_bbox(counts, h, w)


def merge_counts(counts_list, height: int, width: int, intersect: bool = False) -> np.ndarray:
    """Union (or intersection) of several RLEs of one size, as canonical run lengths."""
    if not counts_list:
        raise ValueError("counts_list: expected at least one RLE to merge, got none")
    if len(counts_list) == 1:
        return np.asarray(counts_list[0], dtype=np.uint32)
    out = decode_counts(counts_list[0], height, width).astype(bool)
    for c in counts_list[1:]:
        m = decode_counts(c, height, width).astype(bool)
        out = (out & m) if intersect else (out | m)
    return encode_counts(out)


def merge_rles(rles, intersect: bool = False) -> dict:
    """Union (default) or intersection of COCO RLE dicts of one size (``pycocotools.mask.merge``)."""
    parsed = [rle_counts(r, f"rles[{i}]") for i, r in enumerate(rles)]
    if not parsed:
        raise ValueError("rles: expected at least one RLE to merge, got none")
    h, w = parsed[0][:2]
    for i, (hi, wi, _) in enumerate(parsed):
        if (hi, wi) != (h, w):
            raise ValueError(f"rles[{i}]: size [{hi}, {wi}] differs from rles[0]'s [{h}, {w}]")
    counts = merge_counts([c for _, _, c in parsed], h, w, intersect)
    return {"size": [h, w], "counts": counts_to_string(counts)}


def _as_mask(mask, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name}: expected a (H, W) mask, got an array of shape {mask.shape}")
    if mask.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric or bool mask, got dtype {mask.dtype}")
    return mask
