"""Read one item into chips: plan a grid on the finest band's grid, read the cloud mask and then
each asset once per row of surviving chips (coarser bands sampled onto the chip grid by index),
filter, and encode and describe each kept chip."""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ingest.contract import pixels_checksum, sample_key
from ingest.items import ChannelPlan, ItemError, ItemPlan, identity_href, read_href, redact
from ingest.sar import has_georeferencing, open_sar

#: drop reasons. Order of the checks: the cloud mask's fill and cloud fractions (before the bands
#: are read), then SAR border zeros (all polarisations 0) over their own threshold, then no data
#: (any band at its nodata value, mask fill or SAR border; counted as ``sar_border`` when the border
#: is most of it). ``nodata_fraction`` counts all of these; ``cloud_fraction`` is cloud pixels over
#: the pixels the mask does not mark as fill.
DROP_REASONS = ("nodata", "sar_border", "cloud")


@dataclass(frozen=True)
class ChipOptions:
    """Chip grid and filter thresholds (fractions of the chip's pixels)."""

    chip_size: int = 256
    max_nodata: float = 0.1
    max_cloud: float = 0.2
    max_sar_border: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {"chip_size": self.chip_size, "max_nodata_fraction": self.max_nodata,
                "max_cloud_fraction": self.max_cloud, "max_sar_border_fraction": self.max_sar_border}


@dataclass
class BandStats:
    """Partial sums for one band; merged in a fixed order so results are deterministic."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        v = values.astype(np.float64)
        self.count += int(v.size)
        self.total += float(v.sum())
        self.total_sq += float(np.square(v).sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def merge(self, other: "BandStats") -> None:
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def to_list(self) -> list:
        return [self.count, self.total, self.total_sq, self.min if self.count else None, self.max if self.count else None]

    @classmethod
    def from_list(cls, data: list) -> "BandStats":
        count, total, total_sq, lo, hi = data
        return cls(int(count), float(total), float(total_sq), math.inf if lo is None else float(lo), -math.inf if hi is None else float(hi))


class RawStats:
    """Exact sums of raw values for one band of one item (integers stay integers)."""

    def __init__(self) -> None:
        self.count, self.total, self.total_sq = 0, 0, 0
        self.min: float | None = None
        self.max: float | None = None

    def add(self, band: np.ndarray, valid: np.ndarray | None) -> None:
        v = band.ravel() if valid is None else band[valid]
        if v.size == 0:
            return
        if v.dtype.kind in "ui" and v.dtype.itemsize <= 2:
            f = v.astype(np.float64)       # squares and sums of 16-bit values stay exact in float64
            self.total += int(v.sum(dtype=np.int64))
            self.total_sq += int(np.square(f).sum())
        else:
            f = v.astype(np.float64)
            self.total += float(f.sum())
            self.total_sq += float(np.square(f).sum())
        self.add_range(int(v.size), v.min(), v.max())

    def add_range(self, count: int, lo: float, hi: float) -> None:
        """Count ``count`` more values whose extremes are ``lo`` and ``hi`` (the sums are added by the caller)."""
        self.count += count
        self.min = float(lo) if self.min is None else min(self.min, float(lo))
        self.max = float(hi) if self.max is None else max(self.max, float(hi))

    def physical(self, scale: float, offset: float) -> BandStats:
        """The same sums for ``raw * scale + offset``."""
        if not self.count:
            return BandStats()
        n, s1, s2 = self.count, float(self.total), float(self.total_sq)
        lo, hi = sorted((self.min * scale + offset, self.max * scale + offset))
        return BandStats(n, scale * s1 + offset * n, scale * scale * s2 + 2 * scale * offset * s1 + offset * offset * n, lo, hi)


@dataclass
class ItemResult:
    """What one item gave: encoded samples in chip order, stats and counts."""

    samples: list[tuple[str, bytes, bytes]] = field(default_factory=list)   # (key, pixels.npy, meta.json)
    stats: list[BandStats] = field(default_factory=list)
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def encode_npy(array: np.ndarray) -> bytearray:
    """``np.save``'s bytes for ``array``, made with a single copy of the pixels (``array`` may be a
    strided view)."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(array))
    header = head.getvalue()
    out = bytearray(len(header) + array.nbytes)
    out[:len(header)] = header
    np.frombuffer(out, dtype=array.dtype, offset=len(header)).reshape(array.shape)[...] = array
    return out


