"""The 14 real scenes of the shared data folder (``OFA_REAL_DATA``/real, see its README) ingested through a
real STAC API exactly as served (hrefs resolved against each item file's folder), every sample traced to
its source here with plain rasterio: pixels equal the asset pixel under each chip pixel's centre (for
GCP-only rasters: the source pixel the GCPs' thin-plate spline puts there), reflectance after scale/offset
is the product's (within 0.001), transform/CRS/bbox are the chip's, ``cloud_fraction`` and
``nodata_fraction`` are the SCL / QA_PIXEL / nodata counts made here, ``quantity`` and ``band_valid`` are
the product's. Each trap of the set (README's last column) is handled or refused with its reason.

Runs with ``OFA_REAL_DATA=<the shared data folder> pytest -q -rs -m real``; skipped, with the reason, without it."""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine, GCPTransformer, rowcol
from rasterio.warp import transform, transform_bounds

pytestmark = [pytest.mark.real, pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")]

CHIP = 64
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
S2_L1C = S2[:10] + ["B10"] + S2[10:]
#: band -> the common-name asset key of Earth Search (Planetary Computer keys are the band names)
COMMON = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
          "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B10": "cirrus", "B11": "swir16",
          "B12": "swir22", "SR_B1": "coastal", "SR_B2": "blue", "SR_B3": "green", "SR_B4": "red", "SR_B5": "nir08",
          "SR_B6": "swir16", "SR_B7": "swir22", "VV": "vv", "VH": "vh"}
NAIP_INDEX = {"R": 1, "G": 2, "B": 3, "NIR": 4}


@dataclass(frozen=True)
class Expect:
    """What the README says of an item, written here independently of the ingest code."""

    collection: str
    quantity: str | None
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = 0.0
    mask: str | None = None              # cloud-mask asset key: SCL classes or QA_PIXEL bits
    valid: tuple[bool, ...] | None = None
    small: bool = False                  # smaller than a 128 px chip
    gcps: bool = False
    refused: str | None = None           # what the skip reason must say


L2A = dict(collection="sentinel-2-l2a", quantity="surface_reflectance", scale=1e-4)
L1C = dict(collection="sentinel-2-l1c", quantity="toa_reflectance", scale=1e-4)
GRD = "sentinel-1-grd"
ITEMS = {
    "S2B_1UBT_20230122_0_L2A_r1098m": Expect(**L2A, offset=-0.1, mask="scl", small=True),
    "S2B_MSIL2A_20230122T231849_R087_T01UBT_20230124T042703_r1098m": Expect(**L2A, offset=-0.1, mask="SCL", small=True),
    "S2A_29RKH_20200219_0_L2A_r100m": Expect(**L2A, mask="scl"),
    "S2B_MSIL2A_20200813T054639_R048_T43RCP_SSL4EO-0000200": Expect(**L2A),
    "S2A_MSIL2A_20170613T101031_R022_T33UUP_BigEarthNet-75_43": Expect(**L2A, small=True),
    "S2B_MSIL1C_20200823T054639_R048_T43RCP_SSL4EO-0000200": Expect(**L1C),
    "S2A_19UDP_20170729_0_L1C_r900m": Expect(**L1C, small=True),
    "LC08_L2SP_001070_20190114_02_T2": Expect("landsat-c2-l2", "surface_reflectance", 2.75e-05, -0.2, mask="qa_pixel"),
    "va_m_3907864_sw_17_060_20210912_20211220": Expect("naip", "dn", nodata=None, small=True),
    "S1A_IW_GRDH_1SDV_20180716T004042_20180716T004107_022812_02792A_DN-decimated":
        Expect(GRD, "amplitude_dn", valid=(True, True), gcps=True),
    "S1A_S1_GRDH_1SDV_20230809T020729_20230809T020754_049792_05FCE6_DN-decimated-VH":
        Expect(GRD, "amplitude_dn", valid=(False, True), gcps=True),
    "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_70_48_BigEarthNet-GCP":
        Expect(GRD, "sigma0_db", nodata=-9999.0, valid=(True, True), small=True, gcps=True),
    "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_70_48_BigEarthNet-GCP-PC":
        Expect(GRD, None, small=True, gcps=True, refused=r"'vv' holds float32 values.*states no unit"),
    "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_70_48_BigEarthNet-VV":
        Expect(GRD, "sigma0_db", nodata=-9999.0, valid=(True, False), small=True),
}
IDS = sorted(ITEMS)


