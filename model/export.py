"""Exports of a saved model: the backbone for timm, and a Hugging Face Hub folder with a model card.

- ``export_timm``: per sensor, ``model.safetensors`` under timm's VisionTransformer names plus a
  ``config.json`` in timm's hub layout (``architecture``, ``model_args``, ``pretrained_cfg``), so both
  ``timm.create_model("local-dir:DIR", pretrained=True)`` and
  ``timm.create_model(arch, **model_args).load_state_dict(weights, strict=True)`` work. The
  architecture is one timm registers, ``vit_{size}_patch16_224`` (same depth, width and heads);
  ``model_args`` say what differs (``patch_size``, ``img_size``, ``in_chans``). The backbone has no
  class token; the export keeps it that way (``class_token=False``, ``global_pool="avg"``,
  ``fc_norm=False``) so timm's pooled features equal ``mae.encode``'s: a class token would take part
  in every block's attention and change every patch token. Without a sensor, one folder per sensor.
- ``export_hf``: the checkpoint as is (``model.safetensors`` + ``config.json``, loadable with
  ``from_pretrained``) and a ``README.md`` model card whose YAML front matter names the licence,
  tags, sensors and bands and the training data's manifest hashes, with a GEO-Bench table when given.
- Both write ``mlm-item.json``, the model as a STAC MLM Item (``mlm``) whose ``mlm:model`` asset is the
  folder's weights.
"""
from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import fsspec
from safetensors.torch import save as st_save

from .card import model_card
from .io import CONFIG_NAME, WEIGHTS_NAME, from_pretrained, read_info
from .mae import MaskedAutoencoder
from .mlm import ITEM_NAME, mlm_item, weights_asset
from .timm_export import export_timm_state_dict

#: backbone size -> timm's architecture stem (same depth, width and heads)
TIMM_ARCH = {"tiny": "vit_tiny", "small": "vit_small", "base": "vit_base", "large": "vit_large"}


def _ofa_version() -> str:
    try:
        return version("ofa")
    except PackageNotFoundError:
        return "unknown"


def _write(url: str, name: str, data: bytes, storage_options: dict[str, Any] | None) -> str:
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    fs.makedirs(root, exist_ok=True)
    path = f"{root.rstrip('/')}/{name}"
    with fs.open(path, "wb") as f:
        f.write(data)
    return path


def export_sensors(mae: MaskedAutoencoder, info: dict[str, Any], sensor: str | None) -> list[str]:
    """The sensors to export: ``sensor``, else every sensor the checkpoint describes (its training data's), else
    every modality it has an embedding for."""
    cfg = mae.config
    have = sorted(cfg.modalities) if cfg.embedding == "ofa" else sorted(cfg.wavelengths or {})
    if sensor is not None:
        if sensor not in have:
            raise ValueError(f"--sensor {sensor!r}: the checkpoint has {', '.join(have)}")
        return [sensor]
    described = [s for s in sorted(info.get("sensors") or {}) if s in have]
    return described or have


def timm_config(mae: MaskedAutoencoder, sensor: str, facts: dict[str, Any] | None) -> dict[str, Any]:
    """timm's hub ``config.json`` for the exported backbone (plus an ``ofa`` section: sensor, bands, normalisation):
    a registered architecture of the same depth, width and heads, with what differs in ``model_args``."""
    cfg = mae.config
    channels = cfg.modalities[sensor] if cfg.embedding == "ofa" else len(cfg.wavelengths[sensor])
    arch = f"{TIMM_ARCH[cfg.size]}_patch16_224"
    model_args = {"img_size": cfg.img_size, "patch_size": cfg.patch_size, "in_chans": channels, "num_classes": 0,
                  "class_token": False, "global_pool": "avg", "fc_norm": False}
    return {"architecture": arch, "num_classes": 0, "num_features": cfg.embed_dim, "global_pool": "avg",
            "model_args": model_args,
            "pretrained_cfg": {"input_size": [channels, cfg.img_size, cfg.img_size], "num_classes": 0,
                               "fixed_input_size": True, "crop_pct": 1.0, "interpolation": "bilinear"},
            "ofa": {"sensor": sensor, "embedding": cfg.embedding, "input": facts,
                    "exported_by": f"ofa {_ofa_version()}"}}