def encode_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def chip_offsets(length: int, size: int) -> range:
    """Offsets of the full chips along one axis of a grid."""
    return range(0, length - size + 1, size)


def chip_windows(height: int, width: int, size: int) -> Iterator[tuple[int, int]]:
    """Row/col offsets of the full chips of a grid, row-major."""
    for row in chip_offsets(height, size):
        for col in chip_offsets(width, size):
            yield row, col


def _apply(t, col: float, row: float) -> tuple[float, float]:
    return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f


def grid_bounds(t, col: float, row: float, width: float, height: float) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a pixel window under affine ``t``."""
    corners = [_apply(t, c, r) for c in (col, col + width) for r in (row, row + height)]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return min(xs), min(ys), max(xs), max(ys)


def bounds_window(t, bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """(col_off, row_off, width, height) covering ``bounds`` on the grid of affine ``t``."""
    inv = ~t
    left, bottom, right, top = bounds
    corners = [_apply(inv, x, y) for x in (left, right) for y in (bottom, top)]
    cols, rows = [c[0] for c in corners], [c[1] for c in corners]
    return min(cols), min(rows), max(cols) - min(cols), max(rows) - min(rows)


def _round(values, ndigits: int = 9) -> list[float]:
    return [round(float(v), ndigits) for v in values]


class _Reader:
    """Open datasets of one item and read rectangles of the reference grid from them.

    Assets on the reference grid are read directly. Coarser north-up assets are read once at their
    native resolution over the rectangle and sampled onto the reference grid by index (the coarse
    pixel containing each reference pixel centre: nearest neighbour), which is what GDAL's nearest
    does but without resampling inside every read. Other grids (rotated) go through GDAL.
    """

    def __init__(self, plan: ItemPlan, sign_href: Callable[[str], str]):
        import rasterio

        self.rasterio = rasterio
        self.plan = plan
        self.sign = sign_href
        self.datasets: dict[str, Any] = {}
        self.names: dict[str, str] = {}

    def open(self, href: str, asset: str):
        if href not in self.datasets:
            try:
                ds = self.rasterio.open(read_href(self.sign(href)))
            except Exception as exc:  # noqa: BLE001 - any open failure makes the item unusable
                raise ItemError(f"asset {asset!r} ({href}) cannot be opened: {_short(exc)}") from None
            try:
                self.datasets[href] = self._georeferenced(ds, href, asset)
            except BaseException:
                ds.close()
                raise
            self.names[href] = asset
        return self.datasets[href]

    def _georeferenced(self, ds, href: str, asset: str):
        """SAR assets through ``ingest.sar`` (GCP geocoding, quantity); others must have a geotransform."""
        channel = next((c for c in self.plan.channels if c.valid and c.href == href), None)
        if self.plan.sar and channel is not None:
            return open_sar(ds, channel, self.sign)
        if not has_georeferencing(ds):
            raise ItemError(f"asset {asset!r} ({href}) has no geotransform: its pixels cannot be placed on a map")
        return ds

    def close(self) -> None:
        for ds in self.datasets.values():
            ds.close()

    def read(self, href: str, indexes: list[int], ref_transform, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Bands ``indexes`` of ``href`` over rows/cols of the reference grid, as (n, height, width)."""
        ds = self.datasets[href]
        try:
            if ds.transform == ref_transform:
                data = self._window(ds, indexes, col, row, width, height, None)
            elif _north_up(ds.transform) and _north_up(ref_transform):
                data = self._sampled(ds, indexes, ref_transform, row, col, height, width)
            else:
                bounds = grid_bounds(ref_transform, col, row, width, height)
                c, r, w, h = bounds_window(ds.transform, bounds)
                # keep the fractional window: rounding it misplaces coarse pixels
                data = self._window(ds, indexes, round(c, 6), round(r, 6), max(1e-6, round(w, 6)),
                                    max(1e-6, round(h, 6)), (len(indexes), height, width))
        except ItemError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated/corrupt COG fails here
            raise ItemError(f"asset {self.names[href]!r} ({href}) cannot be read: {_short(exc)}") from None
        if data.shape[1:] != (height, width):
            raise ItemError(f"asset {self.names[href]!r} gave a {data.shape} window for a {height}x{width} px read")
        return data

    def _window(self, ds, indexes: list[int], col: float, row: float, width: float, height: float,
                out_shape: tuple[int, int, int] | None) -> np.ndarray:
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        inside = col >= 0 and row >= 0 and col + width <= ds.width and row + height <= ds.height
        kwargs: dict[str, Any] = {"indexes": indexes, "window": Window(col, row, width, height)}
        if out_shape is not None:
            kwargs.update(out_shape=out_shape, resampling=Resampling.nearest)
        if not inside:
            kwargs.update(boundless=True, fill_value=ds.nodata if ds.nodata is not None else 0)
        return ds.read(**kwargs)

    def _sampled(self, ds, indexes: list[int], ref, row: int, col: int, height: int, width: int) -> np.ndarray:
        t = ds.transform
        cols = np.floor((ref.c + (np.arange(col, col + width) + 0.5) * ref.a - t.c) / t.a).astype(np.int64)
        rows = np.floor((ref.f + (np.arange(row, row + height) + 0.5) * ref.e - t.f) / t.e).astype(np.int64)
        fill = ds.nodata if ds.nodata is not None else 0
        col_ok = (cols >= 0) & (cols < ds.width)
        row_ok = (rows >= 0) & (rows < ds.height)
        if not col_ok.any() or not row_ok.any():
            return np.full((len(indexes), height, width), fill, dtype=ds.dtypes[indexes[0] - 1])
        c0, c1 = int(cols[col_ok].min()), int(cols[col_ok].max()) + 1
        r0, r1 = int(rows[row_ok].min()), int(rows[row_ok].max()) + 1
        native = self._window(ds, indexes, c0, r0, c1 - c0, r1 - r0, None)
        sampled = native.take(rows[row_ok] - r0, axis=1).take(cols[col_ok] - c0, axis=2)  # take: faster than fancy indexing
        if col_ok.all() and row_ok.all():
            return sampled
        out = np.full((len(indexes), height, width), fill, dtype=native.dtype)
        out[np.ix_(np.arange(len(indexes)), np.flatnonzero(row_ok), np.flatnonzero(col_ok))] = sampled
        return out


