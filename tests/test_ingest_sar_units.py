"""What a SAR product states wins: the unit in ``raster:bands`` before any collection default (a dB RTC
stays dB, never converted twice; linear and amplitude become dB once), a conversion that would turn an
item's valid pixels into no data skips the item with the reason; and GCP geocoding never invents
resolution: the output pixel is the ground sampling the GCPs show, a stated spacing only coarsens it."""
from __future__ import annotations

import copy
import io
import json
import tarfile

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.transform import Affine
from rasterio.warp import transform, transform_bounds

from ofa.ingest.chips import ChipOptions, process_item
from ofa.ingest.hrefs import LOCAL_FILES
from ofa.ingest.items import ItemError, plan_item
from ofa.ingest.sar import DB_NODATA, gcp_sampling, geocoding_spacing

CHIP = 64
TF = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4650000.0)


def _db_values(size: int = 128) -> np.ndarray:
    """gamma0 in dB as GAMMA / pyroSAR archives publish it: mostly negative, a few bright targets above 0 dB,
    -99 where there is no data (a strip along the top)."""
    rng = np.random.default_rng(11)
    db = (-14.0 + 4.0 * rng.standard_normal((size, size))).astype(np.float32)
    db[40:44, 40:44] = 3.5
    db[:6, :] = -99.0
    return db


def _rtc_item(tmp_path, values: np.ndarray, raster: dict, item_id: str = "S1A_IW_GRDH_1SSV_RTC_DB") -> dict:
    """A VV-only ``sentinel-1-rtc`` item over a float32 COG on a UTM grid (hrefs local)."""
    path = tmp_path / f"{item_id}-vv.tif"
    size = values.shape[0]
    with rasterio.open(path, "w", driver="COG", width=size, height=size, count=1, dtype="float32", crs="EPSG:32633",
                       transform=TF, nodata=raster.get("nodata"), blocksize=128, compress="deflate") as dst:
        dst.write(values, 1)
    w, s, e, n = transform_bounds("EPSG:32633", "EPSG:4326", 500000.0, 4650000.0 - 10.0 * size, 500000.0 + 10.0 * size,
                                  4650000.0)
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-1-rtc",
            "bbox": [w, s, e, n], "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"datetime": "2023-06-01T05:34:00Z", "proj:epsg": 32633, "sar:polarizations": ["VV"],
                           "sar:product_type": "RTC"},
            "assets": {"vv": {"href": str(path), "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                              "roles": ["data"], "raster:bands": [{"data_type": "float32", **raster}]}},
            "links": []}


def _ingest(items: list[dict], out, **options) -> tuple[dict, list]:
    """``ofa ingest`` of ``items`` through the local STAC API; the manifest and every (pixels, meta)."""
    from ingest_fixtures import collections_for

    from ofa.infra.localstack import stac_server
    from ofa.ingest.job import IngestConfig, run_ingest

    with stac_server(collections_for(items), items) as url:
        manifest = run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=sorted({i["collection"] for i in items}),
                                           out=str(out), chip_size=CHIP, workers=1, progress=False, **options))
    samples = []
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            for name in tar.getnames()[::2]:
                key = name.split(".", 1)[0]
                samples.append((np.load(io.BytesIO(tar.extractfile(f"{key}.pixels.npy").read())),
                                json.loads(tar.extractfile(f"{key}.meta.json").read())))
    return manifest, samples


