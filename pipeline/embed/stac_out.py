"""What an embedding output says about itself, in the field's own metadata.

- In the store: the geo-embeddings Zarr convention (``zarr_conventions`` entry, ``geoemb:*`` root
  attributes); the GeoParquet file carries the same ``geoemb:*`` facts as file metadata keys.
- Beside it (``OUT.collection.json``, ``OUT.item.json``, ``OUT.model.json``): a STAC Collection with the
  Embeddings extension (``emb:*``; links ``emb:model`` to the model's MLM Item and ``emb:source-data`` to
  each dataset's STAC Collection), an Item whose ``embeddings`` asset is the store, and the MLM Item of the
  checkpoint that made them (its weights as the ``mlm:model`` asset).

``geoemb:model`` is the checkpoint's model folder (what ``ofa.model.from_pretrained`` loads) and
``geoemb:source_data`` the datasets' STAC Collections: absolute URLs that do not depend on where the
output goes, so the store's bytes stay the same for the same inputs.
"""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ofa.ingest.dataset_stac import COLLECTION_PATH
from ofa.ingest.geoparquet import PARQUET_MEDIA_TYPE, union_bbox
from ofa.ingest.dataset.manifest import Manifest
from ofa.ingest.version import package_version

from .storage import Target

GEOEMB_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/geo-embeddings/embeddings-zarr-convention/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/geo-embeddings/embeddings-zarr-convention/blob/v1/README.md",
    "uuid": "61c12cc5-0e28-4056-999a-480cf3fb7e4c",
    "name": "geoemb:",
    "description": "Geoembeddings convention for geospatial embedding arrays with model provenance",
}
STAC_VERSION = "1.1.0"
EMB_EXT = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
PROCESSING_EXT = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
MEDIA_TYPES = {"zarr": "application/vnd+zarr", "geoparquet": PARQUET_MEDIA_TYPE}
SUFFIXES = {"collection": ".collection.json", "item": ".item.json", "model": ".model.json"}


def absolute_url(url: str) -> str:
    """``url`` with a scheme: local paths become ``file://`` URLs."""
    return url if "://" in url else "file://" + os.path.abspath(url)


def dataset_collection_url(dataset: str) -> str:
    """Where ``ofa ingest`` (or ``ofa manifest stac``) put a dataset's STAC Collection."""
    return f"{absolute_url(dataset).rstrip('/')}/{COLLECTION_PATH}"


def _read_json(url: str, storage_options: dict | None) -> dict | None:
    target = Target(url, storage_options)
    raw = target.read(target.root)
    return json.loads(raw) if raw is not None else None


def geoemb_attrs(manifests: list[Manifest], model_url: str, dim: int, storage_options: dict | None) -> dict[str, Any]:
    """The convention's root attributes for chips embedded from the datasets of ``manifests`` by ``model_url``."""
    data = [m.url for m in manifests]
    sizes = sorted({(m.data.get("chips") or {}).get("chip_size") for m in manifests} - {None})
    gsds: set = set()
    for url in data:
        doc = _read_json(dataset_collection_url(url), storage_options) or {}
        gsds.update(doc.get("summaries", {}).get("gsd") or [None])
    attrs: dict[str, Any] = {
        "zarr_conventions": [GEOEMB_CONVENTION],
        "geoemb:type": "chip", "geoemb:dimensions": int(dim), "geoemb:model": absolute_url(model_url),
        "geoemb:source_data": [dataset_collection_url(url) for url in data], "geoemb:data_type": "float32",
        "geoemb:build_version": f"ofa {package_version()}",
    }
    if sizes:
        size = int(max(sizes))
        attrs["geoemb:chip_layout"] = {"layout_type": "regular_grid" if len(sizes) == 1 else "irregular",
                                       "chip_size": [size, size], "stride": [size, size]}
    if len(gsds) == 1 and None not in gsds:
        attrs["geoemb:gsd"] = float(next(iter(gsds)))
    return attrs


def output_extent(fmt: str, url: str, storage_options: dict | None) -> tuple[list[float] | None, list[str] | None]:
    """``(bbox, [start, end])`` of the written samples (their WGS84 boxes and datetimes)."""
    target = Target(url, storage_options)
    if fmt == "zarr":
        import xarray as xr

        ds = xr.open_zarr(target.zarr_store())
        boxes, times = ds["bbox"].values, ds["datetime"].values
    else:
        import pyarrow.parquet as pq

        with target.fs.open(target.root, "rb") as f:
            tab = pq.read_table(f, columns=["bbox", "datetime"])
        boxes = np.array([[np.nan] * 4 if b is None else list(b.values()) for b in tab.column("bbox").to_pylist()])
        times = tab.column("datetime").cast("timestamp[ns]").to_numpy(zero_copy_only=False)
    times = np.asarray(times, dtype="datetime64[s]")
    times = times[~np.isnat(times)]
    span = [f"{times.min()}Z", f"{times.max()}Z"] if len(times) else None
    return union_bbox(boxes), span


def _rel(out: str, suffix: str) -> str:
    """The href, relative to a file beside ``out``, of the file ``out + suffix``."""
    return "./" + out.rstrip("/").rsplit("/", 1)[-1] + suffix


def _licence(data: list[str], storage_options: dict | None) -> str:
    found = {(_read_json(dataset_collection_url(u), storage_options) or {}).get("license") for u in data}
    return found.pop() if len(found) == 1 and None not in found else "other"


def _links(out: str, data: list[str]) -> list[dict]:
    sources = [{"rel": "emb:source-data", "href": dataset_collection_url(u), "type": "application/json",
                "title": f"ofa dataset {u} (its STAC Collection, sample index and manifest)"} for u in data]
    model = {"rel": "emb:model", "href": _rel(out, SUFFIXES["model"]), "type": "application/geo+json",
             "title": "the encoder, as a STAC MLM Item"}
    return [model, *sources]