def _export_one(mae: MaskedAutoencoder, info: dict[str, Any], sensor: str, out: str,
                storage_options: dict[str, Any] | None) -> dict[str, str]:
    facts = (info.get("sensors") or {}).get(sensor)
    wavelengths = None
    if mae.config.embedding == "wavelength" and facts and all(w is not None for w in facts.get("wavelengths", [None])):
        wavelengths = facts["wavelengths"]
    tensors = export_timm_state_dict(mae, modality=sensor, wavelengths=wavelengths)
    tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
    data = st_save(tensors, metadata={"format": "pt"})
    config = timm_config(mae, sensor, facts)
    weights = _write(out, WEIGHTS_NAME, data, None)
    config_path = _write(out, CONFIG_NAME, json.dumps(config, indent=2).encode(), None)
    assets = {"model": weights_asset(f"./{WEIGHTS_NAME}", data, "timm.create_model",
                                     f"{config['architecture']} weights for timm: "
                                     f"timm.create_model('local-dir:DIR', pretrained=True)"),
              "config": {"href": f"./{CONFIG_NAME}", "type": "application/json", "roles": ["metadata"],
                         "title": "timm hub config (architecture, model_args, pretrained_cfg)"}}
    name = f"ofa-{mae.config.size}-{mae.config.embedding}-{sensor}"
    item = mlm_item(info, name, [sensor], assets, sum(t.numel() for t in tensors.values()), storage_options, name)
    item_path = _write(out, ITEM_NAME, json.dumps(item, indent=2).encode(), None)
    return {"weights": weights, "config": config_path, "mlm_item": item_path}


def export_timm(url: str, out: str, sensor: str | None = None,
                storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Write the backbone of the checkpoint at ``url`` as timm weights + config + MLM item: for ``sensor`` into
    ``out``, or without one, for every sensor into ``out/{sensor}``."""
    mae = from_pretrained(url, storage_options)
    info = read_info(url, storage_options)
    sensors = export_sensors(mae, info, sensor)
    if sensor is not None:
        return _export_one(mae, info, sensor, out, storage_options)
    written = {}
    for name in sensors:
        for kind, path in _export_one(mae, info, name, f"{out.rstrip('/')}/{name}", storage_options).items():
            written[f"{name} {kind}"] = path
    return written


def export_hf(url: str, out: str, geobench_markdown: str | None = None, license: str = "apache-2.0",
              storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Write the checkpoint at ``url`` with a model card (``README.md``) to ``out``, ready for a Hub upload."""
    info = read_info(url, storage_options)
    mae = from_pretrained(url, storage_options)  # the weights load: never publish a broken checkpoint
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    data = fs.cat_file(f"{root.rstrip('/')}/{WEIGHTS_NAME}")
    weights = _write(out, WEIGHTS_NAME, data, None)
    config = _write(out, CONFIG_NAME, json.dumps(info, indent=2, sort_keys=True).encode(), None)
    card = _write(out, "README.md", model_card(info, geobench_markdown, license, _ofa_version()).encode(), None)
    assets = {"model": weights_asset(f"./{WEIGHTS_NAME}", data, "ofa.model.from_pretrained",
                                     "OFA-Net MAE (encoder, embeddings, decoder): ofa.model.from_pretrained(DIR)"),
              "config": {"href": f"./{CONFIG_NAME}", "type": "application/json", "roles": ["metadata"],
                         "title": "ofa model config: architecture, sensors, normalisation, training data"},
              "card": {"href": "./README.md", "type": "text/markdown", "roles": ["metadata"], "title": "model card"}}
    name = f"ofa-{mae.config.size}-{mae.config.embedding}"
    item = mlm_item(info, name, export_sensors(mae, info, None), assets, mae.parameter_counts()["total"],
                    storage_options, name)
    item_path = _write(out, ITEM_NAME, json.dumps(item, indent=2).encode(), None)
    return {"weights": weights, "config": config, "card": card, "mlm_item": item_path}
