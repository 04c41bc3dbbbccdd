"""Linear probe on cached features: standardise, train a linear head per (lr, weight decay),
keep the one that scores best on the validation split, report the test score."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import accuracy, f1_micro


@dataclass
class ProbeResult:
    test: float
    valid: float
    lr: float
    weight_decay: float


def score(kind: str, logits: torch.Tensor, y: torch.Tensor) -> float:
    """The task's metric for classification logits: accuracy, or micro F1 for multi-label."""
    return f1_micro(logits, y) if kind == "multilabel" else accuracy(logits, y)


def loss_fn(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, y.float()) if kind == "multilabel" else F.cross_entropy(logits, y)


def _fit(x: torch.Tensor, y: torch.Tensor, kind: str, n_out: int, lr: float, wd: float,
         epochs: int, batch_size: int, seed: int) -> nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = nn.Linear(x.shape[1], n_out)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(kind, head(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    return head


def linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    kind: str,
    n_classes: int,
    seed: int = 0,
    epochs: int = 100,
    batch_size: int = 256,
    lrs: tuple[float, ...] = (1e-3, 1e-2),
    weight_decays: tuple[float, ...] = (1e-4, 1e-2),
) -> ProbeResult:
    """Fit a linear head on ``train`` features; pick (lr, wd) on ``valid``; score ``test``."""
    mean = train[0].mean(0, keepdim=True)
    std = train[0].std(0, keepdim=True).clamp_min(1e-6)
    norm = lambda f: (f.float() - mean) / std  # noqa: E731
    xtr, xva, xte = norm(train[0]), norm(valid[0]), norm(test[0])
    best: ProbeResult | None = None
    for lr in lrs:
        for wd in weight_decays:
            head = _fit(xtr, train[1], kind, n_classes, lr, wd, epochs, batch_size, seed)
            with torch.no_grad():
                v = score(kind, head(xva), valid[1]) if len(xva) else 0.0
                if best is None or v > best.valid:
                    best = ProbeResult(score(kind, head(xte), test[1]), v, lr, wd)
    assert best is not None
    return best
