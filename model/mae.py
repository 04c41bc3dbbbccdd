"""OFA-Net masked autoencoder: per-sensor (or wavelength) patch embedding, shared ViT, light decoder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import nn

from .config import ModelConfig
from .embed import OFAHeads, OFAPatchEmbed, WavelengthHead, WavelengthPatchEmbed
from .pos_embed import sincos_2d
from .vit import Transformer, init_weights

Bands = Union[str, torch.Tensor]  # a modality name (OFA) or band wavelengths [C] (wavelength)
GSD = Union[float, Sequence[float], torch.Tensor, None]


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device argument
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


@dataclass
class MAEOutput:
    """What one MAE forward returns."""

    loss: torch.Tensor  # scalar: (normalised-)pixel MSE on masked patches
    pred: torch.Tensor  # [N, L, p*p*C], channel fastest
    mask: torch.Tensor  # [N, L], 1 = masked (reconstructed), 0 = visible


class MaskedAutoencoder(nn.Module):
    """MAE with one shared ViT backbone; ``config.embedding`` picks OFA or wavelength embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        p, d, dd = config.patch_size, config.embed_dim, int(config.decoder_dim)
        if config.embedding == "ofa":
            self.patch_embed: nn.Module = OFAPatchEmbed(config.modalities, p, d)
            self.head: nn.Module = OFAHeads(config.modalities, p, dd)
        else:
            self.patch_embed = WavelengthPatchEmbed(p, d, config.wavelength_dim)
            self.head = WavelengthHead(p, dd, config.wavelength_dim)
        self.backbone = Transformer(d, config.depth, config.num_heads, config.mlp_ratio)
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder = Transformer(dd, int(config.decoder_depth), config.decoder_heads, config.mlp_ratio)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self.apply(init_weights)
        self.patch_embed.init_weights()
        self.head.init_weights()
        nn.init.normal_(self.mask_token, std=0.02)

    # ----------------------------------------------------------------- inputs
    def _resolve(self, x: torch.Tensor, modality: str | None, wavelengths: Sequence[float] | torch.Tensor | None) -> Bands:
        """Check ``x`` and turn (modality, wavelengths) into what the embedding needs."""
        cfg = self.config
        if x.ndim != 4:
            raise ValueError(f"expected x of shape [N, C, H, W], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of patch_size={cfg.patch_size}")
        channels = x.shape[1]
        if cfg.embedding == "ofa":
            if modality is None:
                raise ValueError(f"the OFA embedding needs modality=, one of {sorted(cfg.modalities)}")
            if modality not in cfg.modalities:
                raise KeyError(f"unknown modality {modality!r}; this model has {sorted(cfg.modalities)}")
            if channels != cfg.modalities[modality]:
                raise ValueError(
                    f"modality {modality!r} expects {cfg.modalities[modality]} channels, x has {channels}"
                )
            return modality
        if wavelengths is None:
            if modality is None:
                raise ValueError("the wavelength embedding needs wavelengths= (or a modality with known wavelengths)")
            if modality not in (cfg.wavelengths or {}):
                raise KeyError(
                    f"no wavelengths known for modality {modality!r} (known: {sorted(cfg.wavelengths or {})}); "
                    "pass wavelengths="
                )
            wavelengths = cfg.wavelengths[modality]
        wl = torch.as_tensor(wavelengths, dtype=torch.float32, device=x.device).flatten()
        if wl.numel() != channels:
            raise ValueError(f"got {wl.numel()} wavelengths for {channels} channels")
        return wl

    def _pos(self, dim: int, gh: int, gw: int, n: int, gsd: GSD, like: torch.Tensor) -> torch.Tensor:
        """Sin-cos position embedding [1|N, gh*gw, dim], GSD-scaled when configured and given."""
        if self.config.gsd_pos_embed and gsd is not None:
            scale = torch.as_tensor(gsd, dtype=torch.float64, device=like.device).flatten()
            if scale.numel() not in (1, n):
                raise ValueError(f"gsd must be a number or one per sample ({n}), got {scale.numel()} values")
            scale = scale.expand(n) / self.config.reference_gsd
            return sincos_2d(dim, gh, gw, scale=scale, device=like.device, dtype=like.dtype)
        key = (dim, gh, gw, like.device, like.dtype)
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_2d(dim, gh, gw, device=like.device, dtype=like.dtype)
        return self._pos_cache[key]

    def embed(self, x: torch.Tensor, bands: Bands, gsd: GSD = None) -> torch.Tensor:
        """Patch tokens plus position embedding: [N, C, H, W] -> [N, L, D]."""
        p = self.config.patch_size
        ref = self.backbone.norm.weight
        if not _autocast_on(x.device.type):
            x = x.to(ref.dtype)  # e.g. bf16 input into a float32 model
        tokens = self.patch_embed(x, bands)
        pos = self._pos(tokens.shape[-1], x.shape[-2] // p, x.shape[-1] // p, x.shape[0], gsd, tokens)
        return tokens + pos

    # ------------------------------------------------------------- MAE steps
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, L, p*p*C] (rows of patches, channel fastest)."""
        p = self.config.patch_size
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, pred: torch.Tensor, channels: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """[N, L, p*p*C] -> [N, C, H, W]; ``grid`` = (rows, cols) of patches, square if omitted."""
        p = self.config.patch_size
        n, l, _ = pred.shape
        if grid is None:
            side = int(round(l**0.5))
            if side * side != l:
                raise ValueError(f"{l} patches are not a square grid; pass grid=(rows, cols)")
            grid = (side, side)
        gh, gw = grid
        x = pred.reshape(n, gh, gw, p, p, channels)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, channels, gh * p, gw * p)

    @staticmethod
    def random_masking(tokens: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep ``keep`` random tokens per sample (argsort of noise, no loop over the batch).

        Returns kept tokens [N, keep, D], mask [N, L] (1 = masked), ids_restore [N, L].
        """
        n, l, d = tokens.shape
        noise = torch.rand(n, l, device=tokens.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(n, l, device=tokens.device)
        mask[:, :keep] = 0
        return kept, torch.gather(mask, 1, ids_restore), ids_restore

    def forward_encoder(
        self, x: torch.Tensor, bands: Bands, mask_ratio: float, gsd: GSD = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed, mask, run the backbone on visible tokens: latent [N, keep, D], mask, ids_restore."""
        tokens = self.embed(x, bands, gsd)  # [N, L, D]
        keep = self.config.num_visible(tokens.shape[1], mask_ratio)
        kept, mask, ids_restore = self.random_masking(tokens, keep)
        return self.backbone(kept), mask, ids_restore

    def forward_decoder(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, bands: Bands, grid: tuple[int, int], gsd: GSD = None
    ) -> torch.Tensor:
        """Fill masked slots with the mask token, decode all tokens, predict pixels [N, L, p*p*C]."""
        y = self.decoder_embed(latent)  # [N, keep, Dd]
        n, keep, dd = y.shape
        l = ids_restore.shape[1]
        fill = self.mask_token.to(y.dtype).expand(n, l - keep, dd)
        y = torch.cat([y, fill], dim=1)
        y = torch.gather(y, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dd))
        y = y + self._pos(dd, grid[0], grid[1], n, gsd, y)
        return self.head(self.decoder(y), bands)

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                     band_valid: torch.Tensor | None = None) -> torch.Tensor:
        """MSE per patch (on per-patch normalised pixels if ``norm_pix_loss``), mean over masked patches.

        ``band_valid`` [N, C] (bool): channels a sample does not have (zero-filled) are left out of the
        patch statistics and the error."""
        target = self.patchify(x.float())  # [N, L, p*p*C], channel fastest
        if band_valid is None:
            if self.config.norm_pix_loss:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1e-6) ** 0.5
            per_patch = ((pred.float() - target) ** 2).mean(dim=-1)  # [N, L]
        else:
            per_patch = self._valid_patch_error(pred.float(), target, band_valid)
        masked = mask.sum()
        # mask_ratio 0 (nothing masked): plain autoencoding over all patches; no host sync either way
        return torch.where(masked > 0, (per_patch * mask).sum() / masked.clamp_min(1.0), per_patch.mean())

    def _valid_patch_error(self, pred: torch.Tensor, target: torch.Tensor, band_valid: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch [N, L] over the values of valid channels only."""
        n, _, d = target.shape
        w = band_valid.to(device=target.device, dtype=target.dtype)  # [N, C]
        w = w[:, None, None, :].expand(n, 1, d // w.shape[1], w.shape[1]).reshape(n, 1, d)  # [N, 1, p*p*C]
        count = w.sum(dim=-1, keepdim=True).clamp_min(1.0)
        if self.config.norm_pix_loss:
            mean = (target * w).sum(dim=-1, keepdim=True) / count
            var = (((target - mean) * w) ** 2).sum(dim=-1, keepdim=True) / (count - 1.0).clamp_min(1.0)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return (((pred - target) ** 2) * w).sum(dim=-1) / count[..., 0]

    def forward(
        self,
        x: torch.Tensor,
        modality: str | None = None,
        wavelengths: Sequence[float] | torch.Tensor | None = None,
        mask_ratio: float | None = None,
        gsd: GSD = None,
        band_valid: torch.Tensor | None = None,
    ) -> MAEOutput:
        """One MAE step on a single-modality batch [N, C, H, W]; ``band_valid`` [N, C] marks the channels each
        sample has (None: all), the others are zero-filled inputs and not reconstructed."""
        bands = self._resolve(x, modality, wavelengths)
        ratio = self.config.mask_ratio if mask_ratio is None else float(mask_ratio)
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask_ratio={ratio}: must be in [0, 1)")
        p = self.config.patch_size
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        latent, mask, ids_restore = self.forward_encoder(x, bands, ratio, gsd)
        pred = self.forward_decoder(latent, ids_restore, bands, grid, gsd)
        return MAEOutput(loss=self.forward_loss(x, pred, mask, band_valid), pred=pred, mask=mask)

    # -------------------------------------------------------------- encoders
    def encode(
        self,
        x: torch.Tensor,
        modality: str | None = None,
        wavelengths: Sequence[float] | torch.Tensor | None = None,
        gsd: GSD = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All patch tokens through the backbone (no masking): tokens [N, L, D], pooled mean [N, D]."""
        tokens = self.backbone(self.embed(x, self._resolve(x, modality, wavelengths), gsd))
        return tokens, tokens.mean(dim=1)

    def feature_layers(self) -> list[int]:
        """Default block indices for ``encode_features``: four, evenly spaced, ending at the last."""
        depth = len(self.backbone.blocks)
        return [(i + 1) * depth // 4 - 1 for i in range(4)]

    def encode_features(
        self,
        x: torch.Tensor,
        modality: str | None = None,
        wavelengths: Sequence[float] | torch.Tensor | None = None,
        layers: Sequence[int] | None = None,
        gsd: GSD = None,
    ) -> list[torch.Tensor]:
        """Block outputs at ``layers`` (default: 4 evenly spaced) as maps [N, D, H/p, W/p]."""
        depth = len(self.backbone.blocks)
        wanted = list(self.feature_layers() if layers is None else layers)
        bad = [i for i in wanted if not -depth <= i < depth]
        if bad:
            raise ValueError(f"layers {bad} out of range for a backbone of depth {depth}")
        wanted = [i % depth for i in wanted]
        p = self.config.patch_size
        gh, gw = x.shape[-2] // p, x.shape[-1] // p
        t = self.embed(x, self._resolve(x, modality, wavelengths), gsd)
        found: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.backbone.blocks):
            t = block(t)
            if i in wanted:
                found[i] = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], gh, gw)
            if len(found) == len(set(wanted)):
                break
        return [found[i] for i in wanted]

    # ------------------------------------------------------------ inspection
    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts: backbone (blocks + final norm), embeddings, decoder (with heads), total."""

        def count(*modules: nn.Module) -> int:
            return sum(p.numel() for m in modules for p in m.parameters())

        counts = {
            "backbone": count(self.backbone),
            "embeddings": count(self.patch_embed),
            "decoder": count(self.decoder_embed, self.decoder, self.head) + self.mask_token.numel(),
        }
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts
