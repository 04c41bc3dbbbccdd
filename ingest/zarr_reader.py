"""Zarr arrays as a ``GridReader``: EOPF products and Zarr datacubes through xarray and zarr
(format 2 or 3; consolidated metadata used where the store has it) over fsspec/s3fs.

An array is a (y, x) variable, optionally with a time dimension (the step at the item's datetime,
or the only one, is read) and one more dimension holding bands. Its grid comes from its pixel-centre
x/y coordinates (or ``proj:transform``); its CRS from a CF grid mapping, its ``proj:*`` attributes
or the product's metadata (the item's ``proj:code`` stays the chipper's fallback); its encoding from
its CF attributes (``scale_factor``, ``add_offset``, ``_FillValue``), values left as stored.

Reads are chunk-aligned: the chunks a window needs are fetched (missing ones in one selection) and
kept until the chip rows have moved below them, so each chunk is read once per item and no read
loads a whole array. The first band read of a run of chips fetches the chunks every band needs there
at once (one thread per array), so object-store latency is paid once per run, not once per band.
"""
from __future__ import annotations

import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import xarray as xr
import zarr
from rasterio.crs import CRS
from rasterio.transform import Affine
from zarr.storage import WrapperStore

from ofa.ingest.limits import ReadLimits
from ofa.ingest.plans import ItemError
from ofa.ingest.readers import Grid, GridReader, short_error
from ofa.ingest.storage import fs_options

X_DIMS = ("x", "lon", "longitude")
Y_DIMS = ("y", "lat", "latitude")
TIME_DIMS = ("time", "t")
#: errors that mean "no such group or array" (other errors, e.g. a failing server, are failures)
_NOT_FOUND = (KeyError, FileNotFoundError)
_METADATA = (".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json")


@dataclass(frozen=True)
class ChunkRule:
    """How the chunks of one array are checked before zarr decodes them: ``codec`` is the array's compressor
    (``blosc``, ``zstd``, ``gzip``, ``zlib``; ``raw`` without one; None: not checked) and ``max_bytes`` the
    most one chunk may decode to (its declared size)."""

    codec: str | None
    max_bytes: int

    def check(self, key: str, raw: bytes) -> None:
        """Raise ``ItemError`` for a chunk that would decode past ``max_bytes`` (a compression bomb) or a blosc
        chunk shorter than its header records (blosc decodes a truncated chunk into garbage without an error)."""
        if self.codec == "blosc" and len(raw) >= 16:
            recorded, size = int.from_bytes(raw[12:16], "little"), int.from_bytes(raw[4:8], "little")
            if recorded != len(raw):
                raise ValueError(f"chunk {key} is damaged: {len(raw)} bytes, its blosc header says {recorded}")
        elif self.codec == "zstd":
            size = _zstd_size(raw, self.max_bytes)
        elif self.codec in ("gzip", "zlib"):
            size = _inflated_size(raw, self.max_bytes, 31 if self.codec == "gzip" else 15)
        elif self.codec == "raw":
            size = len(raw)
        else:
            return
        if size > self.max_bytes:
            raise ItemError(f"chunk {key} decompresses past its declared {self.max_bytes:,} bytes "
                            f"({'at least ' if size == self.max_bytes + 1 else ''}{size:,}): refused")


def _zstd_size(raw: bytes, limit: int) -> int:
    """The size a zstd frame decodes to: the size its header declares (the decoder holds it to that), or, when
    it declares none, what a decode bounded by ``limit`` gives (``limit + 1``: more than that)."""
    if len(raw) < 6 or raw[:4] != b"\x28\xb5\x2f\xfd":
        return 0   # not a zstd frame: the codec's own error names it
    fhd = raw[4]
    single, fcs_flag = (fhd >> 5) & 1, fhd >> 6
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    start = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    if size and len(raw) >= start + size:
        return int.from_bytes(raw[start:start + size], "little") + (256 if size == 2 else 0)
    from numcodecs import zstd

    try:
        zstd.decompress(raw, bytearray(limit))
    except RuntimeError as exc:
        return limit + 1 if "too small" in str(exc) else 0
    return limit


def _inflated_size(raw: bytes, limit: int, wbits: int) -> int:
    """What deflate data (gzip members, or a zlib stream) inflates to, counted up to ``limit + 1``."""
    total = 0
    while raw and total <= limit:
        inflate = zlib.decompressobj(wbits)
        try:
            total += len(inflate.decompress(raw, limit + 1 - total))
        except zlib.error:
            return total   # damaged: the codec's own error names it
        raw = inflate.unused_data if inflate.eof and wbits == 31 else b""
    return total