def _ingest(url: str, items: dict, out: Path, **options) -> tuple[dict, dict[str, list]]:
    """One ingest of ``items`` from the STAC API at ``url``; the manifest and the samples by item id."""
    from ofa.ingest.job import IngestConfig, run_ingest

    collections = sorted({it["collection"] for it in items.values()})
    with contextlib.redirect_stderr(io.StringIO()):
        manifest = run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=collections, out=str(out), workers=2,
                                           progress=False, **options))
    samples: dict[str, list] = {}
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            for name in tar.getnames()[::2]:
                key = name.split(".", 1)[0]
                meta = json.loads(tar.extractfile(f"{key}.meta.json").read())
                pixels = np.load(io.BytesIO(tar.extractfile(f"{key}.pixels.npy").read()))
                samples.setdefault(meta["item_id"], []).append((pixels, meta))
    return manifest, samples


@pytest.fixture(scope="module")
def served(real_data):
    """Every real item served by ``rustac serve`` as its file says, hrefs resolved; yields (url, items)."""
    from real_data import real_items

    from ofa.infra.demo_catalog import collection_for
    from ofa.infra.localstack import stac_server

    items = real_items(real_data)
    cols = [collection_for(c, [i for i in items.values() if i["collection"] == c])
            for c in sorted({i["collection"] for i in items.values()})]
    with stac_server(cols, list(items.values())) as url:
        yield url, items


@pytest.fixture(scope="module")
def at_64(served, tmp_path_factory):
    """``--chip-size 64`` with every filter open (1.0), so every chip window is kept and traced."""
    url, items = served
    return _ingest(url, items, tmp_path_factory.mktemp("real64"), chip_size=CHIP, max_nodata_fraction=1.0,
                   max_cloud_fraction=1.0, max_sar_border_fraction=1.0)


@pytest.fixture(scope="module")
def at_default(served, tmp_path_factory):
    """The default chip size and filters."""
    url, items = served
    return _ingest(url, items, tmp_path_factory.mktemp("real-default"))


@pytest.fixture(scope="module")
def plan_64(served):
    """``ofa ingest --plan --json`` on the set at 64 px, as the command prints it."""
    from ofa.pipeline.cli import main

    url, items = served
    args = ["ingest", "--plan", "--json", "--catalog", url, "--allow-local-hrefs", "--chip-size", str(CHIP)]
    for cid in sorted({i["collection"] for i in items.values()}):
        args += ["--collection", cid]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return json.loads(out.getvalue())


def test_the_set_is_the_one_described(served):
    assert sorted(served[1]) == IDS


# ------------------------------------------------------------------ independent reference reads
def _asset(item: dict, band: str) -> tuple[str, int]:
    """(path, band index) of ``band`` in the item, by the catalogs' own naming."""
    assets = item["assets"]
    if band in NAIP_INDEX:
        return assets["image"]["href"], NAIP_INDEX[band]
    key = next(k for k in (band, COMMON.get(band), band.lower()) if k in assets)
    return assets[key]["href"], 1


