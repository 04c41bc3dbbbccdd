"""The embedded demo catalog: small real Cloud-Optimized GeoTIFFs and STAC Items for four sensors.

Nothing is downloaded. Each item mirrors the structure of a real catalog document (asset keys,
``eo:bands``, ``raster:bands`` with nodata/scale/offset, ``proj:*`` per asset) as served by
Earth Search (Sentinel-2 L2A, Sentinel-1 GRD) and Planetary Computer (Landsat C2 L2, NAIP);
only the rasters are small. Pixels are synthetic but physically plausible: a land-cover map
(water, vegetation, soil, built-up) drawn through each band's spectral signature, with a
nodata collar and cloud patches flagged in the sensor's own cloud mask (S2 SCL, Landsat QA_PIXEL).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.warp import transform_bounds

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

# centre wavelength (um) -> reflectance of each land-cover class, linearly interpolated between knots
_KNOTS = np.array([0.44, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19])
_SIGNATURES = {
    "water": [0.07, 0.06, 0.05, 0.03, 0.025, 0.02, 0.015, 0.01, 0.01, 0.008, 0.005, 0.003],
    "vegetation": [0.03, 0.035, 0.08, 0.04, 0.12, 0.30, 0.40, 0.44, 0.45, 0.42, 0.24, 0.11],
    "soil": [0.08, 0.10, 0.14, 0.19, 0.21, 0.23, 0.24, 0.26, 0.27, 0.28, 0.34, 0.30],
    "built": [0.16, 0.17, 0.19, 0.20, 0.21, 0.21, 0.22, 0.22, 0.23, 0.23, 0.25, 0.23],
}
_CLASSES = list(_SIGNATURES)
_SAR_DB = {"water": (-22.0, -28.0), "vegetation": (-9.0, -15.0), "soil": (-12.0, -20.0), "built": (-4.0, -11.0)}

S2_BANDS = [  # Earth Search key, band name, common name, wavelength, resolution
    ("coastal", "B01", "coastal", 0.443, 60), ("blue", "B02", "blue", 0.49, 10),
    ("green", "B03", "green", 0.56, 10), ("red", "B04", "red", 0.665, 10),
    ("rededge1", "B05", "rededge", 0.704, 20), ("rededge2", "B06", "rededge", 0.74, 20),
    ("rededge3", "B07", "rededge", 0.783, 20), ("nir", "B08", "nir", 0.842, 10),
    ("nir08", "B8A", "nir08", 0.865, 20), ("nir09", "B09", "nir09", 0.945, 60),
    ("swir16", "B11", "swir16", 1.61, 20), ("swir22", "B12", "swir22", 2.19, 20),
]
LANDSAT_BANDS = [  # key/name, common name, wavelength
    ("SR_B1", "coastal", 0.44), ("SR_B2", "blue", 0.48), ("SR_B3", "green", 0.56), ("SR_B4", "red", 0.65),
    ("SR_B5", "nir08", 0.86), ("SR_B6", "swir16", 1.6), ("SR_B7", "swir22", 2.2),
]
NAIP_BANDS = [("Red", "red", 0.665), ("Green", "green", 0.56), ("Blue", "blue", 0.49), ("NIR", "nir", 0.842)]


@dataclass(frozen=True)
class DemoScene:
    """One demo item: where it is and how large its finest grid is."""

    item_id: str
    collection: str
    datetime: str
    epsg: int
    origin: tuple[float, float]  # (x, y) of the upper-left corner in the item's CRS
    pixel: float                 # finest grid spacing in CRS units
    size: int                    # finest grid is size x size
    seed: int


DEMO_SCENES = (
    DemoScene("S2B_32TPT_20240615_0_L2A", "sentinel-2-l2a", "2024-06-15T10:20:31.024000Z", 32632, (600000.0, 5180000.0), 10.0, 384, 1),
    DemoScene("S2A_32TPT_20240720_0_L2A", "sentinel-2-l2a", "2024-07-20T10:20:29.012000Z", 32632, (603840.0, 5180000.0), 10.0, 384, 2),
    DemoScene("S1A_IW_GRDH_1SDV_20240614T053402_20240614T053427_054310_069B1A", "sentinel-1-grd", "2024-06-14T05:34:14.500000Z", 4326, (10.30, 46.77), 0.0001, 384, 3),
    DemoScene("S1A_IW_GRDH_1SDV_20240626T053402_20240626T053427_054485_06A0F3", "sentinel-1-grd", "2024-06-26T05:34:14.500000Z", 4326, (10.34, 46.77), 0.0001, 384, 4),
    DemoScene("LC09_L2SP_193028_20240620_02_T1", "landsat-c2-l2", "2024-06-20T10:02:11.384000Z", 32632, (600000.0, 5180000.0), 30.0, 256, 5),
    DemoScene("LC08_L2SP_193028_20240712_02_T1", "landsat-c2-l2", "2024-07-12T10:02:05.113000Z", 32632, (607680.0, 5180000.0), 30.0, 256, 6),
    DemoScene("vt_m_4407307_ne_18_060_20230715", "naip", "2023-07-15T16:00:00Z", 26918, (660000.0, 4930000.0), 0.6, 512, 7),
    DemoScene("vt_m_4407308_nw_18_060_20230715", "naip", "2023-07-15T16:00:00Z", 26918, (660307.2, 4930000.0), 0.6, 512, 8),
)
DEMO_COLLECTIONS = ("sentinel-2-l2a", "sentinel-1-grd", "landsat-c2-l2", "naip")


# ---------------------------------------------------------------- synthetic surfaces
def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1]: coarse noise bilinearly upsampled to size x size."""
    coarse = rng.random((cells + 1, cells + 1))
    pos = np.linspace(0, cells, size)
    rows = np.array([np.interp(pos, np.arange(cells + 1), coarse[i]) for i in range(cells + 1)])
    field = np.array([np.interp(pos, np.arange(cells + 1), rows[:, j]) for j in range(size)]).T
    return (field - field.min()) / max(float(np.ptp(field)), 1e-9)