class _CheckedStore(WrapperStore):
    """A store that checks each chunk of the arrays it has rules for (``ChunkRule``) before zarr decodes it,
    and fetches metadata objects once."""

    rules: dict[str, ChunkRule] = {}   # array path -> rule
    metadata: dict[str, Any] = {}

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        if byte_range is None and key.endswith(_METADATA):
            if key not in self.metadata:   # a missing object (None) is remembered too
                self.metadata[key] = await super().get(key, prototype, byte_range)
            return self.metadata[key]
        buf = await super().get(key, prototype, byte_range)
        if buf is not None and byte_range is None:
            rule = next((r for p, r in self.rules.items() if key.startswith(f"{p}/")), None)
            if rule is not None:
                rule.check(key, buf.to_bytes())
        return buf


def _checked_store(store: Any) -> Any:
    """``store`` wrapped so that the chunks of registered arrays are checked (``ChunkRule``) and metadata
    objects are fetched once: xarray opens the root again for every group it reads, which over S3 cost four
    GETs (``.zgroup``, ``.zmetadata``, ``zarr.json``, ``.zattrs``) per group."""
    checked = _CheckedStore(store)
    checked.rules, checked.metadata = {}, {}
    return checked


#: compressor class names (numcodecs for Zarr 2, zarr.codecs for Zarr 3) -> the chunk check's codec name
_CODECS = {"blosc": "blosc", "blosccodec": "blosc", "zstd": "zstd", "zstdcodec": "zstd", "gzip": "gzip",
           "gzipcodec": "gzip", "zlib": "zlib"}


def guard_arrays(node: Any, prefix: str, store: Any, limits: ReadLimits) -> None:
    """Check the arrays of a Zarr group against ``limits`` from their metadata, before xarray opens the group
    (it loads 1-D coordinates whole), and give ``store`` the rule each one's chunks are checked by. The two
    largest dimensions of an array stand for its y/x (a band or time dimension is smaller)."""
    if not isinstance(node, zarr.Group):
        return
    for name, arr in node.arrays():
        path = f"{prefix}/{name}" if prefix else name
        fixed = arr.dtype.kind not in "OT"
        itemsize = arr.dtype.itemsize if fixed else 8
        if arr.ndim >= 2:
            rows, cols = sorted(arr.shape)[-2:]
            limits.check_pixels(rows, cols, f"Zarr array {path}")
        elif arr.ndim == 1:
            limits.check_chunk(arr.shape[0] * itemsize, f"Zarr array {path} (read whole)")
        declared = math.prod(arr.chunks) * itemsize
        limits.check_chunk(declared, f"a chunk of Zarr array {path}")
        compressors = tuple(arr.compressors)
        codec = "raw" if not compressors else _CODECS.get(type(compressors[-1]).__name__.lower())
        filtered = bool(getattr(arr.metadata, "filters", None)) or len(compressors) > 1
        sharded = getattr(arr, "shards", None) is not None
        store.rules[path] = ChunkRule(None if sharded or not fixed or (filtered and codec == "raw") else codec,
                                      declared * (8 if filtered else 1))


@dataclass
class _Array:
    """An opened variable and how a (bands, y, x) window is cut from it."""

    var: Any                     # xarray.DataArray, lazily indexed (no dask)
    ydim: str
    xdim: str
    band_dim: str | None
    fixed: dict[str, int]        # time step and length-1 dimensions
    chunks: tuple[int, int]      # chunk rows, chunk cols

    def read(self, indexes: list[int], rows: slice, cols: slice) -> np.ndarray:
        sel: dict[str, Any] = {**self.fixed, self.ydim: rows, self.xdim: cols}
        if self.band_dim is None:
            return self.var.isel(sel).transpose(self.ydim, self.xdim).values[None]
        sel[self.band_dim] = [i - 1 for i in indexes]
        return self.var.isel(sel).transpose(self.band_dim, self.ydim, self.xdim).values


