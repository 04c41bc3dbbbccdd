"""Random resized crops with flips (MAE's augmentation), drawn by ``augment.crop_params``."""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from ofa.pipeline import augment
from ofa.pipeline.data.decode import load
from ofa.pipeline.data.normalise import normalise
from ofa.pipeline.data.streams import Stream, band_valid


def _resize(x: torch.Tensor, size: int, ch: int, cw: int) -> torch.Tensor:
    """[1, C, ch, cw] -> [C, size, size], bilinear, antialiased when shrinking."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=(ch > size or cw > size))[0]


def decode_crop(sample: dict, stream: Stream, rng: random.Random, size: int,
                scale: tuple[float, float] = (0.2, 1.0)) -> torch.Tensor:
    """``decode`` + ``random_resized_crop`` (same draws), cropping the raw pixels first so only the crop
    is converted and normalised."""
    return decode_crop_valid(sample, stream, rng, size, scale)[0]


def decode_crop_valid(sample: dict, stream: Stream, rng: random.Random, size: int,
                      scale: tuple[float, float] = (0.2, 1.0)) -> tuple[torch.Tensor, list[bool]]:
    """``decode_crop`` and the sample's per-band validity (``band_valid``)."""
    raw, meta = load(sample, stream)
    valid = band_valid(meta, raw.shape[0])
    top, left, ch, cw, hflip, vflip = map(int, augment.crop_params(rng, raw.shape[1], raw.shape[2], scale))
    # normalised before flipping: numpy's casts and compares are several times slower on reversed rows,
    # torch.flip of the float32 crop is one fast copy
    x = torch.from_numpy(normalise(raw[:, top:top + ch, left:left + cw], meta, stream))
    flips = [d for d, on in ((2, hflip), (1, vflip)) if on]
    if flips:
        x = x.flip(flips)
    if ch == size and cw == size:
        return x, valid
    return _resize(x[None], size, ch, cw), valid


def random_resized_crop(x: torch.Tensor, size: int, rng: random.Random, scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Crop a random area share in ``scale`` and aspect ratio in ``ratio``, resize to ``size``, random flips."""
    top, left, ch, cw, hflip, vflip = map(int, augment.crop_params(rng, x.shape[1], x.shape[2], scale, ratio))
    out = _resize(x[None, :, top:top + ch, left:left + cw], size, ch, cw)
    if hflip:
        out = out.flip(-1)
    if vflip:
        out = out.flip(-2)
    return out