def _landcover(rng: np.random.Generator, size: int) -> np.ndarray:
    """Class index per pixel (0 water, 1 vegetation, 2 soil, 3 built)."""
    field = _smooth_field(rng, size, 6)
    return np.digitize(field, np.quantile(field, [0.15, 0.6, 0.85])).astype(np.uint8)


def _reflectance(cover: np.ndarray, wavelength: float, rng: np.random.Generator) -> np.ndarray:
    table = np.array([np.interp(wavelength, _KNOTS, _SIGNATURES[c]) for c in _CLASSES])
    return table[cover] * (1.0 + 0.06 * rng.standard_normal(cover.shape))


def _cloud_mask(rng: np.random.Generator, size: int, fraction: float) -> np.ndarray:
    field = _smooth_field(rng, size, 4)
    return field > np.quantile(field, 1.0 - fraction)


def _collar(size: int, width_fraction: float) -> np.ndarray:
    """True where a swath edge leaves no data: a diagonal cut in the lower-left corner."""
    r, c = np.mgrid[0:size, 0:size]
    return (r - c) > size * (1.0 - width_fraction)


def _downsample(a: np.ndarray, factor: int) -> np.ndarray:
    return a[factor // 2 :: factor, factor // 2 :: factor] if factor > 1 else a


# ---------------------------------------------------------------- writing
def _write_cog(path: Path, data: np.ndarray, epsg: int, transform: Affine, nodata: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    block = 256 if min(height, width) >= 512 else 128  # GDAL's COG driver wants >= 128
    with rasterio.open(
        path, "w", driver="COG", width=width, height=height, count=count, dtype=data.dtype.name,
        crs=f"EPSG:{epsg}", transform=transform, nodata=nodata, blocksize=block, compress="deflate",
    ) as dst:
        dst.write(data)


def _geometry(scene: DemoScene) -> tuple[list[float], dict]:
    x0, y0 = scene.origin
    x1, y1 = x0 + scene.pixel * scene.size, y0 - scene.pixel * scene.size
    w, s, e, n = transform_bounds(f"EPSG:{scene.epsg}", "EPSG:4326", x0, y1, x1, y0)
    bbox = [round(v, 7) for v in (w, s, e, n)]
    ring = [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]
    return bbox, {"type": "Polygon", "coordinates": [ring]}


def _asset(href: Path, scene: DemoScene, factor: int, extra: dict) -> dict:
    pixel = scene.pixel * factor
    size = scene.size // factor
    x0, y0 = scene.origin
    asset = {
        "href": str(href.resolve()),
        "type": COG_TYPE,
        "proj:shape": [size, size],
        "proj:transform": [pixel, 0.0, x0, 0.0, -pixel, y0],
        "roles": ["data"],
    }
    asset.update(extra)
    return asset


def _transform(scene: DemoScene, factor: int) -> Affine:
    pixel = scene.pixel * factor
    return Affine(pixel, 0.0, scene.origin[0], 0.0, -pixel, scene.origin[1])


def _item(scene: DemoScene, properties: dict, assets: dict, extensions: list[str]) -> dict:
    bbox, geometry = _geometry(scene)
    props = {"datetime": scene.datetime, "proj:epsg": scene.epsg, "updated": "2024-08-01T00:00:00Z"}
    props.update(properties)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [f"https://stac-extensions.github.io/{e}/schema.json" for e in extensions],
        "id": scene.item_id,
        "collection": scene.collection,
        "geometry": geometry,
        "bbox": bbox,
        "properties": props,
        "links": [],
        "assets": assets,
    }


def _sentinel2(scene: DemoScene, root: Path, rng: np.random.Generator) -> dict:
    cover = _landcover(rng, scene.size)
    clouds = _cloud_mask(rng, scene.size, 0.18)
    collar = _collar(scene.size, 0.3)
    assets = {}
    for key, name, common, wavelength, res in S2_BANDS:
        factor = res // 10
        refl = _reflectance(cover, wavelength, rng)
        refl = np.where(clouds, 0.55 + 0.05 * rng.standard_normal(refl.shape), refl)
        dn = np.clip((refl + 0.1) / 1e-4, 1, 65535).astype(np.uint16)  # processing baseline >= 04.00
        dn[collar] = 0
        dn = _downsample(dn, factor)
        href = root / scene.item_id / f"{name}.tif"
        _write_cog(href, dn[None], scene.epsg, _transform(scene, factor), 0)
        assets[key] = _asset(href, scene, factor, {
            "title": f"{common} - {res}m", "gsd": res,
            "eo:bands": [{"name": name, "common_name": common, "center_wavelength": wavelength}],
            "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": res, "scale": 0.0001, "offset": -0.1}],
            "roles": ["data", "reflectance"],
        })
    scl = np.choose(cover, [6, 4, 5, 5]).astype(np.uint8)  # water, vegetation, not-vegetated
    scl[clouds] = 9
    scl[collar] = 0
    href = root / scene.item_id / "SCL.tif"
    _write_cog(href, _downsample(scl, 2)[None], scene.epsg, _transform(scene, 2), 0)
    assets["scl"] = _asset(href, scene, 2, {
        "title": "Scene classification map (SCL)", "gsd": 20,
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20, "unit": "class"}],
    })
    props = {
        "platform": "sentinel-2b" if scene.item_id.startswith("S2B") else "sentinel-2a",
        "constellation": "sentinel-2", "instruments": ["msi"], "gsd": 10,
        "eo:cloud_cover": round(100.0 * float(clouds[~collar].mean()), 4),
        "s2:nodata_pixel_percentage": round(100.0 * float(collar.mean()), 4),
        "s2:processing_baseline": "05.10", "mgrs:utm_zone": 32, "mgrs:latitude_band": "T", "mgrs:grid_square": "PT",
        "earthsearch:boa_offset_applied": True,
    }
    return _item(scene, props, assets, ["eo/v1.1.0", "raster/v1.1.0", "projection/v1.1.0", "mgrs/v1.0.0"])


