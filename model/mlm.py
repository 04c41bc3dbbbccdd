"""A model as a STAC Item with the Machine Learning Model extension (MLM v1.4.0), from what a checkpoint's
``config.json`` says about itself (``io.read_info``): per sensor one ``mlm:input`` with its bands, shape
and the normalisation it was trained with, one ``mlm:output`` (the pooled embedding), the weights as the
``mlm:model`` asset with their sha256, and ``derived_from`` links to the training datasets' STAC Collections.

``value_scaling`` is a per-band z-score on the *raw* pixel values (as a sample's ``pixels.npy`` holds
them): the training normalisation ``(raw * scale + offset - mean) / std`` is exactly
``(raw - mean') / std'`` with ``mean' = (mean - offset) / scale`` and ``std' = std / scale``; no-data
pixels become 0 after it (``pre_processing_function``: ``ofa.model.io:normalise`` does both).
"""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from typing import Any

import fsspec

from .config import ModelConfig

STAC_VERSION = "1.1.0"
MLM_EXT = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
EO_EXT = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
ITEM_NAME = "mlm-item.json"
DATASET_COLLECTION = "stac/collection.json"
TASKS = ["similarity-search"]


def _z_scores(facts: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Per-band z-score on raw values with scale/offset folded in; None without statistics."""
    n = len(facts.get("bands") or [])
    mean, std = facts.get("mean") or [None] * n, facts.get("std") or [None] * n
    scale, offset = facts.get("scale") or [1.0] * n, facts.get("offset") or [0.0] * n
    out = []
    for m, s, a, b in zip(mean, std, scale, offset):
        if m is None or s is None or not a:
            return None
        a, b = float(a), float(b or 0.0)
        out.append({"type": "z-score", "mean": (float(m) - b) / a, "stddev": float(s) / abs(a)})
    return out or None


def model_input(sensor: str, cfg: ModelConfig, facts: dict[str, Any] | None) -> dict[str, Any]:
    """The ``mlm:input`` of one sensor: raw pixels of its bands, resized to ``img_size``, z-scored."""
    channels = cfg.modalities.get(sensor) or len((cfg.wavelengths or {}).get(sensor) or [])
    bands = list((facts or {}).get("bands") or [])
    entry: dict[str, Any] = {
        "name": sensor, "bands": bands,
        "input": {"shape": [-1, channels or len(bands), cfg.img_size, cfg.img_size],
                  "dim_order": ["batch", "channel", "height", "width"], "data_type": "float32"},
        "description": f"{sensor} pixels as stored (native dtype, before scale/offset), the whole chip resized "
                       f"(bilinear, antialiased) to {cfg.img_size} px; no-data pixels 0 after scaling",
        "value_scaling": _z_scores(facts or {}),
        "resize_type": "interpolation-linear",
        "pre_processing_function": {"format": "python", "expression": "ofa.model.io:normalise"},
    }
    return entry


def _bands(sensors: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """STAC 1.1 band objects for every band an input names (one per name)."""
    out: dict[str, dict[str, Any]] = {}
    for facts in sensors.values():
        for i, name in enumerate(facts.get("bands") or []):
            band: dict[str, Any] = {"name": name}
            for key, field in (("wavelengths", "eo:center_wavelength"), ("gsd", "gsd")):
                values = facts.get(key) or []
                if i < len(values) and values[i] is not None:
                    band[field] = values[i]
            out.setdefault(name, band)
    return list(out.values())


def _read_json(url: str, storage_options: dict[str, Any] | None) -> dict | None:
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return json.loads(fs.cat_file(path))
    except Exception:  # noqa: BLE001 - a dataset gone or unreachable: the link stays, its extent is unknown
        return None


def training_links(info: dict[str, Any], storage_options: dict[str, Any] | None = None) -> tuple[list, list]:
    """``derived_from`` links to each training dataset's STAC Collection, and the Collections that could be read."""
    links, found = [], []
    for data in (info.get("training") or {}).get("data") or []:
        url = str(data.get("url") or "").rstrip("/")
        if not url:
            continue
        url = url if "://" in url else "file://" + os.path.abspath(url)  # as recorded: relative to where training ran
        href = f"{url}/{DATASET_COLLECTION}"
        links.append({"rel": "derived_from", "href": href, "type": "application/json",
                      "title": f"training dataset {url} (manifest sha256 {data.get('manifest_sha256')})"})
        doc = _read_json(href, storage_options)
        if doc is not None:
            found.append(doc)
    return links, found


def _when_where(collections: list[dict]) -> dict[str, Any]:
    """``bbox``, ``geometry`` and the time range of the training data, from its Collections' extents."""
    boxes = [c["extent"]["spatial"]["bbox"][0] for c in collections if c.get("extent", {}).get("spatial", {}).get("bbox")]
    times = [t for c in collections for t in (c.get("extent", {}).get("temporal", {}).get("interval") or [[]])[0] if t]
    out: dict[str, Any] = {"geometry": None, "properties": {}}
    if boxes:
        w, s = min(b[0] for b in boxes), min(b[1] for b in boxes)
        e, n = max(b[2] for b in boxes), max(b[3] for b in boxes)
        out["bbox"] = [w, s, e, n]
        out["geometry"] = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    if times:
        out["properties"] = {"datetime": None, "start_datetime": min(times), "end_datetime": max(times)}
    else:
        out["properties"] = {"datetime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return out


def weights_asset(href: str, data: bytes, artifact_type: str, title: str) -> dict[str, Any]:
    """The ``mlm:model`` asset: safetensors weights with their sha256 multihash and size."""
    return {"href": href, "type": "application/octet-stream; application=safetensors", "title": title,
            "roles": ["mlm:model", "mlm:weights", "weights", "data"], "mlm:artifact_type": artifact_type,
            "file:checksum": "1220" + hashlib.sha256(data).hexdigest(), "file:size": len(data)}


def mlm_item(info: dict[str, Any], item_id: str, sensors: list[str], assets: dict[str, dict], parameters: int,
             storage_options: dict[str, Any] | None = None, name: str | None = None) -> dict[str, Any]:
    """The MLM Item of a checkpoint (``info``: its config.json) taking ``sensors``' inputs, with ``assets``."""
    import torch

    cfg = ModelConfig.from_dict(info["config"])
    facts = {s: (info.get("sensors") or {}).get(s) or {} for s in sensors}
    links, collections = training_links(info, storage_options)
    place = _when_where(collections)
    properties = {
        **place["properties"],
        "description": f"OFA-Net {cfg.size} ViT (patch {cfg.patch_size}, {cfg.img_size} px) pretrained as a masked "
                       f"autoencoder; {cfg.embedding} patch embedding; output: mean over patch tokens",
        "mlm:name": name or f"ofa-{cfg.size}-{cfg.embedding}", "mlm:architecture": "Vision Transformer",
        "mlm:tasks": TASKS, "mlm:framework": "PyTorch", "mlm:framework_version": torch.__version__.split("+")[0],
        "mlm:total_parameters": int(parameters), "mlm:pretrained": True,
        "mlm:pretrained_source": ", ".join(d.get("url", "") for d in (info.get("training") or {}).get("data") or [])
        or None,
        "mlm:accelerator": None, "mlm:accelerator_constrained": False,
        "mlm:input": [model_input(s, cfg, facts[s]) for s in sensors],
        "mlm:output": [{"name": "embedding", "tasks": TASKS, "description": "pooled encoder output (mean over "
                        "patch tokens, no class token)", "result": {"shape": [-1, cfg.embed_dim],
                        "dim_order": ["batch", "embedding"], "data_type": "float32"}, "classification:classes": []}],
        "mlm:hyperparameters": {"size": cfg.size, "embedding": cfg.embedding, "patch_size": cfg.patch_size,
                                "img_size": cfg.img_size, "depth": cfg.depth, "embed_dim": cfg.embed_dim,
                                "num_heads": cfg.num_heads, "mask_ratio": cfg.mask_ratio, "pool": "mean"},
        "bands": _bands(facts),
    }
    item = {"type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": [MLM_EXT, FILE_EXT, EO_EXT],
            "id": item_id, "geometry": place["geometry"], "properties": properties,
            "links": links, "assets": assets}
    if "bbox" in place:
        item["bbox"] = place["bbox"]
    return item
