"""Patch embeddings and reconstruction heads: per modality (OFA) or wavelength-conditioned (DOFA-style)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .pos_embed import sincos_1d
from .vit import Block


class OFAPatchEmbed(nn.Module):
    """One conv (kernel = stride = patch) per modality: [N, C_m, H, W] -> [N, L, D]."""

    def __init__(self, modalities: dict[str, int], patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.ModuleDict(
            {name: nn.Conv2d(c, dim, patch_size, stride=patch_size) for name, c in modalities.items()}
        )

    def init_weights(self) -> None:
        for conv in self.proj.values():
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        conv = self.proj[modality]
        return conv(x).flatten(2).transpose(1, 2)


class OFAHeads(nn.Module):
    """One linear reconstruction head per modality: [N, L, D_dec] -> [N, L, p*p*C_m]."""

    def __init__(self, modalities: dict[str, int], patch_size: int, dim: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(
            {name: nn.Linear(dim, patch_size * patch_size * c) for name, c in modalities.items()}
        )

    def init_weights(self) -> None:
        """Nothing beyond the default linear init."""

    def forward(self, y: torch.Tensor, modality: str) -> torch.Tensor:
        return self.heads[modality](y)


class WavelengthEncoder(nn.Module):
    """Band centre wavelengths [C] (um) -> band features [C, W]: sin-cos code, MLP, one attention block
    across the band set (so each band's features know its neighbours), LayerNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.mix = Block(dim, max(1, dim // 32))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, wavelengths: torch.Tensor) -> torch.Tensor:
        code = sincos_1d(self.dim, wavelengths * 1000.0).to(self.fc1.weight.dtype)  # nanometres
        feats = self.fc2(F.gelu(self.fc1(code)))  # [C, W]
        return self.norm(self.mix(feats.unsqueeze(0)).squeeze(0))


class WavelengthPatchEmbed(nn.Module):
    """A hypernetwork writes each band's slice of the patch-embedding conv from its wavelength,
    so one layer embeds any band set: [N, C, H, W] + wavelengths [C] -> [N, L, D]."""

    def __init__(self, patch_size: int, dim: int, wavelength_dim: int = 128) -> None:
        super().__init__()
        self.patch_size, self.dim = patch_size, dim
        self.encoder = WavelengthEncoder(wavelength_dim)
        self.weight_gen = nn.Linear(wavelength_dim, dim * patch_size * patch_size)
        self.bias_gen = nn.Linear(wavelength_dim, dim)

    def init_weights(self) -> None:
        # generated per-band weights ~ std 1/p; scaled by 1/sqrt(C) at run time (fan-in C*p*p)
        std = 1.0 / (math.sqrt(self.weight_gen.in_features) * self.patch_size)
        nn.init.normal_(self.weight_gen.weight, std=std)
        nn.init.zeros_(self.weight_gen.bias)
        nn.init.normal_(self.bias_gen.weight, std=0.02)
        nn.init.zeros_(self.bias_gen.bias)

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        c, p = wavelengths.shape[0], self.patch_size
        feats = self.encoder(wavelengths)  # [C, W]
        weight = self.weight_gen(feats).view(c, self.dim, p, p).transpose(0, 1)  # [D, C, p, p]
        weight = weight * (1.0 / math.sqrt(c))
        bias = self.bias_gen(feats.mean(0))  # [D]
        out = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), stride=p)
        return out.flatten(2).transpose(1, 2)


class WavelengthHead(nn.Module):
    """Reconstruction head written per band from its wavelength: [N, L, D_dec] -> [N, L, p*p*C]
    (channel fastest, matching ``patchify``)."""

    def __init__(self, patch_size: int, dim: int, wavelength_dim: int = 128) -> None:
        super().__init__()
        self.patch_size, self.dim = patch_size, dim
        self.encoder = WavelengthEncoder(wavelength_dim)
        self.weight_gen = nn.Linear(wavelength_dim, patch_size * patch_size * dim)
        self.bias_gen = nn.Linear(wavelength_dim, patch_size * patch_size)

    def init_weights(self) -> None:
        std = 1.0 / math.sqrt(self.weight_gen.in_features * self.dim)
        nn.init.normal_(self.weight_gen.weight, std=std)
        nn.init.zeros_(self.weight_gen.bias)
        nn.init.normal_(self.bias_gen.weight, std=0.02)
        nn.init.zeros_(self.bias_gen.bias)

    def forward(self, y: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        c, pp = wavelengths.shape[0], self.patch_size**2
        feats = self.encoder(wavelengths)  # [C, W]
        weight = self.weight_gen(feats).view(c * pp, self.dim).to(y.dtype)  # rows: (band, pixel)
        bias = self.bias_gen(feats).reshape(c * pp).to(y.dtype)
        out = F.linear(y, weight, bias)  # [N, L, C*pp], band-major
        n, l, _ = out.shape
        return out.view(n, l, c, pp).transpose(2, 3).reshape(n, l, pp * c)
