"""Per-sample augmentation on whole batches: scale/offset, nodata, normalise, random resized crop, flips.

The random parameters are drawn where the sample is read (``crop_params``, in the loader worker),
so the data stream stays deterministic; the pixel work (``prepare``) is plain torch on whatever
device the raw batch sits on. With ``device_augment`` the workers only decode ``pixels.npy``
and ship native-dtype (e.g. uint16) batches; scale/offset, nodata, normalisation, crop, resize
and flips then run on the GPU in one ``grid_sample`` per batch.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F


def crop_params(
    rng: random.Random,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flips: bool = True,
) -> list[float]:
    """Random-resized-crop box and flips for one sample: ``[top, left, h, w, hflip, vflip]`` in pixels.

    Area share uniform in ``scale``, aspect ratio log-uniform in ``ratio`` (ten tries, then the
    whole chip), the same draws as ``pipeline.data.random_resized_crop``.
    """
    for _ in range(10):
        area = height * width * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            break
    else:
        h, w = height, width
    top, left = rng.randint(0, height - h), rng.randint(0, width - w)
    hflip = float(rng.random() < 0.5) if flips else 0.0
    vflip = float(rng.random() < 0.5) if flips else 0.0
    return [float(top), float(left), float(h), float(w), hflip, vflip]


def normalise(
    raw: torch.Tensor,
    scale: torch.Tensor,
    offset: torch.Tensor,
    nodata: torch.Tensor,
    has_nodata: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """[N, C, H, W] raw (any dtype) -> float32 normalised; nodata pixels become 0 (the band mean).

    ``scale``, ``offset``, ``nodata``, ``has_nodata`` are per sample and band [N, C]; ``mean`` and
    ``std`` per band [C] or per sample and band [N, C] (statistics of the scaled values, from the
    manifest entry of each sample's quantity).
    """
    def col(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=raw.device).view(*t.shape, 1, 1)

    x = raw.to(torch.float32)
    invalid = (col(has_nodata.bool()) & (x == col(nodata.float()))) | ~torch.isfinite(x)
    x = x * col(scale.float()) + col(offset.float())
    std_safe = torch.where(std > 0, std, torch.ones_like(std)).float()
    if mean.dim() == 1:
        mean, std_safe = mean[None], std_safe[None]
    x = (x - col(mean.float())) / col(std_safe)
    return x.masked_fill(invalid, 0.0)


def crop_resize(x: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each sample to its box, resize to ``size`` x ``size`` (bilinear) and flip, in one grid_sample.

    ``x`` is [N, C, H, W] float, ``params`` [N, 6] as from ``crop_params``.
    """
    n, _, height, width = x.shape
    p = params.to(device=x.device, dtype=torch.float32)
    top, left, h, w, hflip, vflip = p.unbind(1)
    # affine_grid maps output [-1, 1] to input [-1, 1] (align_corners=False: pixel edges)
    sx = w / width
    sy = h / height
    cx = (2 * left + w) / width - 1
    cy = (2 * top + h) / height - 1
    sx = torch.where(hflip > 0, -sx, sx)
    sy = torch.where(vflip > 0, -sy, sy)
    zeros = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zeros, cx], 1), torch.stack([zeros, sy, cy], 1)], 1)
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


#: batch fields ``prepare`` reads, besides the pixels
BATCH_FIELDS = ("params", "scale", "offset", "nodata", "has_nodata", "mean", "std")


def prepare(batch: dict, size: int) -> torch.Tensor:
    """A raw batch (``pixels`` [N, C, H, W] native dtype + ``BATCH_FIELDS``) -> float32 [N, C, size, size]."""
    x = normalise(
        batch["pixels"], batch["scale"], batch["offset"], batch["nodata"], batch["has_nodata"],
        batch["mean"], batch["std"],
    )
    return crop_resize(x, batch["params"], size)
