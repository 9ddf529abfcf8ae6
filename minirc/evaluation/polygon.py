"""Polygon -> RLE, rasterised the way the COCO API does it (``rleFrPoly`` in ``maskApi.c``).

COCO ground truth stores most objects as polygons ``[x1, y1, x2, y2, ...]`` in continuous pixel
coordinates (pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``). Which pixels a polygon covers is a
convention; to get the same masks (and so the same mask AP) as the reference evaluator, minirc
follows the COCO API's algorithm step by step:

1. **Upsample.** Every vertex is scaled by 5 and rounded as C's ``(int)(5 * x + 0.5)`` (truncation
   toward zero, so -0.3 -> -1 but -0.1 -> 0).
2. **Walk the edges** on the 5x grid, one point per unit step along the edge's longer axis; the
   other coordinate is ``(int)(start + slope * t + 0.5)``. An edge is always computed from the end
   with the smaller coordinate on the longer axis, so an edge and its reverse give the same points.
3. **Find column crossings.** Where two consecutive points change upsampled column, the boundary
   crosses a vertical line. Only crossings at ``u = 5 * xd + 2`` for a pixel column ``xd`` in
   ``[0, w-1]`` are kept: the vertical line near the centre of pixel column ``xd``. The crossing's
   height becomes the first pixel row at or below it: ``ceil((v + 0.5) / 5 - 0.5)`` clamped to
   ``[0, h]`` (``v`` the lower of the two points).
4. **Toggle.** Each crossing flips inside/outside at the column-major index ``xd * h + row``;
   sorting those indices and taking differences gives the run lengths (two toggles at one index
   cancel).

So a pixel is set when (roughly) the point ``(x + 0.4, y + 0.5)`` of its column lies inside the
polygon, at 1/5-pixel resolution. ``docs/evaluation.md`` lists the measured agreement with
``pycocotools.mask.frPyObjects``.

Shape shorthand: V vertices, H W image height and width, C runs.
"""
from __future__ import annotations

import numpy as np

SCALE = 5  # the COCO API's upsampling factor
MAX_COORD = 2.0**31 / SCALE   # |vertex coordinate|: the upsampled grid stays well inside int64
MAX_POINTS = 1 << 24          # boundary points of one polygon (about 5 per pixel of its perimeter)


def _c_int(x):
    """C's ``(int)`` cast of a double: truncation toward zero (not floor)."""
    return np.trunc(x).astype(np.int64)


def _boundary_points(xy: np.ndarray):
    """Dense boundary points (u, v) on the 5x grid of the closed polygon ``xy`` (V, 2), in order.

    All edges at once: edge e from (xs, ys) to (xe, ye) gets ``n + 1`` points, ``n`` its length
    along its longer axis, at steps ``t = 0..n`` from the end with the smaller coordinate on that
    axis (``flip``: then the points are emitted from ``t = n`` down, in walking order).
    """
    x = _c_int(SCALE * xy[:, 0] + 0.5)
    y = _c_int(SCALE * xy[:, 1] + 0.5)
    xs, ys, xe, ye = x, y, np.roll(x, -1), np.roll(y, -1)      # edge e: vertex e -> vertex e + 1
    dx, dy = np.abs(xe - xs), np.abs(ye - ys)
    along_x = dx >= dy
    flip = np.where(along_x, xs > xe, ys > ye)
    sx, sy = np.where(flip, xe, xs), np.where(flip, ye, ys)    # the lower end on the longer axis
    ex, ey = np.where(flip, xs, xe), np.where(flip, ys, ye)
    n = np.where(along_x, dx, dy)
    # slope of the shorter coordinate per unit step; a repeated vertex (n = 0) gets one plain point
    # (C computes 0/0 there, but that point shares its column with its neighbours: no crossing)
    rise = np.where(along_x, ey - sy, ex - sx).astype(np.float64)
    slope = np.divide(rise, n, out=np.zeros_like(rise), where=n > 0)
    e = np.repeat(np.arange(len(xs)), n + 1)                     # edge of each point
    d = np.arange(e.size) - np.repeat(np.cumsum(n + 1) - (n + 1), n + 1)
    t = np.where(flip[e], n[e] - d, d)
    ax = along_x[e]
    u = np.where(ax, sx[e] + t, _c_int(sx[e] + slope[e] * t + 0.5))
    v = np.where(ax, _c_int(sy[e] + slope[e] * t + 0.5), sy[e] + t)
    return u, v


