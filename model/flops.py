"""Model FLOPs of one MAE training image (for MFU logging)."""
from __future__ import annotations

from .config import ModelConfig


def _transformer_flops(tokens: int, dim: int, depth: int, mlp_ratio: float) -> float:
    """Forward FLOPs (2 per multiply-add) of ``depth`` pre-norm blocks on ``tokens`` tokens."""
    linear = 2 * tokens * dim * (3 * dim + dim + 2 * int(dim * mlp_ratio))  # qkv, proj, fc1, fc2
    attention = 2 * 2 * tokens * tokens * dim  # q @ k^T and attn @ v
    return float(depth * (linear + attention))


def flops_per_image(
    cfg: ModelConfig, mask_ratio: float | None = None, channels: int | None = None, img_size: int | None = None
) -> float:
    """Training FLOPs (forward + backward ~ 3x forward) of one MAE image.

    ``channels`` defaults to the first configured modality's; ``img_size`` to ``cfg.img_size``.
    Counts matmuls only (patch embedding, encoder on visible tokens, decoder on all tokens, head).
    """
    p = cfg.patch_size
    size = cfg.img_size if img_size is None else img_size
    c = next(iter(cfg.modalities.values())) if channels is None else channels
    tokens = (size // p) ** 2
    visible = cfg.num_visible(tokens, mask_ratio)
    d, dd = cfg.embed_dim, int(cfg.decoder_dim)
    fwd = 2.0 * tokens * c * p * p * d  # patch embedding (all patches, before masking)
    fwd += _transformer_flops(visible, d, cfg.depth, cfg.mlp_ratio)
    fwd += 2.0 * visible * d * dd  # decoder_embed
    fwd += _transformer_flops(tokens, dd, int(cfg.decoder_depth), cfg.mlp_ratio)
    fwd += 2.0 * tokens * dd * p * p * c  # reconstruction head
    return 3.0 * fwd
