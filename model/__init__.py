"""OFA-Net: one shared ViT backbone, per-sensor (or wavelength-conditioned) patch embeddings, MAE.

Free of I/O beyond checkpoints; imports nothing from ``ingest`` or ``pipeline``.

Public API (the contract other packages code against)::

    from ofa.model import ModelConfig, MaskedAutoencoder, save_pretrained, from_pretrained

    cfg = ModelConfig(size="tiny", embedding="ofa", img_size=224, patch_size=16,
                      modalities={"sentinel-2": 12, "sentinel-1": 2, "naip": 4, "landsat": 7})
    mae = MaskedAutoencoder(cfg)
    out = mae(x, modality="sentinel-2")                  # x: [N, C, H, W] float, normalised
    out = mae(x, modality="x", wavelengths=[0.49, ...])  # wavelength embedding: any band set
    out.loss, out.pred, out.mask                         # scalar, [N, L, p*p*C], [N, L] (1 = masked)
    tokens, pooled = mae.encode(x, modality="sentinel-2")        # [N, L, D], [N, D]; no masking
    feats = mae.encode_features(x, modality="sentinel-2")        # list of [N, D, H/p, W/p]
    save_pretrained(mae, "s3://bucket/ckpt", storage_options=...) # safetensors + config.json
    mae = from_pretrained("s3://bucket/ckpt")                     # never unpickles
    facts = read_info("s3://bucket/ckpt")["sensors"]["sentinel-2"] # bands, wavelengths, GSD, scale/offset, mean/std
    x = normalise(raw_pixels, facts)                              # native dtype -> model input
    sd = export_timm_state_dict(mae)            # backbone under timm ViT key names
    resolve_checkpoint("runs/tiny")             # a run/step/model folder -> the save_pretrained folder
    mlm_item(read_info(url), "id", ["naip"], assets, n_params)  # the model as a STAC MLM Item
    flops_per_image(cfg)                        # training FLOPs of one image (MFU)
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule defining it; loaded on first use, so ``import model.cli`` (the ``ofa`` command's
#: start-up) does not import torch
_EXPORTS = {
    "DEFAULT_MODALITIES": "config", "DEFAULT_WAVELENGTHS": "config", "SIZES": "config", "ModelConfig": "config",
    "flops_per_image": "flops",
    "CheckpointError": "io", "from_pretrained": "io", "load_config": "io", "save_pretrained": "io",
    "read_info": "io", "model_url": "io", "normalise": "io",
    "MAEOutput": "mae", "MaskedAutoencoder": "mae",
    "export_timm_state_dict": "timm_export",
    "resolve_checkpoint": "checkpoints", "mlm_item": "mlm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
