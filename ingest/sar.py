"""Sentinel-1 rasters as the catalogs publish them, brought onto a map grid and into one quantity.

GRD measurement files (Earth Search and Planetary Computer ``sentinel-1-grd``) have no geotransform,
only ground control points (the product's geolocation grid) in EPSG:4326. They are geocoded here by
nearest-neighbour resampling through GDAL's thin-plate-spline GCP transformer onto a north-up grid in
the UTM zone of the scene centre (UPS near the poles) at the product's pixel spacing, snapped to
multiples of the spacing. The item's ``proj:transform`` is derived from the bbox and is not used.

Quantities (``QUANTITIES``): GRD digital numbers are calibrated to sigma0 through the calibration
annotation the item links (``schema-calibration-{pol}``): sigma0 = DN^2 / A^2 with A the
``sigmaNought`` LUT interpolated bilinearly over the source grid at each source pixel, then dB.
Planetary Computer RTC linear gamma0 becomes dB. Calibrated pixels are float32 with
``DB_NODATA`` where there is no signal (DN 0, outside the swath, non-positive power).
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from rasterio import warp
from rasterio.crs import CRS
from rasterio.transform import Affine, GCPTransformer
from rasterio.windows import Window

from ofa.ingest.limits import ReadLimits
from ofa.ingest.plans import DB_NODATA, ChannelPlan, ItemError
from ofa.ingest.readers import RasterioReader
from ofa.ingest.storage import get_fs

#: quantity names a sample's ``meta.json`` may carry for SAR sensors, and what they mean
QUANTITIES = {
    "sigma0_db": "radar backscatter sigma0 (ellipsoid), 10*log10 of linear power, from GRD DN and the calibration LUT",
    "gamma0_db": "radar backscatter gamma0 (terrain-flattened where the product says so), 10*log10 of linear power",
    "amplitude_dn": "uncalibrated GRD amplitude digital numbers (no calibration annotation linked)",
}

#: the conversions to dB, in words
_CONVERSIONS = {"sigma0_db": "calibration (DN to sigma0 dB)", "db": "10*log10 conversion of linear power",
                "amplitude_db": "20*log10 conversion of amplitude"}

#: lattice step (pixels) at which the GCP transform is evaluated exactly; bilinear in between
_STEP = 16
#: destination columns warped per block (bounds the source window one block reads)
_BLOCK = 1024


class CalibrationLut:
    """A calibration LUT (``sigmaNought`` by default) of an S1 calibration annotation, bilinear over lines and pixels."""

    def __init__(self, xml: bytes, name: str = "sigmaNought"):
        root = ET.fromstring(xml)
        vectors = root.findall("calibrationVectorList/calibrationVector")
        if not vectors:
            raise ValueError("no calibrationVector in the calibration annotation")
        self.lines = np.array([float(v.findtext("line")) for v in vectors])
        self.pixels = [np.array(v.findtext("pixel").split(), dtype=np.float64) for v in vectors]
        self.values = [np.array(v.findtext(name).split(), dtype=np.float64) for v in vectors]
        if any(p.size != a.size or p.size == 0 for p, a in zip(self.pixels, self.values)):
            raise ValueError(f"calibration vectors whose pixel and {name} counts differ")
        if np.any(np.diff(self.lines) <= 0):
            raise ValueError("calibration vectors are not in increasing line order")

    def window(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """The LUT over a window of the source grid, [height, width] float32 (same rule as ``at``)."""
        pixels = np.arange(col, col + width, dtype=np.float64)
        lines = np.arange(row, row + height, dtype=np.float64)
        along = np.stack([np.interp(pixels, p, v) for p, v in zip(self.pixels, self.values)])   # [vectors, width]
        if len(self.lines) == 1:
            return np.broadcast_to(along[0], (height, width)).astype(np.float32)
        k = np.clip(np.searchsorted(self.lines, lines, side="right") - 1, 0, len(self.lines) - 2)
        w = np.clip((lines - self.lines[k]) / (self.lines[k + 1] - self.lines[k]), 0.0, 1.0)[:, None]
        return (along[k] * (1.0 - w) + along[k + 1] * w).astype(np.float32)

    def at(self, lines: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """LUT values at source ``lines``/``pixels`` (same shape): linear along each vector's pixels, then
        linear between the two vectors around each line; held constant beyond the outer ones."""
        flat_l = np.asarray(lines, dtype=np.float64).ravel()
        flat_p = np.asarray(pixels, dtype=np.float64).ravel()
        if len(self.lines) == 1:
            return np.interp(flat_p, self.pixels[0], self.values[0]).reshape(np.shape(lines))
        k = np.clip(np.searchsorted(self.lines, flat_l, side="right") - 1, 0, len(self.lines) - 2)
        w = np.clip((flat_l - self.lines[k]) / (self.lines[k + 1] - self.lines[k]), 0.0, 1.0)
        out = np.empty_like(flat_l)
        for j in np.unique(k):
            sel = k == j
            lo = np.interp(flat_p[sel], self.pixels[j], self.values[j])
            hi = np.interp(flat_p[sel], self.pixels[j + 1], self.values[j + 1])
            out[sel] = lo * (1.0 - w[sel]) + hi * w[sel]
        return out.reshape(np.shape(lines))


def utm_crs_for(lon: float, lat: float) -> str:
    """The UTM zone (UPS beyond 84 degrees) holding ``lon``/``lat``."""
    if lat >= 84.0:
        return "EPSG:32661"
    if lat <= -80.0:
        return "EPSG:32761"
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


#: a GCP-derived ground sampling within this fraction of the item's stated pixel spacing is that spacing:
#: the measurement moves by a few percent with terrain heights, map scale and along-track speed
SPACING_TOLERANCE = 0.05


def gcp_sampling(gcps: list, gcp_crs, crs) -> tuple[float, float]:
    """Ground metres per source pixel along the columns (range) and the lines (azimuth), measured from the
    GCPs: the least-squares affine from (col, row) to map coordinates in ``crs`` (ground distance over
    pixel distance between the control points)."""
    xs, ys = warp.transform(gcp_crs, crs, [g.x for g in gcps], [g.y for g in gcps])
    design = np.c_[[g.col for g in gcps], [g.row for g in gcps], np.ones(len(gcps))]
    fx = np.linalg.lstsq(design, np.asarray(xs), rcond=None)[0]
    fy = np.linalg.lstsq(design, np.asarray(ys), rcond=None)[0]
    return float(math.hypot(fx[0], fy[0])), float(math.hypot(fx[1], fy[1]))


def geocoding_spacing(sampling: tuple[float, float], nominal: float | None) -> float:
    """The output pixel size for a raster whose pixels sample the ground at ``sampling`` (m, range and
    azimuth): never finer than its coarser axis. A stated ``nominal`` spacing is used where the
    measurement agrees with it (within ``SPACING_TOLERANCE``) or where it is coarser; otherwise the
    measurement rounded up to three significant digits (a decimated or overview asset keeps its own
    sampling: 203.6 m -> 204 m; 10.13 m -> 10.2 m)."""
    measured = max(sampling)
    if nominal and measured <= nominal * (1.0 + SPACING_TOLERANCE):
        return float(nominal)
    step = 10.0 ** (math.floor(math.log10(measured)) - 2)
    return round(math.ceil(measured / step - 1e-3) * step, 10)   # 1/1000 of the last digit: float noise


class GcpGrid:
    """The north-up grid a GCP-only raster is geocoded onto, and the source pixel under each of its pixels.

    Its pixel size is the data's own ground sampling (``gcp_sampling``, ``geocoding_spacing``): a
    raster is never geocoded finer than its pixels sample the ground."""

    def __init__(self, gcps: list, gcp_crs, width: int, height: int, nominal: float | None = None):
        lons = np.array([g.x for g in gcps])
        if lons.max() - lons.min() > 180.0:   # a scene across the antimeridian: centre on it
            lons = np.where(lons < 0, lons + 360.0, lons)
        lon, lat = float(np.mean(lons)), float(np.mean([g.y for g in gcps]))
        self.src_crs = gcp_crs
        self.crs = CRS.from_user_input(utm_crs_for((lon + 180.0) % 360.0 - 180.0, lat))
        self.src_width, self.src_height = width, height
        self.sampling = gcp_sampling(gcps, gcp_crs, self.crs)
        self.spacing = spacing = geocoding_spacing(self.sampling, nominal)
        self._gcp = GCPTransformer(gcps, tps=True)
        # the extent: the raster's outline (edges densified) through the same transform the pixels go through
        t = np.linspace(0.0, 1.0, 33)
        rows = np.concatenate([np.zeros_like(t), t, np.ones_like(t), t[::-1]]) * height
        cols = np.concatenate([t, np.ones_like(t), t[::-1], np.zeros_like(t)]) * width
        edge_lon, edge_lat = self._gcp.xy(rows, cols, offset="ul")
        xs, ys = warp.transform(gcp_crs, self.crs, list(edge_lon), list(edge_lat))
        # snapped outward to multiples of the spacing; an outline past a multiple by less than 1/100 px (the
        # curvature of the transform between GCPs) adds no pixel: its centre would be off the source anyway
        left, right = math.floor(min(xs) / spacing + 0.01) * spacing, math.ceil(max(xs) / spacing - 0.01) * spacing
        bottom, top = math.floor(min(ys) / spacing + 0.01) * spacing, math.ceil(max(ys) / spacing - 0.01) * spacing
        self.width, self.height = int(round((right - left) / spacing)), int(round((top - bottom) / spacing))
        self.transform = Affine(spacing, 0.0, left, 0.0, -spacing, top)
        self._last: tuple = ((), None)   # the last window's source pixels: the polarisations of an item share them

    def source_pixels(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Source (row, col) indices, int64 [height, width], of the pixel under each destination pixel
        centre of the window (nearest neighbour); -1 where it falls outside the source raster."""
        if self._last[0] == (row, col, height, width):
            return self._last[1]
        self._last = ((row, col, height, width), self._source_pixels(row, col, height, width))
        return self._last[1]

    def _source_pixels(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        rs = np.unique(np.r_[np.arange(0, height, _STEP), height - 1]).astype(np.float64)
        cs = np.unique(np.r_[np.arange(0, width, _STEP), width - 1]).astype(np.float64)
        gr, gc = np.meshgrid(rs, cs, indexing="ij")
        t = self.transform
        xs = t.c + (col + gc + 0.5) * t.a
        ys = t.f + (row + gr + 0.5) * t.e
        lon, lat = warp.transform(self.crs, self.src_crs, xs.ravel(), ys.ravel())
        # op: a ufunc applied in place; np.positive keeps the fractional rows/cols
        src_r, src_c = self._gcp.rowcol(np.asarray(lon), np.asarray(lat), op=np.positive)
        src_r = np.asarray(src_r, dtype=np.float64).reshape(gr.shape)
        src_c = np.asarray(src_c, dtype=np.float64).reshape(gr.shape)
        fr = _bilinear(src_r, rs, cs, height, width)
        fc = _bilinear(src_c, rs, cs, height, width)
        r, c = np.floor(fr).astype(np.int64), np.floor(fc).astype(np.int64)
        outside = (r < 0) | (r >= self.src_height) | (c < 0) | (c >= self.src_width)
        r[outside] = -1
        c[outside] = -1
        return r, c


def _bilinear(lattice: np.ndarray, rs: np.ndarray, cs: np.ndarray, height: int, width: int) -> np.ndarray:
    """Values on a [len(rs), len(cs)] lattice interpolated linearly to every pixel of a [height, width] window."""
    def weights(knots: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        at = np.arange(n, dtype=np.float64)
        i = np.clip(np.searchsorted(knots, at, side="right") - 1, 0, max(len(knots) - 2, 0))
        j = np.minimum(i + 1, len(knots) - 1)
        return i, np.where(j > i, (at - knots[i]) / np.maximum(knots[j] - knots[i], 1e-12), 0.0)

    ri, rw = weights(rs, height)
    ci, cw = weights(cs, width)
    r1, c1 = np.minimum(ri + 1, len(rs) - 1), np.minimum(ci + 1, len(cs) - 1)
    across = lattice[:, ci] * (1.0 - cw) + lattice[:, c1] * cw                     # [len(rs), width]
    return across[ri] * (1.0 - rw)[:, None] + across[r1] * rw[:, None]


@dataclass
class _Convert:
    kind: str | None                 # None (values as read), "sigma0_db" (DN + LUT), "db" (linear power), "amplitude_db"
    lut: CalibrationLut | None
    source_nodata: float | None
    valid: int = 0                   # source pixels read with a value (not nodata, not 0, finite)
    lost: int = 0                    # of those, the ones the conversion could not take (negative)


class SarDataset:
    """A rasterio dataset seen through geocoding (GCP-only files) and/or a quantity conversion.

    Offers what the chip reader uses: ``transform``, ``crs``, ``width``, ``height``, ``count``,
    ``dtypes``, ``nodata``, ``nodatavals``, ``read(indexes, window, ...)`` and ``close()``.
    """

    def __init__(self, ds, grid: GcpGrid | None, convert: _Convert, nodata: float | None = None):
        self.ds, self.grid, self.convert = ds, grid, convert
        self.count = ds.count
        if grid is not None:
            self.transform, self.crs, self.width, self.height = grid.transform, grid.crs, grid.width, grid.height
        else:
            self.transform, self.crs, self.width, self.height = ds.transform, ds.crs, ds.width, ds.height
        if convert.kind:
            self.dtypes, self.nodata = ("float32",) * ds.count, DB_NODATA
        else:
            # pixels off the source are the channel's no data (dB values have no DN 0), else the file's, else 0
            fill = nodata if nodata is not None else ds.nodata
            self.dtypes, self.nodata = ds.dtypes, (fill if fill is not None else 0)
        self.nodatavals = (self.nodata,) * ds.count

    def close(self) -> None:
        self.ds.close()

    def read(self, indexes: list[int], window, boundless: bool = False, fill_value: Any = None, **_: Any) -> np.ndarray:
        """Bands ``indexes`` over a whole-pixel ``window`` of this grid; pixels off the source are no data."""
        row, col = int(round(window.row_off)), int(round(window.col_off))
        height, width = int(round(window.height)), int(round(window.width))
        out = np.full((len(indexes), height, width), self.nodata, dtype=self.dtypes[0])
        for c0 in range(0, width, _BLOCK):
            w = min(_BLOCK, width - c0)
            out[:, :, c0:c0 + w] = self._block(indexes, row, col + c0, height, w)
        return out

    def _block(self, indexes: list[int], row: int, col: int, height: int, width: int) -> np.ndarray:
        if self.grid is not None:
            r, c = self.grid.source_pixels(row, col, height, width)
        else:
            r, c = np.meshgrid(np.arange(row, row + height), np.arange(col, col + width), indexing="ij")
            off = (r < 0) | (r >= self.ds.height) | (c < 0) | (c >= self.ds.width)
            r, c = np.where(off, -1, r), np.where(off, -1, c)
        inside = r >= 0
        n = len(indexes)
        if not inside.any():
            return np.full((n, height, width), self.nodata, dtype=self.dtypes[0])
        r0, r1, c0, c1 = int(r[inside].min()), int(r[inside].max()) + 1, int(c[inside].min()), int(c[inside].max()) + 1
        src = self.ds.read(indexes=indexes, window=Window(c0, r0, c1 - c0, r1 - r0))
        # converted on the source window (dense, vectorised), then sampled: the LUT is the source grid's
        flat = self._quantity(src, r0, c0).reshape(n, -1)
        idx = (r - r0) * (c1 - c0) + (c - c0)
        if inside.all():
            return flat.take(idx.ravel(), axis=1).reshape(n, height, width)
        out = np.full((n, height, width), self.nodata, dtype=self.dtypes[0])
        out[:, inside] = flat.take(idx[inside], axis=1)
        return out

    def _quantity(self, values: np.ndarray, row: int, col: int) -> np.ndarray:
        """``values`` ([n, h, w] from source row/col) in this dataset's quantity."""
        kind = self.convert.kind
        if kind is None:
            return values
        v = values.astype(np.float32)
        empty = ~np.isfinite(v)
        if self.convert.source_nodata is not None and not math.isnan(self.convert.source_nodata):
            empty |= values == self.convert.source_nodata
        negative = ~empty & (v < 0)
        self.convert.valid += int(np.count_nonzero(~empty & (v != 0)))
        self.convert.lost += int(np.count_nonzero(negative))
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "sigma0_db":   # 10 log10(DN^2 / A^2)
                db = 20.0 * np.log10(v / self.convert.lut.window(row, col, v.shape[1], v.shape[2]))
            elif kind == "amplitude_db":
                db = 20.0 * np.log10(v)
            else:
                db = 10.0 * np.log10(v)
        db[empty | (v <= 0)] = DB_NODATA
        return db


def _read_bytes(href: str, sign: Callable[[str], str], max_bytes: int) -> bytes:
    """The file at ``href`` (opened through ``sign``, the reader's href gate), refused past ``max_bytes``."""
    # Earth Search's annotations are in a requester-pays bucket: the same variable GDAL honours for the rasters
    pays = href.startswith("s3://") and os.environ.get("AWS_REQUEST_PAYER", "").lower() == "requester"
    fs, path = get_fs(sign(href), {"requester_pays": True} if pays else None)
    with fs.open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ItemError(f"calibration annotation {href} is over {max_bytes:,} bytes (--max-chunk-bytes)")
    return data


def has_georeferencing(ds) -> bool:
    """Whether a dataset has a geotransform (rasterio reports the identity when it has none)."""
    return not ds.transform.is_identity


def open_sar(ds, channel: ChannelPlan, sign: Callable[[str], str], grids: dict | None = None,
             max_bytes: int = ReadLimits.max_chunk_bytes):
    """``ds`` as the chip reader should see it for SAR channel ``channel``: geocoded through its GCPs when it
    has no geotransform, converted to the channel's quantity. Raises ``ItemError`` when that is impossible.
    ``grids`` shares one ``GcpGrid`` between the assets of an item with the same GCPs (its polarisations);
    the calibration annotation is opened through ``sign`` and may be ``max_bytes`` long at most."""
    gcps, gcp_crs = ds.gcps
    grid = None
    if channel.assumes_dn and np.dtype(ds.dtypes[channel.index - 1]).kind not in "ui":
        raise ItemError(f"asset {channel.asset!r} holds {ds.dtypes[channel.index - 1]} values, not the integer digital "
                        "numbers the collection's files hold, and the item states no unit (raster:bands unit "
                        "dB/linear/amplitude): which quantity they are cannot be told")
    if not has_georeferencing(ds):
        if not gcps:
            raise ItemError(f"asset {channel.asset!r} has neither a geotransform nor GCPs: it cannot be geocoded")
        if gcp_crs is None:
            raise ItemError(f"asset {channel.asset!r} has GCPs without a CRS: it cannot be geocoded")
        if len(gcps) < 3:
            raise ItemError(f"asset {channel.asset!r} has {len(gcps)} GCPs: at least 3 are needed to geocode it")
        key = (tuple((g.row, g.col, g.x, g.y) for g in gcps), str(gcp_crs), ds.width, ds.height, channel.spacing)
        try:
            grid = (grids if grids is not None else {}).get(key) or GcpGrid(gcps, gcp_crs, ds.width, ds.height,
                                                                            channel.spacing)
            if grids is not None:
                grids[key] = grid
        except Exception as exc:  # noqa: BLE001 - GDAL could not fit or invert the GCP transform
            raise ItemError(f"asset {channel.asset!r} cannot be geocoded through its {len(gcps)} GCPs: {exc}") from None
    lut = None
    if channel.convert == "sigma0_db":
        try:
            lut = CalibrationLut(_read_bytes(channel.calibration, sign, max_bytes))
        except ItemError:
            raise
        except Exception as exc:  # noqa: BLE001 - unreadable or malformed annotation
            raise ItemError(f"calibration annotation of {channel.asset!r} ({channel.calibration}) cannot be used: "
                            f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    if grid is None and channel.convert is None:
        return ds
    return SarDataset(ds, grid, _Convert(channel.convert, lut, channel.source_nodata), channel.nodata)


class SarReader(RasterioReader):
    """The COG reader for SAR items: each band asset seen through ``open_sar``."""

    def __init__(self, plan: Any, sign_href: Callable[[str], str]):
        super().__init__(sign_href)
        self.plan = plan
        self.gcp_grids: dict = {}

    def verify(self) -> None:
        """Refuse an item whose conversion turned most of its valid pixels into no data: negative values
        are not linear power or amplitude, so the item's values were something else (dB, most likely)."""
        for href, ds in self.datasets.items():
            convert = getattr(ds, "convert", None)
            if convert is not None and convert.kind and convert.valid and convert.lost * 2 > convert.valid:
                raise ItemError(
                    f"asset {self.names[href]!r}: the {_CONVERSIONS[convert.kind]} turned {convert.lost} of its "
                    f"{convert.valid} valid pixels ({100.0 * convert.lost / convert.valid:.0f}%) into no data (negative "
                    "values: already in dB?); the item should state raster:bands unit dB, linear or amplitude")

    def _dataset(self, href: str, ds: Any) -> Any:
        channel = next((c for c in self.plan.channels if c.valid and c.href == href), None)
        if channel is None:
            return super()._dataset(href, ds)
        try:
            return open_sar(ds, channel, self.sign, self.gcp_grids, self.limits.max_chunk_bytes)
        except BaseException:
            ds.close()
            raise