def _north_up(t) -> bool:
    return t.b == 0 and t.d == 0 and t.a != 0 and t.e != 0


def _warn_nodata_mismatch(plan: ItemPlan, reader: "_Reader") -> None:
    """One warning per asset whose file nodata disagrees with the item's (the item's value is used)."""
    import logging

    seen = set()
    for ch in _present(plan.channels):
        file_nodata = reader.datasets[ch.href].nodatavals[ch.index - 1]
        if ch.asset in seen or file_nodata is None or ch.nodata is None:
            continue
        same = (math.isnan(file_nodata) and math.isnan(ch.nodata)) or file_nodata == ch.nodata
        if not same:
            seen.add(ch.asset)
            logging.getLogger("ofa.ingest").warning(
                "item %s asset %r: the file's nodata %s differs from the item's nodata %s; using the item's",
                plan.item_id, ch.asset, file_nodata, ch.nodata)


def _short(exc: BaseException) -> str:
    """One line: the exception and the GDAL error under it (rasterio chains it as the cause)."""
    text = " ".join(str(exc).split())
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({' '.join(str(cause).split())})"
    return f"{type(exc).__name__}: {redact(text)[:400]}"   # GDAL quotes the opened name: signed tokens and all


def _geometry_range(geometry: dict | None, crs, transform, height: int, width: int) -> tuple[int, int, int, int]:
    """Rows/cols of a grid covered by the bounds of a WGS84 geometry (the whole grid if unknown)."""
    if not geometry:
        return 0, height, 0, width
    try:
        from rasterio.features import bounds as geom_bounds
        from rasterio.warp import transform_geom

        geom = transform_geom("EPSG:4326", crs, geometry)
        col, row, w, h = bounds_window(transform, geom_bounds(geom))
    except Exception:  # noqa: BLE001 - a geometry we cannot use just means "no restriction"
        return 0, height, 0, width
    return (max(0, int(math.floor(row))), min(height, int(math.ceil(row + h))),
            max(0, int(math.floor(col))), min(width, int(math.ceil(col + w))))