def embeddings_collection(cfg: Any, attrs: dict[str, Any], extent: tuple, sensors: list[str]) -> dict:
    """The STAC 1.1 Collection (Embeddings extension) of the output ``cfg.out``."""
    bbox, span = extent
    name = cfg.out.rstrip("/").rsplit("/", 1)[-1]
    doc: dict[str, Any] = {
        "type": "Collection", "stac_version": STAC_VERSION, "stac_extensions": [EMB_EXT], "id": name,
        "title": f"ofa embeddings {name}",
        "description": f"One {attrs['geoemb:dimensions']}-dimensional vector per chip ({', '.join(sensors)}): the "
                       f"checkpoint's encoder without masking, mean-pooled over patch tokens ({cfg.format}).",
        "license": _licence(cfg.data, cfg.storage_options),
        "extent": {"spatial": {"bbox": [bbox or [-180.0, -90.0, 180.0, 90.0]]},
                   "temporal": {"interval": [span or [None, None]]}},
        "emb:type": "chip", "emb:dimensions": attrs["geoemb:dimensions"], "data_type": attrs["geoemb:data_type"],
        "links": [{"rel": "root", "href": _rel(cfg.out, SUFFIXES["collection"]), "type": "application/json"},
                  {"rel": "item", "href": _rel(cfg.out, SUFFIXES["item"]), "type": "application/geo+json"},
                  *_links(cfg.out, cfg.data)],
        "item_assets": {"embeddings": {"type": MEDIA_TYPES[cfg.format], "roles": ["data"],
                                       "title": "chip embeddings"}},
        "summaries": {"emb:type": ["chip"], "emb:dimensions": [attrs["geoemb:dimensions"]],
                      "data_type": [attrs["geoemb:data_type"]], "ofa:sensor": sensors},
    }
    if "geoemb:gsd" in attrs:
        doc["gsd"] = attrs["geoemb:gsd"]
    if "geoemb:chip_layout" in attrs:
        layout = attrs["geoemb:chip_layout"]
        doc["emb:chip_layout"] = {**layout, "layout_type": "variable_grid"} if layout["layout_type"] == "irregular" \
            else layout
    return doc


def embeddings_item(cfg: Any, collection: dict, attrs: dict[str, Any], extent: tuple, preview: str | None) -> dict:
    """The Item whose ``embeddings`` asset is the output store."""
    bbox, span = extent
    w, s, e, n = bbox or [-180.0, -90.0, 180.0, 90.0]
    name = cfg.out.rstrip("/").rsplit("/", 1)[-1]
    assets = {"embeddings": {"href": "./" + name, "type": MEDIA_TYPES[cfg.format], "roles": ["data"],
                             "title": f"chip embeddings ({cfg.format})"}}
    if preview:
        assets["preview"] = {"href": absolute_url(preview), "type": "image/png", "roles": ["overview"],
                             "title": "PCA of the embeddings on their footprints"}
    return {
        "type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": [EMB_EXT, PROCESSING_EXT],
        "id": name, "collection": collection["id"], "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": {
            "datetime": None, "start_datetime": (span or [None, None])[0], "end_datetime": (span or [None, None])[1],
            "emb:runtime_parameters": {"pool": cfg.pool, "batch_size": cfg.batch_size, "chunk_size": cfg.chunk_size,
                                       "checkpoint": cfg.checkpoint, "model": attrs["geoemb:model"]},
            "processing:datetime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "processing:software": {"ofa": package_version()},
        },
        "links": [{"rel": "collection", "href": _rel(cfg.out, SUFFIXES["collection"]), "type": "application/json"},
                  {"rel": "parent", "href": _rel(cfg.out, SUFFIXES["collection"]), "type": "application/json"},
                  *_links(cfg.out, cfg.data)],
        "assets": assets,
    }


def model_item(model_url: str, sensors: list[str], storage_options: dict | None) -> dict:
    """The MLM Item of the checkpoint at ``model_url`` (its weights as the ``mlm:model`` asset)."""
    from ofa.model import from_pretrained, read_info
    from ofa.model.io import WEIGHTS_NAME
    from ofa.model.mlm import mlm_item, weights_asset

    info = read_info(model_url, storage_options)
    weights = Target(f"{model_url.rstrip('/')}/{WEIGHTS_NAME}", storage_options)
    data = weights.fs.cat_file(weights.root)
    asset = weights_asset(absolute_url(weights.url), data, "ofa.model.from_pretrained",
                          "OFA-Net MAE checkpoint: ofa.model.from_pretrained(the folder)")
    total = from_pretrained(model_url, storage_options).parameter_counts()["total"]
    item_id = "ofa-model-" + hashlib.sha256(data).hexdigest()[:12]
    return mlm_item(info, item_id, sensors, {"model": asset}, total, storage_options)


def write_stac(cfg: Any, attrs: dict[str, Any], model_url: str, sensors: list[str], preview: str | None) -> dict:
    """Write ``OUT.collection.json``, ``OUT.item.json`` and ``OUT.model.json`` beside the output; return their URLs."""
    extent = output_extent(cfg.format, cfg.out, cfg.storage_options)
    collection = embeddings_collection(cfg, attrs, extent, sensors)
    docs = {"collection": collection, "item": embeddings_item(cfg, collection, attrs, extent, preview),
            "model": model_item(model_url, sensors, cfg.storage_options)}
    written = {}
    for kind, doc in docs.items():
        target = Target(cfg.out.rstrip("/") + SUFFIXES[kind], cfg.storage_options)
        target.put(target.root, json.dumps(doc, indent=2).encode())
        written[kind] = target.url
    return written