class ZarrReader(GridReader):
    """Arrays of Zarr stores named by hrefs ``{store root}#{array path}|{array path}...`` (the
    first path that exists is read)."""

    def __init__(self, plan: Any, sign_href: Callable[[str], str]):
        super().__init__(sign_href)
        self.plan = plan
        self.roots: dict[str, Any] = {}                   # store root -> (store, zarr root group)
        self.datasets: dict[tuple[str, str], Any] = {}     # (root, group path) -> xarray.Dataset or None
        self.arrays: dict[str, _Array] = {}
        self.cache: dict[tuple[str, tuple[int, ...]], dict[tuple[int, int], np.ndarray]] = {}
        self.bands: dict[str, list[int]] = {}    # band href -> the indexes the chipper reads together
        for ch in plan.channels:
            if ch.valid:
                self.bands.setdefault(ch.href, []).append(ch.index)
        self.pool: Any = None

    def close(self) -> None:
        for ds in self.datasets.values():
            if ds is not None:
                ds.close()
        self.cache.clear()
        if self.pool is not None:
            self.pool.shutdown()

    # ------------------------------------------------------------------ opening
    def _open(self, href: str) -> Grid:
        root, _, wanted = href.partition("#")
        paths = [p for p in wanted.split("|") if p]
        found = next(((path, hit) for path in paths if (hit := self._variable(root, path)) is not None), None)
        if found is None:
            raise LookupError(f"the store has no array {' or '.join(paths)}")
        path, (ds, name) = found
        var = ds[name]
        array = _layout(var, path, self.plan.datetime)
        self.arrays[href] = array
        height, width = var.sizes[array.ydim], var.sizes[array.xdim]
        shape = var.attrs.get("proj:shape")
        if shape is not None and [int(v) for v in shape][-2:] != [height, width]:
            raise ValueError(f"array {path} is {height}x{width} but its proj:shape says {list(shape)}")
        count = var.sizes[array.band_dim] if array.band_dim else 1
        attrs = var.attrs
        fill = _number(attrs.get("_FillValue", attrs.get("missing_value")))
        return Grid(crs=self._crs(root, ds, var), transform=_transform(ds, var, array, path), width=width,
                    height=height, dtypes=(var.dtype.name,) * count, nodatavals=(fill,) * count, nodata=fill,
                    decoded=True, scale=_number(attrs.get("scale_factor")), offset=_number(attrs.get("add_offset")))

    def _root(self, root: str) -> tuple[Any, Any]:
        if root not in self.roots:
            url = self.sign(root)
            if "://" not in url or url.startswith("file://"):
                store: Any = zarr.storage.LocalStore(url.removeprefix("file://"), read_only=True)
            else:
                options = fs_options(url)
                if url.startswith("s3://"):   # s3fs would HEAD every chunk to decide on a split download
                    options.setdefault("max_concurrency", 1)
                store = zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=True)
            store = _checked_store(store)
            try:
                group = zarr.open_group(store, mode="r", use_consolidated=None)
            except _NOT_FOUND:
                raise FileNotFoundError(f"no Zarr group at {root}") from None
            self.roots[root] = (store, group)
        return self.roots[root]

    def _variable(self, root: str, path: str) -> tuple[Any, str] | None:
        """(dataset, variable name) of ``path`` in the store, or None when it is not there."""
        group, _, name = path.rpartition("/")
        key = (root, group)
        if key not in self.datasets:
            store, root_group = self._root(root)
            try:
                guard_arrays(root_group[group] if group else root_group, group, store, self.limits)
                self.datasets[key] = xr.open_dataset(
                    store, engine="zarr", group=group or None, chunks=None, cache=False, mask_and_scale=False,
                    consolidated=root_group.metadata.consolidated_metadata is not None, decode_timedelta=False)
            except _NOT_FOUND:
                self.datasets[key] = None
        ds = self.datasets[key]
        return (ds, name) if ds is not None and name in ds.variables and name not in ds.dims else None

    def _crs(self, root: str, ds: Any, var: Any) -> Any:
        """The CRS from the CF grid mapping, the array's ``proj:*`` or the product metadata (None if none says)."""
        mapping = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
        if mapping and mapping in ds.variables:
            attrs = ds[mapping].attrs
            wkt = attrs.get("crs_wkt") or attrs.get("spatial_ref")
            if wkt:
                return CRS.from_wkt(wkt)
        _, group = self._root(root)
        meta = group.attrs.asdict()
        props = (meta.get("stac_discovery") or {}).get("properties") or {}
        other = meta.get("other_metadata") or {}
        for where in (var.attrs, ds.attrs, props, meta):
            code = where.get("proj:code") or (f"EPSG:{int(where['proj:epsg'])}" if where.get("proj:epsg") else None)
            text = code or where.get("proj:wkt2")
            if text:
                return CRS.from_user_input(text)
        code = other.get("horizontal_CRS_code")
        return CRS.from_user_input(code) if code else None

    # ------------------------------------------------------------------ reading
    def read(self, href: str, indexes: list[int], ref_transform, row: int, col: int, height: int, width: int) -> np.ndarray:
        if href in self.bands:
            self._prefetch(ref_transform, row, col, height, width)
        return super().read(href, indexes, ref_transform, row, col, height, width)

    def _prefetch(self, ref, row: int, col: int, height: int, width: int) -> None:
        """Fetch, concurrently, the chunks every band array needs under a rectangle of the reference grid."""
        jobs = []
        for href, indexes in self.bands.items():
            g, array = self.grids.get(href), self.arrays.get(href)
            window = _native_window(g, ref, row, col, height, width) if g is not None and array is not None else None
            if window is None:
                continue
            (r0, r1), (c0, c1), (ch, cw) = *window, array.chunks
            ys, xs = range(r0 // ch, (r1 - 1) // ch + 1), range(c0 // cw, (c1 - 1) // cw + 1)
            cache = self.cache.get((href, tuple(indexes)), {})
            if any((i, j) not in cache for i in ys for j in xs):
                jobs.append((href, indexes, ys, xs))
        if len(jobs) < 2:
            return
        self.pool = self.pool or ThreadPoolExecutor(len(self.bands), thread_name_prefix="ofa-zarr")
        for job, error in zip(jobs, self.pool.map(self._fetch, jobs)):
            if error is not None:
                raise ItemError(f"asset {self.names[job[0]]!r} ({job[0]}) cannot be read: {error}")

    def _fetch(self, job: tuple) -> str | None:
        """``_chunks`` for one array in a prefetch thread; the error as one line (None when it worked)."""
        try:
            self._chunks(*job)
            return None
        except Exception as exc:  # noqa: BLE001 - reported by the reading thread, naming the asset
            return short_error(exc)

    def _window(self, href: str, indexes: list[int], col: int, row: int, width: int, height: int) -> np.ndarray:
        g, array = self.grids[href], self.arrays[href]
        out = np.full((len(indexes), height, width), g.nodata if g.nodata is not None else 0, dtype=g.dtypes[0])
        r0, r1 = max(row, 0), min(row + height, g.height)
        c0, c1 = max(col, 0), min(col + width, g.width)
        if r0 >= r1 or c0 >= c1:
            return out
        ch, cw = array.chunks
        ys, xs = range(r0 // ch, (r1 - 1) // ch + 1), range(c0 // cw, (c1 - 1) // cw + 1)
        chunks = self._chunks(href, indexes, ys, xs)
        for i in ys:
            for j in xs:
                block, by, bx = chunks[(i, j)], i * ch, j * cw
                ya, yb, xa, xb = max(r0, by), min(r1, by + ch), max(c0, bx), min(c1, bx + cw)
                out[:, ya - row:yb - row, xa - col:xb - col] = block[:, ya - by:yb - by, xa - bx:xb - bx]
        return out

    def _chunks(self, href: str, indexes: list[int], ys: range, xs: range) -> dict[tuple[int, int], np.ndarray]:
        """The chunks (ys x xs) of an array, fetching those not cached in one chunk-aligned selection;
        chunks above ``ys`` are dropped (chip rows only move down)."""
        cache = self.cache.setdefault((href, tuple(indexes)), {})
        for key in [k for k in cache if k[0] < ys.start]:
            del cache[key]
        missing = [(i, j) for i in ys for j in xs if (i, j) not in cache]
        array, g = self.arrays[href], self.grids[href]
        ch, cw = array.chunks
        for (i0, i1), (j0, j1) in _rectangles(missing):
            data = array.read(indexes, slice(i0 * ch, min(i1 * ch, g.height)), slice(j0 * cw, min(j1 * cw, g.width)))
            for i in range(i0, i1):
                for j in range(j0, j1):
                    cache[(i, j)] = data[:, (i - i0) * ch:(i - i0 + 1) * ch, (j - j0) * cw:(j - j0 + 1) * cw]
        return cache


def _rectangles(keys: list[tuple[int, int]]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((row0, row1), (col0, col1)) chunk ranges covering exactly ``keys``: their bounding box when it
    holds nothing else, else one range per run of consecutive chunks in a row (a bounding box over
    chunks already cached would fetch those again)."""
    if not keys:
        return []
    rows, cols = [k[0] for k in keys], [k[1] for k in keys]
    box = ((min(rows), max(rows) + 1), (min(cols), max(cols) + 1))
    if (box[0][1] - box[0][0]) * (box[1][1] - box[1][0]) == len(set(keys)):
        return [box]
    out = []
    for i in sorted(set(rows)):
        js = sorted(j for r, j in set(keys) if r == i)
        start = js[0]
        for a, b in zip(js, js[1:] + [None]):
            if b != a + 1:
                out.append(((i, i + 1), (start, a + 1)))
                start = b
    return out


def _native_window(g: Grid, ref, row: int, col: int, height: int, width: int) -> tuple | None:
    """((row0, row1), (col0, col1)) of grid ``g`` under a rectangle of the north-up reference grid
    (the pixels holding the reference pixel centres, as ``GridReader._sampled`` picks them); None when
    the rectangle misses the array or a grid is rotated."""
    t = g.transform
    if t.b or t.d or ref.b or ref.d:
        return None
    ends = []
    for start, n, r_off, r_step, off, step, size in ((row, height, ref.f, ref.e, t.f, t.e, g.height),
                                                     (col, width, ref.c, ref.a, t.c, t.a, g.width)):
        first, last = (int(np.floor((r_off + (p + 0.5) * r_step - off) / step)) for p in (start, start + n - 1))
        lo, hi = max(min(first, last), 0), min(max(first, last) + 1, size)
        if lo >= hi:
            return None
        ends.append((lo, hi))
    return tuple(ends)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = np.asarray(value).ravel()
    return float(value[0]) if value.size else None


def _layout(var: Any, path: str, datetime: str) -> _Array:
    """Which dimensions of ``var`` are y, x, bands, and which steps of the others are read."""
    dims = list(var.dims)
    xdim = next((d for d in dims if str(d).lower() in X_DIMS), None)
    ydim = next((d for d in dims if str(d).lower() in Y_DIMS), None)
    if xdim is None or ydim is None:
        raise ValueError(f"array {path} has dimensions {tuple(dims)}: no x/y")
    fixed: dict[str, int] = {}
    band_dim = None
    for d in dims:
        if d in (xdim, ydim):
            continue
        if str(d).lower() in TIME_DIMS:
            fixed[d] = _time_step(var, d, datetime, path)
        elif var.sizes[d] == 1:
            fixed[d] = 0
        elif band_dim is None:
            band_dim = d
        else:
            raise ValueError(f"array {path} has dimensions {tuple(dims)}: more than one besides x, y, time")
    chunks = var.encoding.get("chunks") or tuple(var.shape)
    return _Array(var, ydim, xdim, band_dim, fixed, (int(chunks[dims.index(ydim)]), int(chunks[dims.index(xdim)])))


def _time_step(var: Any, dim: str, datetime: str, path: str) -> int:
    """The step of a time dimension that is the item's datetime (the only step when there is one)."""
    if var.sizes[dim] == 1:
        return 0
    if dim in var.coords and datetime and np.issubdtype(var[dim].dtype, np.datetime64):
        stamps = var[dim].values
        wanted = np.datetime64(datetime.replace("Z", "").split("+")[0])
        for unit in ("s", "D"):   # the same second; else the only step on the same day
            hits = np.flatnonzero(stamps.astype(f"datetime64[{unit}]") == wanted.astype(f"datetime64[{unit}]"))
            if hits.size == 1:
                return int(hits[0])
    raise ValueError(f"array {path} has {var.sizes[dim]} time steps and none is the item's datetime {datetime!r}")


def _transform(ds: Any, var: Any, array: _Array, path: str) -> Any:
    """The affine of the pixel corners, from pixel-centre x/y coordinates (or ``proj:transform``)."""
    xs = ds[array.xdim].values if array.xdim in ds.coords else None
    ys = ds[array.ydim].values if array.ydim in ds.coords else None
    if xs is not None and ys is not None and len(xs) > 1 and len(ys) > 1:
        a, e = float(xs[1] - xs[0]), float(ys[1] - ys[0])
        regular = np.abs(np.diff(xs) - a).max() <= abs(a) * 1e-6 and np.abs(np.diff(ys) - e).max() <= abs(e) * 1e-6
        if not regular or a == 0 or e == 0:
            raise ValueError(f"array {path}: x/y coordinates are not a regular grid")
        return Affine(a, 0.0, float(xs[0]) - a / 2, 0.0, e, float(ys[0]) - e / 2)
    t = var.attrs.get("proj:transform")
    if t and len(t) >= 6:
        return Affine(*[float(v) for v in t[:6]])
    raise ValueError(f"array {path} has no x/y coordinates and no proj:transform")