def _sentinel1(scene: DemoScene, root: Path, rng: np.random.Generator) -> dict:
    cover = _landcover(rng, scene.size)
    collar = _collar(scene.size, 0.25)
    assets = {}
    for pol, index in (("vv", 0), ("vh", 1)):
        db = np.array([_SAR_DB[c][index] for c in _CLASSES])[cover]
        speckle = rng.gamma(4.4, 1 / 4.4, cover.shape)  # ENL of IW GRDH
        amplitude = np.sqrt(10 ** (db / 10) * speckle) * 1000.0
        dn = np.clip(amplitude, 1, 65535).astype(np.uint16)
        dn[collar] = 0
        href = root / scene.item_id / f"{pol}.tif"
        _write_cog(href, dn[None], scene.epsg, _transform(scene, 1), 0)
        assets[pol] = _asset(href, scene, 1, {
            "title": f"{pol.upper()} Data",
            "raster:bands": [{"nodata": 0, "data_type": "uint16"}],
        })
    props = {
        "platform": "sentinel-1a", "constellation": "sentinel-1",
        "sar:frequency_band": "C", "sar:center_frequency": 5.405, "sar:instrument_mode": "IW",
        "sar:polarizations": ["VV", "VH"], "sar:product_type": "GRD",
        "sar:pixel_spacing_range": 10, "sar:pixel_spacing_azimuth": 10, "sat:orbit_state": "descending",
        "start_datetime": scene.datetime, "end_datetime": scene.datetime,
    }
    return _item(scene, props, assets, ["sar/v1.0.0", "sat/v1.0.0", "raster/v1.1.0", "projection/v1.1.0"])


