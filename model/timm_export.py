"""Export the backbone under timm's VisionTransformer key names.

Load it with ``timm.create_model("vit_base_patch16_224", class_token=False, global_pool="avg",
fc_norm=False, num_classes=0, in_chans=C)`` and ``load_state_dict(sd, strict=False)`` (strict=True
when a modality is given so patch and position embeddings are included).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .embed import OFAPatchEmbed
from .mae import MaskedAutoencoder
from .pos_embed import sincos_2d


@torch.no_grad()
def export_timm_state_dict(
    mae: MaskedAutoencoder,
    modality: str | None = None,
    wavelengths: Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """Backbone weights as ``blocks.{i}.attn.qkv.weight``, ..., ``norm.weight``.

    With ``modality`` (OFA) or ``wavelengths``/a modality with known wavelengths (wavelength
    embedding), also ``patch_embed.proj.weight``/``bias`` and the fixed ``pos_embed`` [1, L, D] at
    ``config.img_size`` (no class token).
    """
    out = {k: v.detach().clone() for k, v in mae.backbone.state_dict().items()}
    if modality is None and wavelengths is None:
        return out
    cfg = mae.config
    if isinstance(mae.patch_embed, OFAPatchEmbed):
        if modality not in cfg.modalities:
            raise KeyError(f"unknown modality {modality!r}; this model has {sorted(cfg.modalities)}")
        conv = mae.patch_embed.proj[modality]
        weight, bias = conv.weight.detach().clone(), conv.bias.detach().clone()
    else:
        if wavelengths is None:
            if modality not in (cfg.wavelengths or {}):
                raise KeyError(f"no wavelengths known for modality {modality!r}; pass wavelengths=")
            wavelengths = cfg.wavelengths[modality]
        pe = mae.patch_embed
        wl = torch.as_tensor(wavelengths, dtype=torch.float32, device=pe.weight_gen.weight.device)
        c, p = wl.numel(), cfg.patch_size
        feats = pe.encoder(wl)
        weight = pe.weight_gen(feats).view(c, pe.dim, p, p).transpose(0, 1).contiguous() / c**0.5
        bias = pe.bias_gen(feats.mean(0))
    out["patch_embed.proj.weight"] = weight
    out["patch_embed.proj.bias"] = bias
    out["pos_embed"] = sincos_2d(cfg.embed_dim, cfg.grid_size, cfg.grid_size, device=weight.device)
    return out
