"""Full fine-tuning: backbone + linear head (classification) or + UPerNet-style decoder (segmentation).

The score reported is the test score at the epoch with the best validation score.
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from .features import Backbone, autocast
from .metrics import confusion, miou_from_confusion
from .probe import loss_fn, score
from .segmentation import UPerNetLite, upsample_logits


class Finetuner(nn.Module):
    """Backbone plus task head; ``forward`` returns classification logits or segmentation logits."""

    def __init__(self, backbone: Backbone, kind: str, n_classes: int, decoder_channels: int = 128) -> None:
        super().__init__()
        self.backbone, self.kind = backbone, kind
        self.head = UPerNetLite(backbone.dim, n_classes, decoder_channels) if kind == "segmentation" else nn.Linear(backbone.dim, n_classes)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """What fine-tuning trains of the MAE: the shared blocks and the patch embeddings this task uses
        (not the MAE decoder, reconstruction heads or other sensors' embeddings)."""
        mae = self.backbone.mae
        params = list(mae.backbone.parameters())
        proj = getattr(mae.patch_embed, "proj", None)
        if isinstance(proj, nn.ModuleDict):  # per-sensor embeddings: only this task's sensors
            for g in self.backbone.groups:
                params += list(proj[g.modality].parameters())
        else:
            params += list(mae.patch_embed.parameters())
        return params

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if self.kind == "segmentation":
            return self.head(self.backbone.levels(xs))
        return self.head(self.backbone.pooled(xs))


def _flip(xs: list[torch.Tensor], y: torch.Tensor, kind: str, gen: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor]:
    if torch.rand((), generator=gen) < 0.5:
        xs = [x.flip(-1) for x in xs]
        if kind == "segmentation":
            y = y.flip(-1)
    return xs, y


@torch.no_grad()
def evaluate(model: Finetuner, loader, n_classes: int, device: torch.device) -> float:
    """The task metric of ``model`` over ``loader``."""
    model.eval()
    if model.kind == "segmentation":
        conf = torch.zeros(n_classes, n_classes, dtype=torch.long)
        for xs, y in loader:
            with autocast(device):
                logits = model([x.to(device) for x in xs])
            conf += confusion(upsample_logits(logits.float(), tuple(y.shape[-2:])).argmax(1).cpu(), y, n_classes)
        return miou_from_confusion(conf)
    logits, ys = [], []
    for xs, y in loader:
        with autocast(device):
            logits.append(model([x.to(device) for x in xs]).float().cpu())
        ys.append(y)
    return score(model.kind, torch.cat(logits), torch.cat(ys))


def finetune(
    backbone: Backbone,
    kind: str,
    n_classes: int,
    loaders: dict,
    device: torch.device,
    seed: int = 0,
    epochs: int = 10,
    lr: float = 1e-4,
    head_lr: float = 1e-3,
    weight_decay: float = 0.05,
    decoder_channels: int = 128,
) -> tuple[float, float]:
    """Train everything; (test score, valid score) at the best validation epoch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Finetuner(backbone, kind, n_classes, decoder_channels).to(device)
    trained = model.backbone_parameters()
    keep = {id(p) for p in trained}
    for p in model.backbone.parameters():
        p.requires_grad_(id(p) in keep)
    opt = torch.optim.AdamW([
        {"params": trained, "lr": lr},
        {"params": model.head.parameters(), "lr": head_lr},
    ], weight_decay=weight_decay)
    steps = max(1, epochs * len(loaders["train"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, head_lr], total_steps=steps, pct_start=0.1)
    best = (0.0, -1.0)
    for epoch in tqdm(range(epochs), desc="fine-tune", leave=False, dynamic_ncols=True):
        model.train()
        for xs, y in loaders["train"]:
            if len(y) < 2 and kind == "segmentation":
                continue
            xs, y = _flip(xs, y, kind, gen)
            xs, y = [x.to(device) for x in xs], y.to(device)
            with autocast(device):
                out = model(xs)
            out = out.float()
            if kind == "segmentation":
                loss = nn.functional.cross_entropy(upsample_logits(out, tuple(y.shape[-2:])), y)
            else:
                loss = loss_fn(kind, out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        v = evaluate(model, loaders["valid"], n_classes, device)
        if v > best[1]:
            best = (evaluate(model, loaders["test"], n_classes, device), v)
    return best
