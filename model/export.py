"""Exports of a saved model: the backbone for timm, and a Hugging Face Hub folder with a model card.

- ``export_timm``: ``model.safetensors`` under timm's VisionTransformer names plus a ``config.json``
  in timm's hub layout (``architecture``, ``model_args``, ``pretrained_cfg``), so both
  ``timm.create_model("local-dir:DIR", pretrained=True)`` and
  ``timm.create_model(arch, **model_args).load_state_dict(weights, strict=True)`` work. The
  backbone has no class token; the export keeps it that way (``class_token=False``,
  ``global_pool="avg"``, ``fc_norm=False``) so timm's pooled features equal ``mae.encode``'s: a
  class token would take part in every block's attention and change every patch token.
- ``export_hf``: the checkpoint as is (``model.safetensors`` + ``config.json``, loadable with
  ``from_pretrained``) and a ``README.md`` model card whose YAML front matter names the licence,
  tags, sensors and bands and the training data's manifest hashes, with a GEO-Bench table when given.
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


def pick_sensor(mae: MaskedAutoencoder, sensor: str | None) -> str:
    """The modality to export: ``sensor``, or the only one the model has."""
    names = sorted(mae.config.modalities)
    if sensor is None:
        if len(names) != 1:
            raise ValueError(f"--sensor is needed: the checkpoint has several sensors ({', '.join(names)})")
        return names[0]
    if sensor not in mae.config.modalities:
        raise ValueError(f"--sensor {sensor!r}: the checkpoint has {', '.join(names)}")
    return sensor


def timm_config(mae: MaskedAutoencoder, sensor: str, facts: dict[str, Any] | None) -> dict[str, Any]:
    """timm's hub ``config.json`` for the exported backbone (plus an ``ofa`` section: sensor, bands, normalisation)."""
    cfg = mae.config
    channels = cfg.modalities[sensor]
    arch = f"{TIMM_ARCH[cfg.size]}_patch{cfg.patch_size}_224"
    model_args = {"img_size": cfg.img_size, "in_chans": channels, "num_classes": 0, "class_token": False,
                  "global_pool": "avg", "fc_norm": False}
    return {"architecture": arch, "num_classes": 0, "num_features": cfg.embed_dim, "global_pool": "avg",
            "model_args": model_args,
            "pretrained_cfg": {"input_size": [channels, cfg.img_size, cfg.img_size], "num_classes": 0,
                               "fixed_input_size": True, "crop_pct": 1.0, "interpolation": "bicubic"},
            "ofa": {"sensor": sensor, "embedding": cfg.embedding, "input": facts,
                    "exported_by": f"ofa {_ofa_version()}"}}


def export_timm(url: str, out: str, sensor: str | None = None,
                storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Write the backbone of the checkpoint at ``url`` for one sensor as timm weights + config to ``out``."""
    mae = from_pretrained(url, storage_options)
    info = read_info(url, storage_options)
    sensor = pick_sensor(mae, sensor)
    facts = (info.get("sensors") or {}).get(sensor)
    wavelengths = None
    if mae.config.embedding == "wavelength" and facts and all(w is not None for w in facts.get("wavelengths", [None])):
        wavelengths = facts["wavelengths"]
    tensors = export_timm_state_dict(mae, modality=sensor, wavelengths=wavelengths)
    tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
    weights = _write(out, WEIGHTS_NAME, st_save(tensors, metadata={"format": "pt"}), None)
    config = _write(out, CONFIG_NAME, json.dumps(timm_config(mae, sensor, facts), indent=2).encode(), None)
    return {"weights": weights, "config": config}


def export_hf(url: str, out: str, geobench_markdown: str | None = None, license: str = "apache-2.0",
              storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Write the checkpoint at ``url`` with a model card (``README.md``) to ``out``, ready for a Hub upload."""
    info = read_info(url, storage_options)
    from_pretrained(url, storage_options)  # the weights load: never publish a broken checkpoint
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    weights = _write(out, WEIGHTS_NAME, fs.cat_file(f"{root.rstrip('/')}/{WEIGHTS_NAME}"), None)
    config = _write(out, CONFIG_NAME, json.dumps(info, indent=2, sort_keys=True).encode(), None)
    card = _write(out, "README.md", model_card(info, geobench_markdown, license, _ofa_version()).encode(), None)
    return {"weights": weights, "config": config, "card": card}
