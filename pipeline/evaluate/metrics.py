"""GEO-Bench metrics: top-1 accuracy, micro F1 (multi-label), mean IoU (segmentation)."""
from __future__ import annotations

import torch

METRIC_NAMES = {"classification": "accuracy", "multilabel": "f1_micro", "segmentation": "miou"}


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy of [N, K] logits against [N] class indices."""
    return float((logits.argmax(1) == target).float().mean())


def f1_micro(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.0) -> float:
    """Micro-averaged F1 of [N, K] multi-label logits (positive where logit > threshold) vs 0/1 targets."""
    pred = logits > threshold
    truth = target > 0.5
    tp = (pred & truth).sum().item()
    fp = (pred & ~truth).sum().item()
    fn = (~pred & truth).sum().item()
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def confusion(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[K, K] confusion counts (rows = truth) of integer predictions vs targets of any equal shape."""
    idx = target.reshape(-1).long() * n_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def miou_from_confusion(conf: torch.Tensor) -> float:
    """Mean IoU over the classes that occur in the truth or the prediction."""
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    seen = union > 0
    return float((inter[seen] / union[seen]).mean()) if seen.any() else 1.0


def miou(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> float:
    """Mean IoU of integer label maps."""
    return miou_from_confusion(confusion(pred, target, n_classes))


def majority_miou(target: torch.Tensor, n_classes: int) -> float:
    """mIoU of predicting the most frequent class everywhere (the segmentation baseline)."""
    counts = torch.bincount(target.reshape(-1).long(), minlength=n_classes)
    return miou(torch.full_like(target, int(counts.argmax())), target, n_classes)