def _valid_window_range(plan: ItemPlan, crs, transform, height: int, width: int) -> tuple[int, int, int, int]:
    """Rows/cols of the reference grid inside the item geometry and the search area (if any)."""
    r0, r1, c0, c1 = _geometry_range(plan.geometry, crs, transform, height, width)
    a0, a1, b0, b1 = _geometry_range(plan.aoi, crs, transform, height, width)
    return max(r0, a0), min(r1, a1), max(c0, b0), min(c1, b1)


def mask_flags(mask: np.ndarray, plan: ItemPlan) -> tuple[np.ndarray, np.ndarray]:
    """(fill, cloud) boolean maps from a cloud-mask chip, by the sensor's rule."""
    if plan.mask_rule == "classes":
        if mask.dtype in (np.uint8, np.uint16):  # a lookup table per class list: several times faster than isin
            fill, cloud = (np.zeros(2 ** (8 * mask.dtype.itemsize), dtype=bool) for _ in range(2))
            fill[[c for c in plan.mask_fill if 0 <= c < fill.size]] = True
            cloud[[c for c in plan.mask_cloud if 0 <= c < cloud.size]] = True
            return fill[mask], cloud[mask]
        m = mask.astype(np.int64)
        return np.isin(m, plan.mask_fill), np.isin(m, plan.mask_cloud)
    m = mask.astype(np.int64)
    if plan.mask_rule == "bits":
        fill = np.zeros(m.shape, dtype=bool)
        cloud = np.zeros(m.shape, dtype=bool)
        for bit in plan.mask_fill:
            fill |= (m >> bit) & 1 == 1
        for bit in plan.mask_cloud:
            cloud |= (m >> bit) & 1 == 1
        return fill, cloud
    raise ItemError(f"unknown cloud-mask rule {plan.mask_rule!r}")


def _present(channels: tuple[ChannelPlan, ...]) -> list[ChannelPlan]:
    """The channels read from the item (not the zero-filled invalid ones)."""
    return [c for c in channels if c.valid]


def band_flags(pixels: np.ndarray, channels: tuple[ChannelPlan, ...], sar: bool) -> tuple[np.ndarray, np.ndarray]:
    """(nodata, sar_border) boolean maps from the valid bands of a chip (SAR border: all of them 0 in an
    integer product; in calibrated dB products the border is no data)."""
    nodata = np.zeros(pixels.shape[1:], dtype=bool)
    valid = [i for i, ch in enumerate(channels) if ch.valid]
    for i in valid:
        band, ch = pixels[i], channels[i]
        if ch.nodata is not None:
            nodata |= np.isnan(band) if math.isnan(ch.nodata) else band == ch.nodata
    border = np.all(pixels[valid] == 0, axis=0) if sar and pixels.dtype.kind in "ui" else np.zeros_like(nodata)
    return nodata, border


def _masks(pixels: np.ndarray, channels: tuple[ChannelPlan, ...], mask: np.ndarray | None, plan: ItemPlan):
    """(nodata, sar_border, cloud) boolean maps of a chip (cloud is None without a mask)."""
    nodata, border = band_flags(pixels, channels, plan.sar)
    if mask is None:
        return nodata, border, None
    fill, cloud = mask_flags(mask, plan)
    return nodata | fill, border, cloud


