"""Readers: open the assets of one item and read rectangles of the item's reference grid from them.

A reader is the small interface between the chipper and a storage format: ``open`` an asset (one
image file, or one array of a Zarr store) and describe its grid, ``read`` bands of it over rows and
columns of the reference grid, ``close``. ``GridReader`` holds what every format shares (putting a
coarser grid onto the reference grid); a format only supplies ``_open`` and ``_window``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from ofa.ingest.grid import bounds_window, grid_bounds, north_up
from ofa.ingest.limits import ReadLimits, check_raster
from ofa.ingest.plans import ItemError, read_href, redact

#: GDAL configuration for every COG read (``rasterio.Env``), measured against the least an ingest must
#: fetch (``bench/bench_ingest.py --remote``, bench/RESULTS.md): about 1.06x the bytes of the tiles the
#: read chip windows touch and 1.12x one GET per tile row.
GDAL_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",      # no folder listing per opened file
    "GDAL_HTTP_MAX_RETRY": "3",                       # transient HTTP errors (429, 5xx) retried 3 times,
    "GDAL_HTTP_RETRY_DELAY": "1",                     # 1 s apart
    "VSI_CACHE": "TRUE",                              # a block cache per open file: 11% fewer GETs
    # adjacent tiles of a row in one range request: GDAL's default, and the GeoTIFF driver merges a chip
    # row's tiles itself (measured: the same requests with NO or with GDAL_HTTP_MULTIRANGE=SERIAL)
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # the first GET of a file: its header and tile index (a few KB in a COG; up to ~20 KB with 256 px
    # tiles on a Landsat-size grid). Up to 16 KB, GDAL's open needs a second GET; 64 KB read ~60 KB of
    # overview tiles per asset that are never used
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
    # GDAL reads ahead once chip rows follow each other in a file (doubling each GET, up to ~2 MB), into
    # the process-wide cache of downloaded ranges; at its default 16 MB, the read-ahead of an item's
    # dozen assets on two workers was evicted before use and fetched again (5% more bytes, 8% more GETs)
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 * 1024 * 1024),
}


def raster_driver(href: str) -> str:
    """The one GDAL driver a raster asset is opened with: JPEG 2000 for ``.jp2``/``.j2k`` files (Earth Search's
    Sentinel-2 L1C), GeoTIFF for the rest. Never GDAL's guess: a VRT names other files, and drivers such as
    WMS or STACIT fetch URLs written inside the file."""
    return "JP2OpenJPEG" if href.split("?", 1)[0].lower().endswith((".jp2", ".j2k")) else "GTiff"


@dataclass(frozen=True)
class Grid:
    """What a reader knows about one opened asset."""

    crs: Any | None                         # a rasterio CRS, or None when the asset does not say
    transform: Any                          # affine.Affine of pixel corners
    width: int
    height: int
    dtypes: tuple[str, ...]                 # per band
    nodatavals: tuple[float | None, ...]    # per band, as the asset declares it
    nodata: float | None                    # what reads outside the asset are filled with (None: 0)
    #: the asset's own encoding (CF ``scale_factor``/``add_offset``/``_FillValue`` of a Zarr array) is
    #: authoritative: it replaces the item's scale, offset and nodata where it gives them
    decoded: bool = False
    scale: float | None = None
    offset: float | None = None

    @property
    def count(self) -> int:
        return len(self.dtypes)


def short_error(exc: BaseException) -> str:
    """One line: the exception and the error under it (rasterio chains GDAL's as the cause)."""
    text = " ".join(str(exc).split())
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({' '.join(str(cause).split())})"
    return f"{type(exc).__name__}: {redact(text)[:400]}"   # GDAL quotes the opened name: signed tokens and all


class GridReader:
    """Open assets and read rectangles of the reference grid from them.

    Assets on the reference grid are read directly. Coarser north-up assets are read once at their
    native resolution over the rectangle and sampled onto the reference grid by index (the coarse
    pixel containing each reference pixel centre: nearest neighbour), which is what GDAL's nearest
    does but without resampling inside every read. Other grids (rotated) go through ``_warped``.
    """

    #: GDAL configuration while the reader is open (``rasterio.Env``: it also finds PROJ's data for
    #: the CRS work every format needs, in whichever thread the item runs)
    env_options: dict[str, str] = {}
    #: the most an opened asset may declare (``reader_for`` sets the plan's)
    limits: ReadLimits = ReadLimits()

    def __init__(self, sign_href: Callable[[str], str]):
        self.sign = sign_href
        self.grids: dict[str, Grid] = {}
        self.names: dict[str, str] = {}
        self._env = contextlib.ExitStack()

    def __enter__(self) -> "GridReader":
        self._env.enter_context(rasterio.Env(**self.env_options))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            self._env.close()

    def open(self, href: str, asset: str) -> Grid:
        """Open ``href`` (once) and describe its grid; ``asset`` names it in errors."""
        if href not in self.grids:
            try:
                self.grids[href] = self._open(href)
            except ItemError:
                raise
            except Exception as exc:  # noqa: BLE001 - any open failure makes the item unusable
                raise ItemError(f"asset {asset!r} ({href}) cannot be opened: {short_error(exc)}") from None
            self.names[href] = asset
            self.limits.check_pixels(self.grids[href].height, self.grids[href].width, f"asset {asset!r} ({href})")
        return self.grids[href]

    def close(self) -> None:
        """Release what ``open`` holds."""

    def verify(self) -> None:
        """After an item's chips are read: raise ``ItemError`` when what was read cannot be right."""

    def read(self, href: str, indexes: list[int], ref_transform, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Bands ``indexes`` (1-based) of ``href`` over rows/cols of the reference grid, as (n, height, width)."""
        g = self.grids[href]
        try:
            if g.transform == ref_transform:
                data = self._window(href, indexes, col, row, width, height)
            elif north_up(g.transform) and north_up(ref_transform):
                data = self._sampled(href, indexes, ref_transform, row, col, height, width)
            else:
                bounds = grid_bounds(ref_transform, col, row, width, height)
                c, r, w, h = bounds_window(g.transform, bounds)
                # keep the fractional window: rounding it misplaces coarse pixels
                data = self._warped(href, indexes, round(c, 6), round(r, 6), max(1e-6, round(w, 6)),
                                    max(1e-6, round(h, 6)), (len(indexes), height, width))
        except ItemError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated/corrupt file fails here
            raise ItemError(f"asset {self.names[href]!r} ({href}) cannot be read: {short_error(exc)}") from None
        if data.shape[1:] != (height, width):
            raise ItemError(f"asset {self.names[href]!r} gave a {data.shape} window for a {height}x{width} px read")
        return data

    def _open(self, href: str) -> Grid:
        raise NotImplementedError

    def _window(self, href: str, indexes: list[int], col: int, row: int, width: int, height: int) -> np.ndarray:
        """Bands of ``href`` over a whole-pixel window of its own grid; outside it, its nodata (or 0)."""
        raise NotImplementedError

    def _warped(self, href: str, indexes: list[int], col: float, row: float, width: float, height: float,
                out_shape: tuple[int, int, int]) -> np.ndarray:
        """A fractional window of ``href``'s grid, nearest-resampled to ``out_shape``."""
        raise ItemError(f"asset {self.names[href]!r} is on a rotated grid, which this format's reader does not resample")

    def _sampled(self, href: str, indexes: list[int], ref, row: int, col: int, height: int, width: int) -> np.ndarray:
        g = self.grids[href]
        t = g.transform
        cols = np.floor((ref.c + (np.arange(col, col + width) + 0.5) * ref.a - t.c) / t.a).astype(np.int64)
        rows = np.floor((ref.f + (np.arange(row, row + height) + 0.5) * ref.e - t.f) / t.e).astype(np.int64)
        fill = g.nodata if g.nodata is not None else 0
        col_ok = (cols >= 0) & (cols < g.width)
        row_ok = (rows >= 0) & (rows < g.height)
        if not col_ok.any() or not row_ok.any():
            return np.full((len(indexes), height, width), fill, dtype=g.dtypes[indexes[0] - 1])
        c0, c1 = int(cols[col_ok].min()), int(cols[col_ok].max()) + 1
        r0, r1 = int(rows[row_ok].min()), int(rows[row_ok].max()) + 1
        native = self._window(href, indexes, c0, r0, c1 - c0, r1 - r0)
        sampled = native.take(rows[row_ok] - r0, axis=1).take(cols[col_ok] - c0, axis=2)  # take: faster than fancy indexing
        if col_ok.all() and row_ok.all():
            return sampled
        out = np.full((len(indexes), height, width), fill, dtype=native.dtype)
        out[np.ix_(np.arange(len(indexes)), np.flatnonzero(row_ok), np.flatnonzero(col_ok))] = sampled
        return out


class RasterioReader(GridReader):
    """GeoTIFFs (COGs) through rasterio/GDAL, under ``GDAL_OPTIONS``."""

    env_options = GDAL_OPTIONS

    def __init__(self, sign_href: Callable[[str], str]):
        super().__init__(sign_href)
        self.datasets: dict[str, Any] = {}

    def close(self) -> None:
        for ds in self.datasets.values():
            ds.close()

    def _open(self, href: str) -> Grid:
        raw = rasterio.open(read_href(self.sign(href)), driver=raster_driver(href))
        try:
            check_raster(self.limits, raw, href)   # from the header, before the first pixel
        except ItemError:
            raw.close()
            raise
        ds = self.datasets[href] = self._dataset(href, raw)
        return Grid(ds.crs, ds.transform, ds.width, ds.height, tuple(ds.dtypes), tuple(ds.nodatavals), ds.nodata)

    def _dataset(self, href: str, ds: Any) -> Any:
        """The opened dataset as the chipper reads it; without a geotransform there is no grid to read
        (rasterio reports the identity then: never taken for georeferencing)."""
        if ds.transform.is_identity:
            ds.close()
            raise ItemError(f"{href} has no geotransform: its pixels cannot be placed on a map")
        return ds

    def _window(self, href: str, indexes: list[int], col: int, row: int, width: int, height: int) -> np.ndarray:
        return self._read(href, indexes, col, row, width, height, None)

    def _warped(self, href: str, indexes: list[int], col: float, row: float, width: float, height: float,
                out_shape: tuple[int, int, int]) -> np.ndarray:
        return self._read(href, indexes, col, row, width, height, out_shape)

    def _read(self, href: str, indexes: list[int], col: float, row: float, width: float, height: float,
              out_shape: tuple[int, int, int] | None) -> np.ndarray:
        ds = self.datasets[href]
        inside = col >= 0 and row >= 0 and col + width <= ds.width and row + height <= ds.height
        kwargs: dict[str, Any] = {"indexes": indexes, "window": Window(col, row, width, height)}
        if out_shape is not None:
            kwargs.update(out_shape=out_shape, resampling=Resampling.nearest)
        if not inside:
            kwargs.update(boundless=True, fill_value=ds.nodata if ds.nodata is not None else 0)
        return ds.read(**kwargs)

