"""Model configuration: backbone sizes, modalities and their band wavelengths."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

#: modality name -> channel count (the sensor ids of the data contract, plus model-only ones)
DEFAULT_MODALITIES: dict[str, int] = {
    "sentinel-1": 2,
    "sentinel-2": 12,
    "sentinel-2-l1c": 13,
    "landsat": 7,
    "naip": 4,
    "gaofen-2": 4,
    "enmap": 202,
}


def _enmap_wavelengths(n: int = 202) -> list[float]:
    """Approximate EnMAP band centres: evenly spaced over the 0.42-2.45 um range."""
    lo, hi = 0.42, 2.45
    return [round(lo + (hi - lo) * i / (n - 1), 4) for i in range(n)]


#: centre wavelength per band in micrometres, in channel order (SAR: DOFA convention 5.405)
DEFAULT_WAVELENGTHS: dict[str, list[float]] = {
    "sentinel-1": [5.405, 5.405],  # VV, VH
    # B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12
    "sentinel-2": [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19],
    # the same bands at the top of the atmosphere, with B10 (cirrus) between B09 and B11
    "sentinel-2-l1c": [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.375, 1.61, 2.19],
    # SR_B1 .. SR_B7 (Landsat 8/9 OLI)
    "landsat": [0.443, 0.482, 0.562, 0.655, 0.865, 1.609, 2.201],
    "naip": [0.635, 0.555, 0.465, 0.845],  # R G B NIR
    "gaofen-2": [0.514, 0.546, 0.656, 0.822],  # B G R NIR
    "enmap": _enmap_wavelengths(),
}

#: size -> (depth, width, heads); decoder default (depth, width)
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (12, 192, 3),
    "small": (12, 384, 6),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}
DECODER_DEFAULTS: dict[str, tuple[int, int]] = {
    "tiny": (2, 128),
    "small": (4, 256),
    "base": (4, 512),
    "large": (8, 512),
}
EMBEDDINGS = ("ofa", "wavelength")


@dataclass
class ModelConfig:
    """Everything needed to rebuild an OFA-Net MAE; JSON-safe through ``to_dict``/``from_dict``.

    ``decoder_depth``/``decoder_dim`` default (``None``) to a light decoder per size.
    ``wavelengths`` maps modality -> band centres (um); defaults to ``DEFAULT_WAVELENGTHS`` for
    modalities whose channel count matches. ``gsd_pos_embed`` scales position embeddings by
    ground sampling distance relative to ``reference_gsd`` metres.
    """

    size: str = "base"
    embedding: str = "ofa"
    img_size: int = 224
    patch_size: int = 16
    modalities: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MODALITIES))
    mask_ratio: float = 0.75
    decoder_depth: int | None = None
    decoder_dim: int | None = None
    norm_pix_loss: bool = True
    gsd_pos_embed: bool = False
    reference_gsd: float = 10.0
    mlp_ratio: float = 4.0
    wavelength_dim: int = 128
    wavelengths: dict[str, list[float]] | None = None

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"ModelConfig.size={self.size!r}: expected one of {sorted(SIZES)}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"ModelConfig.embedding={self.embedding!r}: expected one of {list(EMBEDDINGS)}")
        if self.patch_size <= 0 or self.img_size % self.patch_size:
            raise ValueError(
                f"ModelConfig: img_size={self.img_size} must be a positive multiple of patch_size={self.patch_size}"
            )
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"ModelConfig.mask_ratio={self.mask_ratio}: must be in [0, 1)")
        self.modalities = {str(k): int(v) for k, v in self.modalities.items()}
        for name, channels in self.modalities.items():
            if channels <= 0 or not name or "." in name:
                raise ValueError(f"ModelConfig.modalities: bad entry {name!r}: {channels}")
        dd, dw = DECODER_DEFAULTS[self.size]
        self.decoder_depth = dd if self.decoder_depth is None else int(self.decoder_depth)
        self.decoder_dim = dw if self.decoder_dim is None else int(self.decoder_dim)
        if self.wavelengths is None:
            self.wavelengths = {
                m: list(DEFAULT_WAVELENGTHS[m])
                for m, c in self.modalities.items()
                if m in DEFAULT_WAVELENGTHS and len(DEFAULT_WAVELENGTHS[m]) == c
            }
        else:
            self.wavelengths = {str(k): [float(w) for w in v] for k, v in self.wavelengths.items()}
        for name, wl in self.wavelengths.items():
            if name in self.modalities and len(wl) != self.modalities[name]:
                raise ValueError(
                    f"ModelConfig.wavelengths[{name!r}] has {len(wl)} values but the modality has "
                    f"{self.modalities[name]} channels"
                )

    @property
    def depth(self) -> int:
        return SIZES[self.size][0]

    @property
    def embed_dim(self) -> int:
        return SIZES[self.size][1]

    @property
    def num_heads(self) -> int:
        return SIZES[self.size][2]

    @property
    def decoder_heads(self) -> int:
        return max(1, int(self.decoder_dim) // 64)

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def num_visible(self, num_patches: int, mask_ratio: float | None = None) -> int:
        """Tokens kept by masking ``num_patches`` patches at ``mask_ratio`` (config default)."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        return max(1, int(math.floor(num_patches * (1.0 - ratio) + 1e-9)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ModelConfig.from_dict: unknown keys {unknown}")
        return cls(**data)