def add_chip_stats(raw: list[RawStats], chip: np.ndarray, valid: np.ndarray | None) -> None:
    """Add one chip's bands to per-band sums (all bands at once when every pixel is valid)."""
    flat = chip.reshape(chip.shape[0], -1)
    # squares of 16-bit integers summed in float64 stay exact below 2**21 values per band
    if valid is None and flat.dtype.kind in "ui" and flat.dtype.itemsize <= 2 and flat.shape[1] < 2**21:
        totals = flat.sum(axis=1, dtype=np.int64)
        f = flat.astype(np.float64)
        squares = np.einsum("ij,ij->i", f, f)
        lows, highs = flat.min(axis=1), flat.max(axis=1)
        for r, total, sq, lo, hi in zip(raw, totals, squares, lows, highs):
            r.total += int(total)
            r.total_sq += int(sq)
            r.add_range(flat.shape[1], lo, hi)
        return
    for r, band in zip(raw, chip):
        r.add(band, valid)


def _per_chip(flags: np.ndarray, size: int) -> np.ndarray:
    """Count of true pixels in each ``size`` x ``size`` chip of a (size, k * size) row of flags."""
    return flags.reshape(size, -1, size).sum(axis=(0, 2), dtype=np.int64)


def _runs(keep: np.ndarray) -> Iterator[tuple[int, int]]:
    """``[a, b)`` index ranges of consecutive true values."""
    start = None
    for i, k in enumerate(keep):
        if k and start is None:
            start = i
        elif not k and start is not None:
            yield start, i
            start = None
    if start is not None:
        yield start, len(keep)


class _ChipBoxes:
    """WGS84 bounds of chips, one chip row at a time: every chip edge densified as ``transform_bounds``
    does (corners + 21 points), the whole row projected in one call. Chips that cross the antimeridian
    or come near a pole go through ``transform_bounds`` itself."""

    EDGE = np.linspace(0.0, 1.0, 23)

    def __init__(self, crs, transform, size: int, cols: list[int]):
        self.crs, self.t, self.size, self.cols = crs, transform, size, cols
        self.geographic = crs.to_epsg() == 4326
        self.row, self.boxes = -1, {}

    def bbox(self, col: int, row: int) -> tuple[float, float, float, float]:
        if self.geographic:
            return grid_bounds(self.t, col, row, self.size, self.size)
        if row != self.row:
            self.row, self.boxes = row, self._project_row(row)
        return self.boxes[col]

    def _project_row(self, row: int) -> dict[int, tuple[float, float, float, float]]:
        from rasterio.warp import transform, transform_bounds

        e, size = self.EDGE * self.size, self.size
        ring_c = np.concatenate([e, np.full_like(e, size), e[::-1], np.zeros_like(e)])
        ring_r = np.concatenate([np.zeros_like(e), e, np.full_like(e, size), e[::-1]]) + row
        cs = np.concatenate([ring_c + col for col in self.cols])
        rs = np.tile(ring_r, len(self.cols))
        t = self.t
        lon, lat = transform(self.crs, "EPSG:4326", t.a * cs + t.b * rs + t.c, t.d * cs + t.e * rs + t.f)
        lon, lat = np.asarray(lon).reshape(len(self.cols), -1), np.asarray(lat).reshape(len(self.cols), -1)
        boxes = {}
        for i, col in enumerate(self.cols):
            x, y = lon[i], lat[i]
            if not (np.isfinite(x).all() and np.isfinite(y).all()) or x.max() - x.min() > 180.0 or abs(y).max() > 89.0:
                boxes[col] = transform_bounds(self.crs, "EPSG:4326", *grid_bounds(t, col, row, size, size), densify_pts=21)
            else:
                boxes[col] = (float(x.min()), float(y.min()), float(x.max()), float(y.max()))
        return boxes