def _centres(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    a, b, c, d, e, f = meta["transform"]
    n = meta["window"]["width"]
    cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    return c + cols * a + rows * b, f + cols * d + rows * e


def _read_at(path: str, index: int, meta: dict) -> list[np.ndarray]:
    """The asset pixel holding each chip pixel's centre (fill: the file's nodata, or 0, outside it), and the
    same with the pixel across the edge (rows, columns, both) where a centre lies on an asset pixel's edge
    (within 1e-6 px: which side holds it is float rounding, e.g. bands on grids shifted by whole fine pixels)."""
    xs, ys = _centres(meta)
    with rasterio.open(path) as ds:
        data, tf, fill = ds.read(index), ds.transform, ds.nodata if ds.nodata is not None else 0
        assert meta["crs"] == ds.crs.to_string() or meta["crs"] == f"EPSG:{ds.crs.to_epsg()}"
    fc, fr = ~tf @ (xs, ys)
    floor = [np.floor(f) for f in (fr, fc)]
    # on an edge (at k): floor gives k or k - 1; "across" takes the other one
    across = [np.where(np.abs(f - np.round(f)) < 1e-6, 2 * np.round(f) - 1 - np.floor(f), np.floor(f)) for f in (fr, fc)]
    picks = []
    for rows, cols in ((floor[0], floor[1]), (across[0], floor[1]), (floor[0], across[1]), (across[0], across[1])):
        rows, cols = rows.astype(np.int64), cols.astype(np.int64)
        inside = (rows >= 0) & (rows < data.shape[0]) & (cols >= 0) & (cols < data.shape[1])
        out = np.full(xs.shape, fill, dtype=data.dtype)
        out[inside] = data[rows[inside], cols[inside]]
        picks.append(out)
    return picks


def _either(chip: np.ndarray, refs: list[np.ndarray], name: str) -> np.ndarray:
    """Assert each chip pixel is its reference pixel (either side of an edge it lies on); return the chip."""
    ok = np.any([chip == ref for ref in refs], axis=0)
    assert ok.all(), f"{name}: {int((~ok).sum())} pixels differ from the source, first at {np.argwhere(~ok)[0]}"
    return chip


def _gcp_check(path: str, meta: dict, chip: np.ndarray, fill: float) -> None:
    """The chip against the source pixel the GCPs put under each chip pixel centre (thin-plate spline, evaluated
    here at every pixel): equal but for pixels whose centre falls within a hair of a source pixel's edge, which
    must then hold a neighbouring source pixel."""
    with rasterio.open(path) as ds:
        data, (gcps, gcp_crs) = ds.read(1), ds.gcps
    xs, ys = _centres(meta)
    lon, lat = transform(meta["crs"], gcp_crs, xs.ravel(), ys.ravel())
    rows, cols = GCPTransformer(gcps, tps=True).rowcol(lon, lat, op=math.floor)
    rows, cols = np.asarray(rows).reshape(xs.shape), np.asarray(cols).reshape(xs.shape)
    inside = (rows >= 0) & (rows < data.shape[0]) & (cols >= 0) & (cols < data.shape[1])
    ref = np.full(xs.shape, fill, dtype=chip.dtype)
    ref[inside] = data[rows[inside], cols[inside]]
    differ = np.argwhere(chip != ref)
    assert len(differ) <= 0.05 * chip.size, f"{len(differ)} of {chip.size} pixels differ from the GCP reference"
    padded = np.pad(data, 1, constant_values=data.dtype.type(fill) if data.dtype.kind != "f" else fill)
    for r, c in differ:
        i, j = rows[r, c] + 1, cols[r, c] + 1
        assert chip[r, c] in padded[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2], (r, c)


def _mask_flags(item: dict, key: str, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    mask, *others = _read_at(item["assets"][key]["href"], 1, meta)
    assert all((mask == other).all() for other in others)    # no mask pixel is ambiguous: the cloud count is exact
    mask = mask.astype(np.int64)
    if key.lower() == "scl":      # classes: 0 no data; 3 shadow, 8/9 cloud, 10 cirrus
        return mask == 0, np.isin(mask, [3, 8, 9, 10])
    fill = (mask & 1) == 1        # QA_PIXEL bits: 0 fill; 1 dilated cloud, 3 cloud, 4 shadow
    return fill, (((mask >> 1) | (mask >> 3) | (mask >> 4)) & 1) == 1


def _check_georeferencing(item: dict, expect: Expect, meta: dict) -> None:
    crs, n = meta["crs"], meta["window"]["width"]
    a, b, c, d, e, f = meta["transform"]
    bounds = (c, f + n * e, c + n * a, f)
    assert meta["bbox"] == pytest.approx(transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21), abs=1e-7)
    if expect.gcps:   # north-up UTM at the data's own ground sampling, snapped to it
        path, _ = _asset(item, "VH" if expect.valid == (False, True) else "VV")
        with rasterio.open(path) as ds:
            gcps, gcp_crs = ds.gcps
        lon, lat = np.mean([g.x for g in gcps]), np.mean([g.y for g in gcps])
        assert crs == f"EPSG:{(32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1}"
        sampling = _gcp_sampling(gcps, gcp_crs, crs)
        assert b == d == 0 and a == -e == meta["gsd"]
        assert max(sampling) <= a <= max(sampling) * 1.05 + 1.0, (a, sampling)   # never finer than the data
        assert c % a == pytest.approx(0, abs=1e-6) or c % a == pytest.approx(a, abs=1e-6)


def _gcp_sampling(gcps, gcp_crs, crs) -> tuple[float, float]:
    """Ground metres per source column and per line: ground distance over pixel distance between GCPs."""
    xs, ys = transform(gcp_crs, crs, [g.x for g in gcps], [g.y for g in gcps])
    per_col, per_row = [], []
    by_pos = {(round(g.row, 3), round(g.col, 3)): (x, y) for g, x, y in zip(gcps, xs, ys)}
    rows, cols = sorted({k[0] for k in by_pos}), sorted({k[1] for k in by_pos})
    for r in rows:
        for c0, c1 in zip(cols, cols[1:]):
            if (r, c0) in by_pos and (r, c1) in by_pos:
                per_col.append(math.dist(by_pos[r, c0], by_pos[r, c1]) / (c1 - c0))
    for c in cols:
        for r0, r1 in zip(rows, rows[1:]):
            if (r0, c) in by_pos and (r1, c) in by_pos:
                per_row.append(math.dist(by_pos[r0, c], by_pos[r1, c]) / (r1 - r0))
    return float(np.median(per_col)), float(np.median(per_row))


def _trace(item: dict, expect: Expect, pixels: np.ndarray, meta: dict) -> None:
    """One sample against its source."""
    bands = meta["bands"]
    assert meta["quantity"] == expect.quantity and meta["collection"] == expect.collection
    assert meta["scale"] == pytest.approx([expect.scale] * len(bands)) and meta["offset"] == pytest.approx([expect.offset] * len(bands))
    assert meta["band_valid"] == list(expect.valid or [True] * len(bands))
    assert [n for n, v in zip(meta["nodata"], meta["band_valid"]) if v] == [expect.nodata] * sum(meta["band_valid"])
    _check_georeferencing(item, expect, meta)
    invalid = np.zeros(pixels.shape[1:], dtype=bool)
    for ch, band in enumerate(bands):
        if not meta["band_valid"][ch]:
            assert not pixels[ch].any(), band          # zero-filled
            continue
        path, index = _asset(item, band)
        if expect.gcps:
            _gcp_check(path, meta, pixels[ch], expect.nodata if expect.nodata is not None else 0)
            ref = pixels[ch]
        else:
            ref = _either(pixels[ch], _read_at(path, index, meta), band)
        if expect.nodata is not None:
            invalid |= ref == expect.nodata
        value = pixels[ch].astype(np.float64) * meta["scale"][ch] + meta["offset"][ch]
        assert np.abs(value - (ref.astype(np.float64) * expect.scale + expect.offset)).max() <= 0.001, band
    if expect.gcps and pixels.dtype.kind in "ui":     # SAR border: all polarisations 0
        invalid |= np.all(pixels[[i for i, v in enumerate(meta["band_valid"]) if v]] == 0, axis=0)
    if expect.mask:
        fill, cloud = _mask_flags(item, expect.mask, meta)
        invalid |= fill
        expected = float((cloud & ~fill).sum()) / max(fill.size - int(fill.sum()), 1)
        assert meta["cloud_fraction"] == pytest.approx(expected, abs=1e-6)
    else:
        assert meta["cloud_fraction"] is None        # no mask: not measured
    assert meta["nodata_fraction"] == pytest.approx(invalid.mean(), abs=1e-6)


@pytest.mark.parametrize("item_id", IDS)
def test_every_sample_traces_to_its_source(item_id, served, at_64, plan_64):
    manifest, samples = at_64
    expect, item = ITEMS[item_id], served[1][item_id]
    planned = next(e for e in plan_64["items"] if e["item_id"] == item_id)
    if expect.refused:
        (entry,) = [s for s in manifest["skipped"] if s["item_id"] == item_id]
        assert re.search(expect.refused, entry["reason"]), entry["reason"]
        assert item_id not in samples and planned["skipped"] == entry["reason"]   # the plan said so first
        return
    chips = samples[item_id]
    assert len(chips) == planned["chips"] > 0          # every planned window, kept with the filters open
    for pixels, meta in chips:
        _trace(item, expect, pixels, meta)


# ------------------------------------------------------------------ the traps, one by one
@pytest.mark.parametrize("item_id", IDS)
def test_default_chip_size_skips_items_smaller_than_a_chip_with_the_reason(item_id, at_default):
    """At the default chip size (256 px) an item smaller than a chip is a ``skipped`` entry naming its size;
    at 64 px (``test_every_sample_traces_to_its_source``) the same items give samples."""
    manifest, samples = at_default
    expect = ITEMS[item_id]
    reasons = [s["reason"] for s in manifest["skipped"] if s["item_id"] == item_id]
    if expect.refused:
        assert len(reasons) == 1 and re.search(expect.refused, reasons[0])
    elif expect.small:
        assert len(reasons) == 1 and re.fullmatch(r"smaller than one chip: \d+x\d+ px on its finest band, chip size 256",
                                                  reasons[0]), reasons
        assert item_id not in samples
    else:
        assert not reasons
        record = [e for e in manifest["items"] if e["id"] == item_id]
        assert record and (item_id in samples or sum(manifest["counts"]["dropped"].values()) > 0)


def test_antimeridian_chips_carry_their_true_bounds(served, tmp_path):
    """The 1UBT tile crosses 180 degrees (MultiPolygon, bbox west > east): at 50 px its eastern chips cross
    too, and their bbox is the true one, west > east (RFC 7946), from both catalogs' items alike."""
    url, items = served
    ids = [i for i in IDS if "1UBT" in i]
    manifest, samples = _ingest(url, {i: items[i] for i in ids}, tmp_path, chip_size=50, max_cloud_fraction=1.0,
                                max_nodata_fraction=1.0)
    assert items[ids[0]]["bbox"][0] > items[ids[0]]["bbox"][2]
    for item_id in ids:
        chips = samples[item_id]
        assert len(chips) == 4
        crossing = [m for _, m in chips if m["bbox"][0] > m["bbox"][2]]
        assert len(crossing) == 2 and all(m["window"]["col_off"] == 50 for m in crossing)
        for pixels, meta in chips:
            _trace(items[item_id], ITEMS[item_id], pixels, meta)
    # the same pixels and metadata from Earth Search's keys/raster:bands and Planetary Computer's band names/baseline
    (es, pc) = [sorted(samples[i], key=lambda s: s[1]["window"]["col_off"] * 1000 + s[1]["window"]["row_off"]) for i in ids]
    for (pa, ma), (pb, mb) in zip(es, pc):
        np.testing.assert_array_equal(pa, pb)
        assert {k: v for k, v in ma.items() if k not in ("item_id", "pixels_crc32")} == \
            {k: v for k, v in mb.items() if k not in ("item_id", "pixels_crc32")}


def test_gcp_geocoding_gives_back_the_true_grid(at_64):
    """The BigEarthNet patch written GCP-only (lines in radar order) geocodes onto the patch's own 10 m UTM
    grid: the same transform and the same pixels as the patch on its true geotransform (``proj:code``)."""
    _, samples = at_64
    (gcp,) = samples["S1A_IW_GRDH_1SDV_20170613T165043_33UUP_70_48_BigEarthNet-GCP"]
    (true,) = samples["S1A_IW_GRDH_1SDV_20170613T165043_33UUP_70_48_BigEarthNet-VV"]
    assert gcp[1]["transform"] == true[1]["transform"] and gcp[1]["crs"] == true[1]["crs"] == "EPSG:32633"
    np.testing.assert_array_equal(gcp[0][0], true[0][0])
    assert gcp[1]["quantity"] == true[1]["quantity"] == "sigma0_db" and float(gcp[0][0].min()) < -10   # dB as stored


def test_decimated_grd_keeps_its_own_ground_sampling(served, at_64):
    """The decimated GRD (1280 x 837 px over ~250 x 170 km, no sar:pixel_spacing) is geocoded at the ~200 m its
    210 GCPs show, never at the 10 m of a full-resolution IW product: hundreds of 64 px chips, not ~100,000."""
    url, items = served
    item_id = "S1A_IW_GRDH_1SDV_20180716T004042_20180716T004107_022812_02792A_DN-decimated"
    item, chips = items[item_id], at_64[1][item_id]
    assert "sar:pixel_spacing_range" not in item["properties"]
    assert item["properties"]["proj:shape"] == [1280, 837]               # [samples, lines], as Earth Search says
    with rasterio.open(item["assets"]["vv"]["href"]) as ds:
        assert (ds.height, ds.width) == (837, 1280) and ds.transform.is_identity and len(ds.gcps[0]) == 210
        sampling = _gcp_sampling(*ds.gcps, chips[0][1]["crs"])
    assert 190 < min(sampling) <= max(sampling) < 215
    assert 100 <= len(chips) <= 1000
    assert all(m["gsd"] >= max(sampling) for _, m in chips)             # chip pixels no finer than source pixels
    assert {m["gsd"] for _, m in chips} == {204.0}


def test_each_trap_is_visible_in_the_samples(at_64):
    _, samples = at_64
    def one(item_id: str) -> dict:
        return samples[item_id][0][1]
    naip = one("va_m_3907864_sw_17_060_20210912_20211220")
    assert naip["crs"] == "EPSG:26917" and naip["transform"][0] != -naip["transform"][4]   # NAD83, non-square
    landsat = one("LC08_L2SP_001070_20190114_02_T2")
    assert landsat["crs"] == "EPSG:32619" and landsat["transform"][5] < 0 and landsat["bbox"][1] < -13   # south, N zone
    assert landsat["transform"][0] == pytest.approx(448.30078125) and landsat["transform"][4] == pytest.approx(-455.91796875)
    l1c = [m for _, m in samples["S2A_19UDP_20170729_0_L1C_r900m"]]          # 38 % nodata edge, no nodata tag
    assert max(m["nodata_fraction"] for m in l1c) > 0.3
    vh = samples["S1A_S1_GRDH_1SDV_20230809T020729_20230809T020754_049792_05FCE6_DN-decimated-VH"]
    assert all(m["band_valid"] == [False, True] and not p[0].any() for p, m in vh) and any(p[1].any() for p, _ in vh)
    rkh = samples["S2A_29RKH_20200219_0_L2A_r100m"]                          # three grids: 100 m reference
    assert {m["gsd"] for _, m in rkh} == {100.0} and any(m["cloud_fraction"] > 0 for _, m in rkh)


def test_the_plan_names_every_item_and_where_each_scale_and_offset_comes_from(served):
    """``ofa ingest --plan`` (plain text) on the real set: every item, each band's asset with the origin of its
    scale and offset, and the totals; the origins are the ones the README gives for each convention."""
    from ofa.pipeline.cli import main

    url, items = served
    args = ["ingest", "--plan", "--catalog", url, "--allow-local-hrefs", "--chip-size", str(CHIP)]
    for cid in sorted({i["collection"] for i in items.values()}):
        args += ["--collection", cid]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    text = out.getvalue()
    blocks = {b.split("  ", 1)[0]: b for b in text.split("\n\n")}
    assert sorted(k for k in blocks if k in ITEMS) == IDS
    for item_id in IDS:
        block = blocks[item_id]
        if ITEMS[item_id].refused:
            assert "skipped: " in block
        channels = {"sentinel-2-l2a": 12, "sentinel-2-l1c": 13, "landsat-c2-l2": 7, "naip": 4}
        n = channels.get(ITEMS[item_id].collection) or sum(ITEMS[item_id].valid or (True, True))
        origins = re.findall(r"^ +scale \S+ \((.+?)\), offset \S+ \((.+?)\), nodata \S+ \((.+)\)$", block, re.M)
        assert len(origins) == n and all(all(o) for o in origins), block
    pc = blocks["S2B_MSIL2A_20230122T231849_R087_T01UBT_20230124T042703_r1098m"]
    assert "offset -0.1 (processing baseline rule (s2:processing_baseline 04.00 >= 04.00" in pc
    assert "scale 0.0001 (registry)" in pc
    es = blocks["S2B_1UBT_20230122_0_L2A_r1098m"]
    assert "scale 0.0001 (item raster:bands), offset -0.1 (item raster:bands)" in es
    ben = blocks["S2A_MSIL2A_20170613T101031_R022_T33UUP_BigEarthNet-75_43"]
    assert "offset 0 (registry)" in ben                                   # N9999: no baseline stated
    grd = blocks["S1A_IW_GRDH_1SDV_20180716T004042_20180716T004107_022812_02792A_DN-decimated"]
    assert "GCPs (210" in grd and "204x204 px" in grd and "[samples, lines]" in grd
    assert re.search(r"^all: 14 items \(1 skipped\), \d+ chips, read \d", text, re.M)
