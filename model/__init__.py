"""OFA-Net: one shared ViT backbone, per-sensor (or wavelength-conditioned) patch embeddings, MAE.

Free of I/O beyond checkpoints; imports nothing from ``ingest`` or ``pipeline``.

Public API (the contract other packages code against)::

    from model import ModelConfig, MaskedAutoencoder, save_pretrained, from_pretrained

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
    flops_per_image(cfg)                        # training FLOPs of one image (MFU)
"""
from .config import DEFAULT_MODALITIES, DEFAULT_WAVELENGTHS, SIZES, ModelConfig
from .flops import flops_per_image
from .io import CheckpointError, from_pretrained, load_config, model_url, normalise, read_info, save_pretrained
from .mae import MAEOutput, MaskedAutoencoder
from .timm_export import export_timm_state_dict

__all__ = [
    "DEFAULT_MODALITIES",
    "DEFAULT_WAVELENGTHS",
    "SIZES",
    "ModelConfig",
    "MaskedAutoencoder",
    "MAEOutput",
    "save_pretrained",
    "from_pretrained",
    "load_config",
    "read_info",
    "model_url",
    "normalise",
    "CheckpointError",
    "flops_per_image",
    "export_timm_state_dict",
]