def _stack(parts: dict[str, np.ndarray], layers: list[tuple[str, int] | None]) -> np.ndarray:
    """The chip-row pixels in channel order; zeros (in the read bands' dtype) for invalid channels."""
    read = [parts[layer[0]][layer[1]] for layer in layers if layer is not None]
    zero = np.zeros_like(read[0])
    return np.stack([zero if layer is None else parts[layer[0]][layer[1]] for layer in layers])


def _drop(result: "ItemResult", reason: str, on_chip: Callable[[int], None] | None) -> None:
    result.dropped[reason] += 1
    if on_chip:
        on_chip(1)


def process_item(plan: ItemPlan, options: ChipOptions, sign_href: Callable[[str], str] = identity_href,
                 on_chip: Callable[[int], None] | None = None) -> ItemResult:
    """Read, filter and encode every chip of one item. Raises ``ItemError`` for an unusable item."""
    import rasterio
    from rasterio.crs import CRS

    size = options.chip_size
    result = ItemResult(dropped={r: 0 for r in DROP_REASONS})
    raw = [RawStats() for _ in plan.channels]
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MAX_RETRY="3", GDAL_HTTP_RETRY_DELAY="1",
                      VSI_CACHE="TRUE", GDAL_HTTP_MERGE_CONSECUTIVE_RANGES="YES", GDAL_INGESTED_BYTES_AT_OPEN="65536"):
        reader = _Reader(plan, sign_href)
        try:
            for ch in _present(plan.channels):
                reader.open(ch.href, ch.asset)
            if plan.mask_href:
                reader.open(plan.mask_href, plan.mask_asset or "mask")
            ref_href = min((ch.href for ch in _present(plan.channels)), key=lambda h: abs(reader.datasets[h].transform.a))
            ref = reader.datasets[ref_href]
            crs = ref.crs
            if crs is None and plan.crs:
                try:
                    crs = CRS.from_user_input(plan.crs)
                except Exception as exc:  # noqa: BLE001
                    raise ItemError(f"unknown CRS {plan.crs!r}: {_short(exc)}") from None
            if crs is None:
                raise ItemError("unknown CRS: neither the asset nor the item (proj:code/proj:epsg) gives one")
            for href, ds in reader.datasets.items():
                if ds.crs is not None and crs is not None and ds.crs != crs:
                    raise ItemError(f"asset {reader.names[href]!r} is in {ds.crs.to_string()}, "
                                    f"the item's finest band in {crs.to_string()}; mixed CRSs are not supported")
            for ch in _present(plan.channels):
                if ch.index > reader.datasets[ch.href].count:
                    raise ItemError(f"asset {ch.asset!r} has {reader.datasets[ch.href].count} bands, band {ch.name} needs index {ch.index}")
            _warn_nodata_mismatch(plan, reader)
            epsg = crs.to_epsg()
            crs_text = f"EPSG:{epsg}" if epsg else crs.to_string()
            ref_transform = ref.transform
            gsd = abs(ref_transform.a) * (crs.linear_units_factor[1] if crs.is_projected else 0.0)
            if not crs.is_projected:
                gsd = min(ch.gsd for ch in plan.channels)
            by_href: dict[str, list[int]] = {}
            layers: list[tuple[str, int] | None] = []   # (href, position in that href's read) per channel; None: zero-filled
            for ch in plan.channels:
                layers.append((ch.href, len(by_href.setdefault(ch.href, []))) if ch.valid else None)
                if ch.valid:
                    by_href[ch.href].append(ch.index)
            r0, r1, c0, c1 = _valid_window_range(plan, crs, ref_transform, ref.height, ref.width)
            cols = [c for c in chip_offsets(ref.width, size) if c + size > c0 and c < c1]
            rows = [r for r in chip_offsets(ref.height, size) if r + size > r0 and r < r1]
            boxes = _ChipBoxes(crs, ref_transform, size, cols)
            common = {
                "sensor": plan.sensor, "bands": [ch.name for ch in plan.channels],
                "wavelengths": [ch.wavelength for ch in plan.channels], "gsd": round(float(gsd), 6),
                "nodata": [ch.nodata for ch in plan.channels], "scale": [ch.scale for ch in plan.channels],
                "offset": [ch.offset for ch in plan.channels], "crs": crs_text, "datetime": plan.datetime,
                "item_id": plan.item_id, "collection": plan.collection, "quantity": plan.quantity,
                "band_valid": [ch.valid for ch in plan.channels],
            }
            n = float(size * size)
            for row in rows if cols else ():
                # one chip row at a time: the mask first (a chip it condemns costs no band read), then
                # each run of surviving chips in one read per asset
                keep = np.ones(len(cols), dtype=bool)
                fill = cloud_fraction = None
                if plan.mask_href:
                    mask = reader.read(plan.mask_href, [1], ref_transform, row, cols[0], size, len(cols) * size)[0]
                    fill, cloud = mask_flags(mask, plan)
                    fill_n = _per_chip(fill, size)
                    cloud_fraction = _per_chip(cloud & ~fill, size) / np.maximum(n - fill_n, 1.0)
                    for j in range(len(cols)):
                        if fill_n[j] / n > options.max_nodata:
                            keep[j] = False
                            _drop(result, "nodata", on_chip)
                        elif cloud_fraction[j] > options.max_cloud:
                            keep[j] = False
                            _drop(result, "cloud", on_chip)
                for a, b in _runs(keep):
                    x0, width = cols[a], (b - a) * size
                    parts = {h: reader.read(h, idx, ref_transform, row, x0, size, width) for h, idx in by_href.items()}
                    pixels = _stack(parts, layers)
                    nodata, border = band_flags(pixels, plan.channels, plan.sar)
                    if fill is not None:
                        nodata |= fill[:, (x0 - cols[0]):(x0 - cols[0]) + width]
                    invalid = nodata | border
                    invalid_n, border_n = _per_chip(invalid, size), _per_chip(border, size)
                    for j in range(b - a):
                        nodata_fraction, border_fraction = float(invalid_n[j]) / n, float(border_n[j]) / n
                        if border_fraction > options.max_sar_border:
                            _drop(result, "sar_border", on_chip)
                            continue
                        if nodata_fraction > options.max_nodata:
                            # SAR swath borders are all-zero in every polarisation: name them when they dominate
                            _drop(result, "sar_border" if border_fraction * 2 > nodata_fraction else "nodata", on_chip)
                            continue
                        if on_chip:
                            on_chip(1)
                        view = pixels[:, :, j * size:(j + 1) * size]
                        npy = encode_npy(view)   # the one copy of the chip: its contiguous pixels live in there
                        chip = np.frombuffer(npy, view.dtype, offset=len(npy) - view.nbytes).reshape(view.shape)
                        add_chip_stats(raw, chip, None if invalid_n[j] == 0 else ~invalid[:, j * size:(j + 1) * size])
                        col = x0 + j * size
                        x, y = _apply(ref_transform, col, row)
                        t = ref_transform
                        frac = None if cloud_fraction is None else round(float(cloud_fraction[a + j]), 6)
                        meta = {
                            **common, "dtype": chip.dtype.name, "transform": _round([t.a, t.b, x, t.d, t.e, y], 12),
                            "bbox": _round(boxes.bbox(col, row), 9),
                            "window": {"col_off": col, "row_off": row, "width": size, "height": size},
                            "cloud_fraction": frac, "nodata_fraction": round(nodata_fraction, 6),
                        }
                        meta["pixels_crc32"] = pixels_checksum(npy)
                        result.samples.append((sample_key(plan.item_id, row, col), npy, encode_json(meta)))
                        result.kept += 1
        finally:
            reader.close()
    result.stats = [r.physical(ch.scale, ch.offset) if ch.valid else BandStats() for r, ch in zip(raw, plan.channels)]
    return result
