"""Sentinel-1 GRD as the catalogs publish it, small: a GCP-only measurement GeoTIFF on the grid of the
crop in tests/data/s1 (its real geolocation-grid points as GCPs, its real calibration annotation) and
the Earth Search / Planetary Computer Items of the product with hrefs pointing at the local files.

The package the crop comes from ships placeholder measurement pixels (all zero), so the digital
numbers are generated here: seeded, spatially structured (a smooth field with 4.4-look speckle) and
with a 16-column strip of zeros (swath border) on the left, so misplaced pixels show.
"""
from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS

DATA_DIR = Path(__file__).resolve().parent / "data"
S1_DIR = DATA_DIR / "s1"
STAC_DIR = DATA_DIR / "stac" / "sentinel-1-grd"
PRODUCT = "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371"
ES_ID = PRODUCT[:-5]   # Earth Search drops the product's unique id, Planetary Computer keeps it
BORDER = 16


def annotation_gcps() -> tuple[list[GroundControlPoint], int, int]:
    """The crop's geolocation grid as GCPs (row = line, col = pixel, as in the measurement files), and its (rows, cols)."""
    root = ET.parse(S1_DIR / "product-iw-vv.xml").getroot()
    info = root.find("imageAnnotation/imageInformation")
    gcps = [GroundControlPoint(row=float(p.findtext("line")), col=float(p.findtext("pixel")),
                               x=float(p.findtext("longitude")), y=float(p.findtext("latitude")), z=float(p.findtext("height")),
                               id=str(i))
            for i, p in enumerate(root.findall("geolocationGrid/geolocationGridPointList/geolocationGridPoint"))]
    return gcps, int(info.findtext("numberOfLines")), int(info.findtext("numberOfSamples"))


def dn(rows: int, cols: int, seed: int) -> np.ndarray:
    """Seeded uint16 amplitude DNs with structure and speckle; the first ``BORDER`` columns are 0."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    mean = 180.0 + 90.0 * np.sin(r / 23.0) * np.cos(c / 41.0) + 0.2 * c
    intensity = mean ** 2 * rng.gamma(4.4, 1.0 / 4.4, size=(rows, cols))
    out = np.clip(np.sqrt(intensity), 1, 65535).astype(np.uint16)
    out[:, :BORDER] = 0
    return out


def write_measurement(path: Path, seed: int) -> Path:
    """A GCP-only tiled GeoTIFF of the crop (no geotransform, no CRS on the raster, GCPs in EPSG:4326)."""
    gcps, rows, cols = annotation_gcps()
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=1, dtype="uint16", tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", gcps=gcps, crs=CRS.from_epsg(4326)) as dst:
        dst.write(dn(rows, cols, seed), 1)
    return path


def footprint(gcps: list[GroundControlPoint], rows: int, cols: int) -> dict:
    """WGS84 polygon of the crop's outline (edges densified), through the same TPS transform GDAL uses."""
    from rasterio.transform import GCPTransformer

    t = np.linspace(0.0, 1.0, 9)
    edge_r = np.concatenate([np.zeros_like(t), t, np.ones_like(t), t[::-1]]) * rows
    edge_c = np.concatenate([t, np.ones_like(t), t[::-1], np.zeros_like(t)]) * cols
    xs, ys = GCPTransformer(gcps, tps=True).xy(edge_r, edge_c, offset="ul")
    ring = [[round(float(x), 7), round(float(y), 7)] for x, y in zip(xs, ys)]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def vh_calibration(root: Path) -> Path:
    """The VH calibration annotation of the test product: the package ships only VV's, so VV's LUT stands in
    (in IW GRD products both polarisations carry the same sigmaNought LUT) with the header saying VH."""
    text = (S1_DIR / "calibration-iw-vv.xml").read_text().replace("<polarisation>VV</polarisation>", "<polarisation>VH</polarisation>")
    path = root / "calibration-iw-vh.xml"
    path.write_text(text)
    return path


def local_items(root: Path) -> dict[str, dict]:
    """The product's Earth Search ("es") and Planetary Computer ("pc") Items, plus a VV-only variant of the
    Earth Search one ("es_vv") and one without calibration links ("es_dn"), reading local files."""
    root.mkdir(parents=True, exist_ok=True)
    gcps, rows, cols = annotation_gcps()
    files = {"vv": write_measurement(root / "iw-vv.tiff", 1), "vh": write_measurement(root / "iw-vh.tiff", 2),
             "calibration-vv": S1_DIR / "calibration-iw-vv.xml", "calibration-vh": vh_calibration(root)}
    geometry = footprint(gcps, rows, cols)
    xs, ys = zip(*geometry["coordinates"][0])
    out = {}
    for name, stem in (("es", ES_ID), ("pc", PRODUCT)):
        item = json.loads((STAC_DIR / f"{stem}.json").read_text())
        for pol in ("vv", "vh"):
            item["assets"][pol]["href"] = str(files[pol])
            item["assets"][f"schema-calibration-{pol}"]["href"] = str(files[f"calibration-{pol}"])
        item["geometry"], item["bbox"] = geometry, [min(xs), min(ys), max(xs), max(ys)]
        item["properties"].pop("proj:bbox", None)
        item["properties"]["proj:shape"] = [rows, cols]
        out[name] = item
    vv = copy.deepcopy(out["es"])
    vv["id"] = f"{ES_ID}-VV-only"
    for key in ("vh", "schema-calibration-vh", "schema-noise-vh", "schema-product-vh"):
        vv["assets"].pop(key)
    vv["properties"]["sar:polarizations"] = ["VV"]
    out["es_vv"] = vv
    raw = copy.deepcopy(out["es"])
    raw["id"] = f"{ES_ID}-no-calibration"
    for pol in ("vv", "vh"):
        raw["assets"].pop(f"schema-calibration-{pol}")
    out["es_dn"] = raw
    return out