def _landsat(scene: DemoScene, root: Path, rng: np.random.Generator) -> dict:
    cover = _landcover(rng, scene.size)
    clouds = _cloud_mask(rng, scene.size, 0.12)
    collar = _collar(scene.size, 0.2)
    assets = {}
    for name, common, wavelength in LANDSAT_BANDS:
        refl = _reflectance(cover, wavelength, rng)
        refl = np.where(clouds, 0.6 + 0.05 * rng.standard_normal(refl.shape), refl)
        dn = np.clip((refl + 0.2) / 2.75e-05, 1, 65535).astype(np.uint16)
        dn[collar] = 0
        href = root / scene.item_id / f"{name}.tif"
        _write_cog(href, dn[None], scene.epsg, _transform(scene, 1), 0)
        assets[name] = _asset(href, scene, 1, {
            "title": f"{common} band", "gsd": 30.0,
            "eo:bands": [{"name": name, "common_name": common, "center_wavelength": wavelength, "gsd": 30}],
            "raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 2.75e-05, "offset": -0.2, "unit": "reflectance"}],
            "roles": ["data", "reflectance"],
        })
    qa = np.full(cover.shape, 21824, dtype=np.uint16)       # clear land
    qa[cover == 0] = 21952                                   # clear water
    qa[clouds] = 22280                                       # cloud, high confidence
    qa[collar] = 1                                           # fill
    href = root / scene.item_id / "QA_PIXEL.tif"
    _write_cog(href, qa[None], scene.epsg, _transform(scene, 1), 1)
    assets["QA_PIXEL"] = _asset(href, scene, 1, {
        "title": "Pixel Quality Assessment Band", "gsd": 30.0,
        "raster:bands": [{"nodata": 1, "data_type": "uint16", "unit": "bit index"}],
        "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
    })
    props = {
        "platform": "landsat-9" if scene.item_id.startswith("LC09") else "landsat-8",
        "instruments": ["oli", "tirs"], "eo:cloud_cover": round(100.0 * float(clouds[~collar].mean()), 2),
        "landsat:collection_category": "T1", "landsat:collection_number": "02", "landsat:processing_level": "L2SP",
        "landsat:wrs_path": "193", "landsat:wrs_row": "028", "gsd": 30,
    }
    return _item(scene, props, assets, ["eo/v1.1.0", "raster/v1.1.0", "projection/v1.1.0", "view/v1.0.0"])


def _naip(scene: DemoScene, root: Path, rng: np.random.Generator) -> dict:
    cover = _landcover(rng, scene.size)
    bands = [np.clip(_reflectance(cover, wl, rng) * 400.0, 1, 255) for _, _, wl in NAIP_BANDS]
    data = np.stack(bands).astype(np.uint8)
    href = root / scene.item_id / "image.tif"
    _write_cog(href, data, scene.epsg, _transform(scene, 1), None)
    assets = {"image": _asset(href, scene, 1, {
        "title": "RGBIR COG tile",
        "eo:bands": [{"name": n, "common_name": c} for n, c, _ in NAIP_BANDS],
    })}
    props = {"gsd": 0.6, "naip:state": "vt", "naip:year": "2023"}
    return _item(scene, props, assets, ["eo/v1.0.0", "projection/v1.0.0"])


_WRITERS: dict[str, Callable[[DemoScene, Path, np.random.Generator], dict]] = {
    "sentinel-2-l2a": _sentinel2,
    "sentinel-1-grd": _sentinel1,
    "landsat-c2-l2": _landsat,
    "naip": _naip,
}


def collection_for(collection_id: str, items: Sequence[dict], description: str = "") -> dict:
    """A minimal valid STAC Collection whose extent covers ``items``."""
    bboxes = [it["bbox"] for it in items if it.get("bbox")] or [[-180, -90, 180, 90]]
    times = sorted(it["properties"].get("datetime") for it in items if it["properties"].get("datetime"))
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": description or collection_id,
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[
                min(b[0] for b in bboxes), min(b[1] for b in bboxes),
                max(b[2] for b in bboxes), max(b[3] for b in bboxes),
            ]]},
            "temporal": {"interval": [[times[0] if times else None, times[-1] if times else None]]},
        },
        "links": [],
    }


def write_demo_catalog(root: str | Path, scenes: tuple[DemoScene, ...] = DEMO_SCENES) -> tuple[list[dict], list[dict]]:
    """Write COGs and STAC Items under ``root``; return ``(collections, items)``.

    Idempotent: a finished catalog (``root/items.json``) is read back instead of rewritten.
    """
    root = Path(root)
    done = root / "items.json"
    if done.exists():
        data = json.loads(done.read_text())
        return data["collections"], data["items"]
    items = [_WRITERS[s.collection](s, root, np.random.default_rng(s.seed)) for s in scenes]
    collections = [
        collection_for(cid, [it for it in items if it["collection"] == cid], f"ofa demo {cid}")
        for cid in dict.fromkeys(s.collection for s in scenes)
    ]
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps({"collections": collections, "items": items}, indent=1))
    tmp.replace(done)
    return collections, items
