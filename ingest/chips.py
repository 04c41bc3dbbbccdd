"""Read one item into chips, in named stages: open the item's grid (the finest band's), plan each
chip row from the cloud mask (a chip it condemns costs no band read), read each run of surviving
chips in one read per asset (coarser bands sampled onto the chip grid by index), filter the chips
on their bands, and encode and describe each kept chip. Reads go through a ``GridReader``
(``ingest/readers.py``), so every storage format gives the same chips."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
from rasterio import warp
from rasterio.crs import CRS
from rasterio.features import bounds as geom_bounds

from ofa.ingest.config import ChipOptions
from ofa.ingest.dataset.contract import pixels_checksum, sample_key
from ofa.ingest.formats import reader_for
from ofa.ingest.grid import apply, bounds_window, chip_offsets, grid_bounds
from ofa.ingest.plans import ChannelPlan, ItemError, ItemPlan, identity_href
from ofa.ingest.readers import GridReader, short_error

#: drop reasons. Order of the checks: the cloud mask's fill and cloud fractions (before the bands
#: are read), then SAR border zeros (all polarisations 0) over their own threshold, then no data
#: (any band at its nodata value, mask fill or SAR border; counted as ``sar_border`` when the border
#: is most of it). ``nodata_fraction`` counts all of these; ``cloud_fraction`` is cloud pixels over
#: the pixels the mask does not mark as fill.
DROP_REASONS = ("nodata", "sar_border", "cloud")


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


def _round(values, ndigits: int = 9) -> list[float]:
    return [round(float(v), ndigits) for v in values]


def _warn_nodata_mismatch(plan: ItemPlan, reader: GridReader) -> None:
    """One warning per asset whose file nodata disagrees with the item's (the item's value is used)."""
    seen = set()
    for ch in present(plan.channels):
        file_nodata = reader.grids[ch.href].nodatavals[ch.index - 1]
        if ch.asset in seen or file_nodata is None or ch.nodata is None:
            continue
        same = (math.isnan(file_nodata) and math.isnan(ch.nodata)) or file_nodata == ch.nodata
        if not same:
            seen.add(ch.asset)
            logging.getLogger("ofa.ingest").warning(
                "item %s asset %r: the file's nodata %s differs from the item's nodata %s; using the item's",
                plan.item_id, ch.asset, file_nodata, ch.nodata)


def _geometry_range(geometry: dict | None, crs, transform, height: int, width: int) -> tuple[int, int, int, int]:
    """Rows/cols of a grid covered by the bounds of a WGS84 geometry (the whole grid if unknown)."""
    if not geometry:
        return 0, height, 0, width
    try:
        geom = warp.transform_geom("EPSG:4326", crs, geometry)
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


def present(channels: tuple[ChannelPlan, ...]) -> list[ChannelPlan]:
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
    # sums and squares of 16-bit integers summed in float64 stay exact (whole numbers below 2**53) up to
    # 2**21 values per band; one float64 copy serves both (a uint16 -> int64 sum costs twice as much)
    if valid is None and flat.dtype.kind in "ui" and flat.dtype.itemsize <= 2 and flat.shape[1] < 2**21:
        f = flat.astype(np.float64)
        totals = np.einsum("ij->i", f)
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
        e, size = self.EDGE * self.size, self.size
        ring_c = np.concatenate([e, np.full_like(e, size), e[::-1], np.zeros_like(e)])
        ring_r = np.concatenate([np.zeros_like(e), e, np.full_like(e, size), e[::-1]]) + row
        cs = np.concatenate([ring_c + col for col in self.cols])
        rs = np.tile(ring_r, len(self.cols))
        t = self.t
        lon, lat = warp.transform(self.crs, "EPSG:4326", t.a * cs + t.b * rs + t.c, t.d * cs + t.e * rs + t.f)
        lon, lat = np.asarray(lon).reshape(len(self.cols), -1), np.asarray(lat).reshape(len(self.cols), -1)
        boxes = {}
        for i, col in enumerate(self.cols):
            x, y = lon[i], lat[i]
            if not (np.isfinite(x).all() and np.isfinite(y).all()) or x.max() - x.min() > 180.0 or abs(y).max() > 89.0:
                boxes[col] = warp.transform_bounds(self.crs, "EPSG:4326", *grid_bounds(t, col, row, size, size), densify_pts=21)
            else:
                boxes[col] = (float(x.min()), float(y.min()), float(x.max()), float(y.max()))
        return boxes




# ------------------------------------------------------------------ the stages of one item
@dataclass(frozen=True)
class ItemGrid:
    """The reference grid of an item (its finest band's) and how its channels are read."""

    crs: Any                          # rasterio CRS
    crs_text: str                     # as samples record it, e.g. "EPSG:32633"
    transform: Any                    # affine of the reference grid
    height: int
    width: int
    gsd: float
    reads: dict[str, list[int]]       # href -> band indexes: one read per asset per run of chips
    layers: list[tuple[str, int] | None]   # per channel: (href, position in that href's read); None: zero-filled


def _grid_crs(plan: ItemPlan, reader: GridReader, ref) -> Any:
    """The reference asset's CRS (the item's proj:code/proj:epsg when the asset has none); all assets must share it."""
    crs = ref.crs
    if crs is None and plan.crs:
        try:
            crs = CRS.from_user_input(plan.crs)
        except Exception as exc:  # noqa: BLE001
            raise ItemError(f"unknown CRS {plan.crs!r}: {short_error(exc)}") from None
    if crs is None:
        raise ItemError("unknown CRS: neither the asset nor the item (proj:code/proj:epsg) gives one")
    for href, g in reader.grids.items():
        if g.crs is not None and g.crs != crs:
            raise ItemError(f"asset {reader.names[href]!r} is in {g.crs.to_string()}, "
                            f"the item's finest band in {crs.to_string()}; mixed CRSs are not supported")
    return crs


def decode_channels(plan: ItemPlan, reader: GridReader) -> ItemPlan:
    """``plan`` with the scale, offset and nodata of channels whose asset carries its own encoding
    (CF attributes of a Zarr array) taken from that encoding: values stay as stored, described the
    way the contract describes COG values."""
    channels = []
    for ch in plan.channels:
        g = reader.grids.get(ch.href) if ch.valid else None
        if g is not None and g.decoded:
            nodata = g.nodatavals[ch.index - 1] if ch.index <= g.count else None
            ch = dataclasses.replace(ch, scale=ch.scale if g.scale is None else g.scale,
                                     offset=ch.offset if g.offset is None else g.offset,
                                     nodata=ch.nodata if nodata is None else nodata)
        channels.append(ch)
    return dataclasses.replace(plan, channels=tuple(channels)) if tuple(channels) != plan.channels else plan


def open_grid(plan: ItemPlan, reader: GridReader) -> tuple[ItemPlan, ItemGrid]:
    """Open every asset of ``plan``, check CRSs and band counts, and describe the reference grid;
    returns the plan with the assets' own encodings applied (``decode_channels``)."""
    for ch in present(plan.channels):
        reader.open(ch.href, ch.asset)
    if plan.mask_href:
        reader.open(plan.mask_href, plan.mask_asset or "mask")
    plan = decode_channels(plan, reader)
    ref = min((reader.grids[ch.href] for ch in present(plan.channels)), key=lambda g: abs(g.transform.a))
    crs = _grid_crs(plan, reader, ref)
    for ch in present(plan.channels):
        if ch.index > reader.grids[ch.href].count:
            raise ItemError(f"asset {ch.asset!r} has {reader.grids[ch.href].count} bands, band {ch.name} needs index {ch.index}")
    _warn_nodata_mismatch(plan, reader)
    epsg = crs.to_epsg()
    if crs.is_projected:
        gsd = abs(ref.transform.a) * crs.linear_units_factor[1]
    else:
        gsd = min(ch.gsd for ch in plan.channels)
    reads: dict[str, list[int]] = {}
    layers: list[tuple[str, int] | None] = []
    for ch in plan.channels:
        layers.append((ch.href, len(reads.setdefault(ch.href, []))) if ch.valid else None)
        if ch.valid:
            reads[ch.href].append(ch.index)
    return plan, ItemGrid(crs, f"EPSG:{epsg}" if epsg else crs.to_string(), ref.transform, ref.height, ref.width,
                          gsd, reads, layers)


def chip_grid(plan: ItemPlan, grid: ItemGrid, size: int) -> tuple[list[int], list[int]]:
    """Offsets of the chip rows and columns that touch the item's geometry and the search area."""
    r0, r1, c0, c1 = _valid_window_range(plan, grid.crs, grid.transform, grid.height, grid.width)
    cols = [c for c in chip_offsets(grid.width, size) if c + size > c0 and c < c1]
    rows = [r for r in chip_offsets(grid.height, size) if r + size > r0 and r < r1]
    if not rows or not cols:   # an item that gives nothing says why (a skipped entry), never a silent 0
        raise ItemError(_no_chip_reason(plan, grid.width, grid.height, size))
    return rows, cols


def _no_chip_reason(plan: ItemPlan, width: int, height: int, size: int) -> str:
    """Why an item has no chip window: smaller than one chip, or none inside its footprint/search area."""
    if width < size or height < size:
        return f"smaller than one chip: {width}x{height} px on its finest band, chip size {size}"
    where = "the item's footprint" + (" and the search area" if plan.aoi else "")
    return f"no {size}x{size} px chip window lies inside {where}"


def chip_verdict(nodata_fraction: float, border_fraction: float, options: ChipOptions) -> str | None:
    """Why a chip is dropped once its bands are read (None: it is kept)."""
    if border_fraction > options.max_sar_border:
        return "sar_border"
    if nodata_fraction > options.max_nodata:
        # SAR swath borders are all-zero in every polarisation: name them when they dominate
        return "sar_border" if border_fraction * 2 > nodata_fraction else "nodata"
    return None


class _Chipper:
    """The chips of one item, one chip row at a time, into an ``ItemResult``."""

    def __init__(self, plan: ItemPlan, options: ChipOptions, reader: GridReader, grid: ItemGrid, cols: list[int],
                 on_chip: Callable[[int], None] | None):
        self.plan, self.options, self.reader, self.grid, self.cols = plan, options, reader, grid, cols
        self.on_chip = on_chip
        self.size = options.chip_size
        self.n = float(self.size * self.size)
        self.result = ItemResult(dropped={r: 0 for r in DROP_REASONS})
        self.raw = [RawStats() for _ in plan.channels]
        self.boxes = _ChipBoxes(grid.crs, grid.transform, self.size, cols)
        self.common = {
            "sensor": plan.sensor, "bands": [ch.name for ch in plan.channels],
            "wavelengths": [ch.wavelength for ch in plan.channels], "gsd": round(float(grid.gsd), 6),
            "nodata": [ch.nodata for ch in plan.channels], "scale": [ch.scale for ch in plan.channels],
            "offset": [ch.offset for ch in plan.channels], "crs": grid.crs_text, "datetime": plan.datetime,
            "item_id": plan.item_id, "collection": plan.collection, "quantity": plan.quantity,
            "band_valid": [ch.valid for ch in plan.channels],
        }

    def row(self, row: int) -> None:
        """Plan, read, filter and encode one chip row."""
        keep, fill, cloud_fraction = self.plan_row(row)
        size = self.size
        for a, b in _runs(keep):
            x0, width = self.cols[a], (b - a) * size
            pixels = self.read(row, x0, width)
            invalid, invalid_n, border_n = self.flags(pixels, fill, x0, width)
            for j in range(b - a):
                nodata_fraction, border_fraction = float(invalid_n[j]) / self.n, float(border_n[j]) / self.n
                reason = chip_verdict(nodata_fraction, border_fraction, self.options)
                if reason:
                    self.drop(reason)
                    continue
                self.counted()
                valid = None if invalid_n[j] == 0 else ~invalid[:, j * size:(j + 1) * size]
                frac = None if cloud_fraction is None else round(float(cloud_fraction[a + j]), 6)
                self.encode(pixels[:, :, j * size:(j + 1) * size], valid, row, x0 + j * size, frac, nodata_fraction)

    def plan_row(self, row: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(chips kept, mask fill map, cloud fraction per chip) of a row, from the cloud mask alone."""
        keep = np.ones(len(self.cols), dtype=bool)
        if not self.plan.mask_href:
            return keep, None, None
        size, n = self.size, self.n
        mask = self.reader.read(self.plan.mask_href, [1], self.grid.transform, row, self.cols[0], size,
                                len(self.cols) * size)[0]
        fill, cloud = mask_flags(mask, self.plan)
        fill_n = _per_chip(fill, size)
        cloud_fraction = _per_chip(cloud & ~fill, size) / np.maximum(n - fill_n, 1.0)
        for j in range(len(self.cols)):
            if fill_n[j] / n > self.options.max_nodata:
                keep[j] = False
                self.drop("nodata")
            elif cloud_fraction[j] > self.options.max_cloud:
                keep[j] = False
                self.drop("cloud")
        return keep, fill, cloud_fraction

    def read(self, row: int, x0: int, width: int) -> np.ndarray:
        """Every channel over a run of chips, (C, size, width): one read per asset."""
        g = self.grid
        parts = {h: self.reader.read(h, idx, g.transform, row, x0, self.size, width) for h, idx in g.reads.items()}
        zero = np.zeros_like(next(iter(parts.values()))[0])   # invalid channels, in the read bands' dtype
        return np.stack([zero if layer is None else parts[layer[0]][layer[1]] for layer in g.layers])

    def flags(self, pixels: np.ndarray, fill: np.ndarray | None, x0: int, width: int):
        """(invalid map, invalid pixels per chip, SAR border pixels per chip) of a run of chips."""
        nodata, border = band_flags(pixels, self.plan.channels, self.plan.sar)
        if fill is not None:
            nodata |= fill[:, (x0 - self.cols[0]):(x0 - self.cols[0]) + width]
        invalid = nodata | border
        return invalid, _per_chip(invalid, self.size), _per_chip(border, self.size)

    def encode(self, view: np.ndarray, valid: np.ndarray | None, row: int, col: int, cloud_fraction: float | None,
               nodata_fraction: float) -> None:
        """Encode one kept chip (pixels.npy, meta.json) and add it to the statistics."""
        npy = encode_npy(view)   # the one copy of the chip: its contiguous pixels live in there
        chip = np.frombuffer(npy, view.dtype, offset=len(npy) - view.nbytes).reshape(view.shape)
        add_chip_stats(self.raw, chip, valid)
        t = self.grid.transform
        x, y = apply(t, col, row)
        meta = {
            **self.common, "dtype": chip.dtype.name, "transform": _round([t.a, t.b, x, t.d, t.e, y], 12),
            "bbox": _round(self.boxes.bbox(col, row), 9),
            "window": {"col_off": col, "row_off": row, "width": self.size, "height": self.size},
            "cloud_fraction": cloud_fraction, "nodata_fraction": round(nodata_fraction, 6),
            "pixels_crc32": pixels_checksum(npy),
        }
        self.result.samples.append((sample_key(self.plan.item_id, row, col), npy, encode_json(meta)))
        self.result.kept += 1

    def drop(self, reason: str) -> None:
        self.result.dropped[reason] += 1
        self.counted()

    def counted(self) -> None:
        if self.on_chip:
            self.on_chip(1)

    def finish(self) -> ItemResult:
        self.result.stats = [r.physical(ch.scale, ch.offset) if ch.valid else BandStats()
                             for r, ch in zip(self.raw, self.plan.channels)]
        return self.result


def process_item(plan: ItemPlan, options: ChipOptions, sign_href: Callable[[str], str] = identity_href,
                 on_chip: Callable[[int], None] | None = None) -> ItemResult:
    """Read, filter and encode every chip of one item. Raises ``ItemError`` for an unusable item."""
    with reader_for(plan, sign_href) as reader:
        plan, grid = open_grid(plan, reader)
        rows, cols = chip_grid(plan, grid, options.chip_size)
        chipper = _Chipper(plan, options, reader, grid, cols, on_chip)
        for row in rows:
            chipper.row(row)
        reader.verify()
    return chipper.finish()
