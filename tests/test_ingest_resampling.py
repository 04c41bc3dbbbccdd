"""Coarse bands land on the chip grid where nearest-neighbour puts them: each chip pixel takes the
coarse pixel that contains its centre, also when a chip is not a whole number of coarse pixels
(80 px at 10 m is 13.33 px at 60 m)."""
from __future__ import annotations


import numpy as np
import pytest
import rasterio

from ingest_fixtures import load_item, localize_item

from ofa.ingest.chips import ChipOptions, process_item
from ofa.ingest.hrefs import LOCAL_FILES
from ofa.ingest.items import plan_item


def _expected(href: str, transform: list[float], size: int) -> np.ndarray:
    """Nearest-neighbour by pixel centre, computed independently of the reader."""
    a, _, c, _, e, f = transform
    with rasterio.open(href) as ds:
        data, t = ds.read(1), ds.transform
    xs = c + (np.arange(size) + 0.5) * a
    ys = f + (np.arange(size) + 0.5) * e
    cols = np.clip(np.floor((xs - t.c) / t.a).astype(int), 0, ds.width - 1)
    rows = np.clip(np.floor((ys - t.f) / t.e).astype(int), 0, ds.height - 1)
    return data[rows][:, cols]


@pytest.mark.parametrize("chip", [80, 96])
def test_coarse_bands_are_nearest_resampled_at_pixel_centres(tmp_path, chip):
    import io
    import json

    item = localize_item(load_item("sentinel-s2-l2a-cogs", "S2A_28QCH_20200714_0_L2A"), tmp_path, size=240)
    plan = plan_item(item, policy=LOCAL_FILES)
    result = process_item(plan, ChipOptions(chip_size=chip, max_nodata=1.0, max_cloud=1.0))
    assert result.kept >= 4
    gsds = set()
    for _key, pixels, meta in result.samples:
        meta = json.loads(meta)
        array = np.load(io.BytesIO(pixels))
        for channel, ch in zip(array, plan.channels):
            href = ch.href.split("?")[0]
            with rasterio.open(href) as ds:
                gsds.add(round(ds.transform.a))
            np.testing.assert_array_equal(channel, _expected(href, meta["transform"], chip), err_msg=f"{ch.name} {meta['window']}")
    assert gsds == {10, 20, 60}
