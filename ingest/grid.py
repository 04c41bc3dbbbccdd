"""Pixel-grid arithmetic shared by the readers and the chipper: affine maps between pixel windows
and CRS bounds, and the offsets of the full chips of a grid."""
from __future__ import annotations

from typing import Iterator


def apply(t, col: float, row: float) -> tuple[float, float]:
    """(x, y) of grid position (col, row) under affine ``t``."""
    return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f


def grid_bounds(t, col: float, row: float, width: float, height: float) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a pixel window under affine ``t``."""
    corners = [apply(t, c, r) for c in (col, col + width) for r in (row, row + height)]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return min(xs), min(ys), max(xs), max(ys)


def bounds_window(t, bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """(col_off, row_off, width, height) covering ``bounds`` on the grid of affine ``t``."""
    inv = ~t
    left, bottom, right, top = bounds
    corners = [apply(inv, x, y) for x in (left, right) for y in (bottom, top)]
    cols, rows = [c[0] for c in corners], [c[1] for c in corners]
    return min(cols), min(rows), max(cols) - min(cols), max(rows) - min(rows)


def north_up(t) -> bool:
    """True for an affine without rotation or shear."""
    return t.b == 0 and t.d == 0 and t.a != 0 and t.e != 0


def chip_offsets(length: int, size: int) -> range:
    """Offsets of the full chips along one axis of a grid."""
    return range(0, length - size + 1, size)


def chip_windows(height: int, width: int, size: int) -> Iterator[tuple[int, int]]:
    """Row/col offsets of the full chips of a grid, row-major."""
    for row in chip_offsets(height, size):
        for col in chip_offsets(width, size):
            yield row, col