def test_rtc_in_db_gives_db_samples_equal_to_the_source(tmp_path):
    """``"unit": "dB"`` (VV only, float32, nodata -99): the samples are the source's dB values, untouched, with the
    item's nodata; the collection default (linear gamma0 -> 10*log10) is not applied on top."""
    values = _db_values()
    item = _rtc_item(tmp_path, values, {"nodata": -99, "unit": "dB"})
    manifest, samples = _ingest([item], tmp_path / "ds", max_nodata_fraction=0.2)
    assert manifest["skipped"] == [] and len(samples) == 4
    for pixels, meta in samples:
        assert meta["quantity"] == "gamma0_db" and meta["band_valid"] == [True, False]
        assert meta["nodata"][0] == -99.0 and meta["scale"][0] == 1.0 and meta["offset"][0] == 0.0
        assert pixels.dtype == np.float32
        w = meta["window"]
        np.testing.assert_array_equal(pixels[0], values[w["row_off"]:w["row_off"] + CHIP, w["col_off"]:w["col_off"] + CHIP])
        assert not pixels[1].any()
    stats = manifest["statistics"]["sentinel-1/gamma0_db"]
    kept = np.concatenate([p[0][p[0] != -99.0] for p, _ in samples])
    assert stats["quantity"] == "gamma0_db" and stats["mean"][0] == pytest.approx(float(kept.mean()), abs=1e-4)
    assert stats["max"][0] == pytest.approx(3.5) and stats["min"][0] < -20


@pytest.mark.parametrize("unit", ["dB", "DB", "decibel", "Decibels"])
def test_the_db_unit_is_read_in_any_case(tmp_path, unit):
    plan = plan_item(_rtc_item(tmp_path, _db_values(64), {"nodata": -99, "unit": unit}), policy=LOCAL_FILES)
    assert plan.quantity == "gamma0_db" and plan.channels[0].convert is None and plan.channels[0].nodata == -99.0
    assert "already dB" in plan.quantity_from


def test_a_conversion_that_turns_the_pixels_into_nodata_skips_the_item(tmp_path):
    """The same dB item without a unit: the collection default (10*log10 of linear gamma0) would make nodata of
    every negative value, nearly all of them; the item is a ``skipped`` entry saying so, not a nodata count."""
    item = _rtc_item(tmp_path, _db_values(), {"nodata": -99}, "S1A_IW_GRDH_1SSV_RTC_NO_UNIT")
    plan = plan_item(item, policy=LOCAL_FILES)
    assert plan.channels[0].convert == "db" and "sentinel-1-rtc default" in plan.quantity_from
    manifest, samples = _ingest([item], tmp_path / "ds")
    assert samples == [] and manifest["counts"]["kept"] == 0
    assert sum(manifest["counts"]["dropped"].values()) == 0               # not counted as nodata chips
    (entry,) = manifest["skipped"]
    assert entry["item_id"] == item["id"]
    assert "10*log10 conversion of linear power turned" in entry["reason"] and "already in dB?" in entry["reason"]


@pytest.mark.parametrize("unit, factor", [("linear", 10.0), ("amplitude", 20.0)])
def test_linear_and_amplitude_units_become_db_once(tmp_path, unit, factor):
    rng = np.random.default_rng(5)
    values = rng.gamma(2.0, 0.05, size=(64, 64)).astype(np.float32)
    values[:4] = 0.0
    plan = plan_item(_rtc_item(tmp_path, values, {"nodata": 0, "unit": unit}), policy=LOCAL_FILES)
    assert plan.quantity == "gamma0_db" and plan.channels[0].nodata == DB_NODATA
    (sample,) = process_item(plan, ChipOptions(chip_size=CHIP, max_nodata=0.5)).samples
    pixels = np.load(io.BytesIO(bytes(sample[1])))
    with np.errstate(divide="ignore"):
        expected = np.where(values == 0, DB_NODATA, factor * np.log10(values.astype(np.float64)))
    np.testing.assert_allclose(pixels[0], expected, atol=1e-4)


def test_units_the_item_cannot_mean_are_refused(tmp_path):
    item = _rtc_item(tmp_path, _db_values(64), {"nodata": -99, "unit": "W/m2"})
    with pytest.raises(ItemError, match="states unit 'W/m2'; known SAR units: dB, decibel, linear, amplitude"):
        plan_item(item, policy=LOCAL_FILES)
    both = copy.deepcopy(_rtc_item(tmp_path, _db_values(64), {"nodata": -99, "unit": "dB"}))
    both["assets"]["vh"] = copy.deepcopy(both["assets"]["vv"])
    both["assets"]["vh"]["raster:bands"][0]["unit"] = "linear"
    with pytest.raises(ItemError, match="the polarisations state different units"):
        plan_item(both, policy=LOCAL_FILES)