def _toggle_positions(u: np.ndarray, v: np.ndarray, height: int, width: int) -> np.ndarray:
    """Column-major flat indices where the mask flips between outside and inside (unsorted)."""
    j = np.flatnonzero(u[1:] != u[:-1]) + 1                 # steps into another upsampled column
    col = np.where(u[j] < u[j - 1], u[j], u[j] - 1).astype(np.float64)
    xd = (col + 0.5) / SCALE - 0.5                           # pixel column of that crossing
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    yd = np.minimum(v[j], v[j - 1]).astype(np.float64)
    yd = (yd + 0.5) / SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, height))                     # first pixel row below the crossing
    return xd[keep].astype(np.int64) * height + yd[keep].astype(np.int64)


def _positions_to_counts(positions: np.ndarray, height: int, width: int) -> np.ndarray:
    """Toggle positions -> run lengths. Toggles at one index cancel in pairs, and a toggle at the
    very end changes nothing: this is what the COCO API's merging of zero-length runs amounts to."""
    uniq, count = np.unique(positions[positions < height * width], return_counts=True)
    edges = np.concatenate([[0], uniq[count % 2 == 1], [height * width]])
    return np.diff(edges).astype(np.uint32)


def polygon_to_counts(polygon, height: int, width: int) -> np.ndarray:
    """Polygon ``[x1, y1, x2, y2, ...]`` (2V floats, pixels) -> (C,) uint32 COCO run lengths.

    The polygon is closed implicitly (last vertex back to the first); it may be non-convex or
    self-intersecting (even-odd rule) and may leave the image (the outside is clipped).
    """
    xy = np.asarray(polygon, dtype=np.float64).reshape(-1)
    if xy.size % 2:
        raise ValueError(f"polygon: expected an even number of coordinates [x1, y1, x2, y2, ...], "
                         f"got {xy.size}")
    if not np.all(np.isfinite(xy)):
        raise ValueError("polygon: expected finite coordinates, got NaN or infinity")
    if xy.size == 0:
        return np.array([height * width], dtype=np.uint32)
    if np.abs(xy).max() > MAX_COORD:
        raise ValueError(f"polygon: expected coordinates within +-{MAX_COORD:.0f} pixels (the limit), "
                         f"got {float(np.abs(xy).max()):.4g}")
    g = _c_int(SCALE * xy + 0.5).reshape(-1, 2)  # the walk's length, counted before it is allocated
    steps = np.maximum(np.abs(np.roll(g[:, 0], -1) - g[:, 0]), np.abs(np.roll(g[:, 1], -1) - g[:, 1]))
    points = int(steps.sum()) + len(g)
    if points > MAX_POINTS:
        raise ValueError(f"polygon: its boundary walk would take {points} points on the 5x grid; the limit "
                         f"is {MAX_POINTS} (a perimeter of about {MAX_POINTS // SCALE} pixels)")
    u, v = _boundary_points(xy.reshape(-1, 2))
    return _positions_to_counts(_toggle_positions(u, v, height, width), height, width)


def box_to_counts(box, height: int, width: int) -> np.ndarray:
    """COCO box ``[x, y, w, h]`` -> run lengths of its rectangle (the COCO API's ``rleFrBbox``)."""
    x0, y0, bw, bh = (float(c) for c in box)
    x1, y1 = x0 + bw, y0 + bh
    return polygon_to_counts([x0, y0, x0, y1, x1, y1, x1, y0], height, width)


def polygons_to_mask(polygons, height: int, width: int) -> np.ndarray:
    """A list of polygons (one object, possibly in several parts) -> (height, width) uint8 union mask."""
    from minirc.evaluation.rle import decode_counts

    mask = np.zeros((height, width), dtype=np.uint8)
    for p in polygons:
        mask |= decode_counts(polygon_to_counts(p, height, width), height, width)
    return mask
