"""A light UPerNet-style decoder over the ViT's multi-level features.

The four [N, D, h, w] maps (same stride p) are first turned into a pyramid of strides
p/4, p/2, p, 2p (transposed convs up, max-pool down), then: lateral 1x1 convs, a pyramid pooling
module on the coarsest level, top-down fusion (FPN), and all levels upsampled, concatenated and
fused into per-pixel logits at stride p/4.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import confusion, miou_from_confusion


def _conv(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UPerNetLite(nn.Module):
    """Multi-level ViT features -> segmentation logits [N, K, 4h, 4w]."""

    def __init__(self, in_dim: int, n_classes: int, channels: int = 128, pool_scales: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.rescale = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(in_dim, in_dim // 2, 2, 2), nn.BatchNorm2d(in_dim // 2), nn.GELU(),
                          nn.ConvTranspose2d(in_dim // 2, in_dim // 2, 2, 2)),
            nn.ConvTranspose2d(in_dim, in_dim, 2, 2),
            nn.Identity(),
            nn.MaxPool2d(2, ceil_mode=True),
        ])
        level_dims = [in_dim // 2, in_dim, in_dim, in_dim]
        self.lateral = nn.ModuleList([_conv(d, channels, 1) for d in level_dims[:-1]])
        self.ppm = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(s), _conv(in_dim, channels, 1)) for s in pool_scales])
        self.ppm_out = _conv(in_dim + channels * len(pool_scales), channels)
        self.fpn_out = nn.ModuleList([_conv(channels, channels) for _ in level_dims[:-1]])
        self.fuse = _conv(channels * len(level_dims), channels)
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(channels, n_classes, 1))

    def _ppm(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(m(x), size=size, mode="bilinear", align_corners=False) for m in self.ppm]
        return self.ppm_out(torch.cat([x, *pooled], dim=1))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        if len(levels) != 4:
            raise ValueError(f"UPerNetLite expects 4 feature levels, got {len(levels)}")
        pyramid = [op(x) for op, x in zip(self.rescale, levels)]
        lat = [conv(x) for conv, x in zip(self.lateral, pyramid[:-1])] + [self._ppm(pyramid[-1])]
        for i in range(len(lat) - 1, 0, -1):  # top-down
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="bilinear", align_corners=False)
        outs = [conv(x) for conv, x in zip(self.fpn_out, lat[:-1])] + [lat[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        return self.classifier(self.fuse(torch.cat(outs, dim=1)))


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits at the label's native size."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _batches(n: int, batch_size: int, gen: torch.Generator | None):
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


@torch.no_grad()
def decoder_miou(decoder: UPerNetLite, levels: list[torch.Tensor], y: torch.Tensor, n_classes: int,
                 device: torch.device, batch_size: int = 32) -> float:
    """mIoU of a decoder over cached features, predictions at the labels' native size."""
    decoder.eval()
    conf = torch.zeros(n_classes, n_classes, dtype=torch.long)
    for idx in _batches(len(y), batch_size, None):
        logits = decoder([lv[idx].to(device).float() for lv in levels])
        pred = upsample_logits(logits, tuple(y.shape[-2:])).argmax(1).cpu()
        conf += confusion(pred, y[idx], n_classes)
    return miou_from_confusion(conf)


def train_frozen_decoder(
    train: tuple[list[torch.Tensor], torch.Tensor],
    valid: tuple[list[torch.Tensor], torch.Tensor],
    test: tuple[list[torch.Tensor], torch.Tensor],
    n_classes: int,
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 1e-3,
    device: torch.device | str = "cpu",
    channels: int = 128,
) -> tuple[float, float]:
    """Train a :class:`UPerNetLite` on cached frozen features; (test mIoU, valid mIoU) at the best valid epoch."""
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    decoder = UPerNetLite(train[0][0].shape[1], n_classes, channels).to(device)
    opt = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    best = (0.0, -1.0)
    size = tuple(train[1].shape[-2:])
    for _ in range(epochs):
        decoder.train()
        for idx in _batches(len(train[1]), batch_size, gen):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            logits = upsample_logits(decoder([lv[idx].to(device).float() for lv in train[0]]), size)
            loss = F.cross_entropy(logits, train[1][idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        v = decoder_miou(decoder, valid[0], valid[1], n_classes, device)
        if v > best[1]:
            best = (decoder_miou(decoder, test[0], test[1], n_classes, device), v)
    return best
