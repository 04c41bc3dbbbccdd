"""COGs that disagree with their STAC item (a float32 band with NaN nodata among uint16 bands, an int16
band with -9999 nodata): nothing breaks; each sample records the dtype it really holds, and the
training loader turns it into finite tensors. A file nodata that disagrees with the item's gets one
warning line naming the item and asset (the item's value is used)."""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from ingest_fixtures import ES_S2, _write_cog, localized_items

from ofa.ingest.chips import ChipOptions, process_item
from ofa.ingest.hrefs import LOCAL_FILES
from ofa.ingest.items import plan_item


@pytest.fixture(scope="module")
def s2_item(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("catalog")
    item = next(it for it in localized_items(root) if it["id"] == ES_S2)
    return item, root


def _variant(item: dict, root: Path, dtype: str, nodata: float) -> dict:
    out = copy.deepcopy(item)
    out["id"] = f"WRONG_{dtype}"
    src = Path(out["assets"]["red"]["href"].split("?")[0])
    with rasterio.open(src) as ds:
        data, tf, crs = ds.read().astype("float64"), ds.transform, ds.crs
    data[:, :12, :] = nodata                                  # a band of the file's own nodata at the top
    href = root / "wrong" / f"red_{dtype}.tif"
    _write_cog(href, data.astype(dtype), crs, tf, nodata)
    out["assets"]["red"]["href"] = str(href)                  # the item still says uint16, nodata 0
    return out


@pytest.mark.parametrize("dtype,nodata", [("float32", float("nan")), ("int16", -9999.0)])
def test_wrong_dtype_and_nodata_do_not_break(s2_item, dtype, nodata, caplog):
    import logging

    import torch

    from ofa.pipeline.data import Stream, decode

    item, root = s2_item
    caplog.set_level(logging.WARNING, logger="ofa.ingest")
    result = process_item(plan_item(_variant(item, root, dtype, nodata), policy=LOCAL_FILES), ChipOptions(80))
    assert result.kept > 0
    lines = [r.getMessage() for r in caplog.records if "nodata" in r.getMessage()]
    assert len(lines) == 1 and f"WRONG_{dtype}" in lines[0] and "'red'" in lines[0], lines
    caplog.clear()
    process_item(plan_item(item, policy=LOCAL_FILES), ChipOptions(80))                # the good item: no such line
    assert not [r for r in caplog.records if "nodata" in r.getMessage()]
    stream = Stream(dataset="x", sensor="sentinel-2", shards=[], count=0, bands=[c.name for c in plan_item(item, policy=LOCAL_FILES).channels],
                    mean=np.zeros(12, np.float32), std=np.ones(12, np.float32))
    for key, pixels, meta in result.samples:
        arr = np.load(io.BytesIO(pixels), allow_pickle=False)
        info = json.loads(meta)
        assert info["dtype"] == arr.dtype.name                # the meta tells the truth about the bytes
        assert np.can_cast(dtype, arr.dtype) and np.can_cast("uint16", arr.dtype)   # promoted, never truncated
        x = decode({"pixels.npy": pixels, "meta.json": meta, "__key__": key}, stream)
        assert isinstance(x, torch.Tensor) and bool(torch.isfinite(x).all())