# ------------------------------------------------------------------ ground sampling from the GCPs
def _gcps(step_m: float, pixels_between: int, n: int = 6) -> list[GroundControlPoint]:
    """GCPs every ``pixels_between`` pixels of a north-up UTM 33N grid of ``step_m`` metre pixels, in lon/lat."""
    rows, cols = np.meshgrid(np.arange(n) * pixels_between, np.arange(n) * pixels_between, indexing="ij")
    xs = 400000.0 + cols.ravel() * step_m
    ys = 5300000.0 - rows.ravel() * step_m
    lon, lat = transform("EPSG:32633", "EPSG:4326", xs, ys)
    return [GroundControlPoint(row=float(r), col=float(c), x=x, y=y, z=0.0)
            for r, c, x, y in zip(rows.ravel(), cols.ravel(), lon, lat)]


def test_ground_sampling_is_measured_from_the_gcps():
    from rasterio.crs import CRS

    for step in (10.0, 80.0, 203.6):
        sampling = gcp_sampling(_gcps(step, 16), CRS.from_epsg(4326), CRS.from_epsg(32633))
        assert sampling == pytest.approx((step, step), rel=1e-6)


def test_the_output_pixel_is_never_finer_than_the_data():
    assert geocoding_spacing((9.96, 10.13), 10.0) == 10.0         # a full-resolution IW GRDH: its stated 10 m
    assert geocoding_spacing((200.1, 203.6), None) == 204.0       # decimated, nothing stated: its own ~200 m
    assert geocoding_spacing((200.1, 203.6), 10.0) == 204.0       # a nominal 10 m cannot make 200 m pixels finer
    assert geocoding_spacing((9.99, 10.0000000001), None) == 10.0   # a measurement's rounding adds nothing
    assert geocoding_spacing((9.96, 10.13), None) == 10.2           # nothing stated: 3 significant digits, up
    assert geocoding_spacing((0.5, 0.71), None) == 0.71
    assert geocoding_spacing((5.0, 5.0), 10.0) == 10.0            # a coarser stated spacing is kept


def test_a_decimated_gcp_raster_is_geocoded_at_its_own_sampling(tmp_path):
    """A GCP-only GRD decimated to ~80 m whose item still says 10 m pixel spacing (as copied from the full
    product): geocoded at 80 m, so one 64 px chip per ~5 km, not 64 times as many chips of repeated pixels."""
    size = 160
    gcps = _gcps(80.0, 32)
    path = tmp_path / "decimated-vv.tif"
    dn = np.random.default_rng(2).integers(20, 900, size=(size, size), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint16", gcps=gcps,
                       crs="EPSG:4326") as dst:
        dst.write(dn, 1)
    lon, lat = [g.x for g in gcps], [g.y for g in gcps]
    ring = [[min(lon), min(lat)], [max(lon), min(lat)], [max(lon), max(lat)], [min(lon), max(lat)], [min(lon), min(lat)]]
    item = {"type": "Feature", "id": "S1A_IW_GRDH_1SSV_DECIMATED", "collection": "sentinel-1-grd",
            "bbox": [min(lon), min(lat), max(lon), max(lat)], "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"datetime": "2023-06-01T05:34:00Z", "sar:pixel_spacing_range": 10,
                           "sar:pixel_spacing_azimuth": 10, "proj:epsg": 4326},
            "assets": {"vv": {"href": str(path), "roles": ["data"], "raster:bands": [{"nodata": 0, "data_type": "uint16"}]}}}
    result = process_item(plan_item(item, policy=LOCAL_FILES), ChipOptions(chip_size=CHIP))
    metas = [json.loads(m) for _, _, m in result.samples]
    assert metas and {m["gsd"] for m in metas} == {80.0} and {m["transform"][0] for m in metas} == {80.0}
    assert result.kept + sum(result.dropped.values()) == (size // CHIP) ** 2   # 4 windows at 80 m; 256 at 10 m
