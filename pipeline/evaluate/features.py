"""The backbone under evaluation: load (or randomly initialise) it, run task inputs through it,
and cache pooled or multi-level features once per split."""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from tqdm import tqdm

from ofa.model import DEFAULT_MODALITIES, MaskedAutoencoder, ModelConfig, from_pretrained
from ofa.pipeline.checkpoint import model_dir

from .bands import InputGroup, resize
from .options import BackboneSpec


def load_mae(spec: BackboneSpec, seed: int = 0) -> nn.Module:
    """The MAE of ``spec``: ``from_pretrained`` for a checkpoint, a seeded fresh one for "random"."""
    if spec.checkpoint == "random":
        torch.manual_seed(seed)
        cfg = ModelConfig(size=spec.size, embedding=spec.embedding or "ofa", img_size=spec.img_size or 224,
                          patch_size=spec.patch_size, modalities=dict(DEFAULT_MODALITIES))
        return MaskedAutoencoder(cfg)
    mae = from_pretrained(model_dir(spec.checkpoint, spec.storage_options), storage_options=spec.storage_options)
    cfg = model_config(mae)
    if spec.embedding is not None and spec.embedding != cfg.embedding:
        raise ValueError(
            f"--embedding {spec.embedding}: checkpoint {spec.checkpoint} was trained with the "
            f"{cfg.embedding!r} embedding"
        )
    return mae


def model_config(mae: nn.Module):
    """The ``ModelConfig`` of an MAE."""
    return mae.config


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Backbone(nn.Module):
    """The MAE encoder applied to a task's input groups; features of several groups are concatenated."""

    def __init__(self, mae: nn.Module, groups: list[InputGroup], img_size: int, gsd: float | None = None) -> None:
        super().__init__()
        self.mae, self.groups, self.img_size, self.gsd = mae, groups, img_size, gsd
        cfg = model_config(mae)
        self.use_gsd = bool(getattr(cfg, "gsd_pos_embed", False)) and gsd is not None
        self.wavelength_mode = cfg.embedding == "wavelength"
        if not self.wavelength_mode:
            for g in groups:
                have = cfg.modalities.get(g.modality)
                if have != g.channels:
                    raise ValueError(
                        f"the checkpoint has no {g.modality!r} patch embedding with {g.channels} channels "
                        f"(its modalities: {cfg.modalities})"
                    )
        self.dim = cfg.embed_dim * len(groups)

    def _kw(self, g: InputGroup, x: torch.Tensor) -> dict:
        kw = {"modality": g.modality, "wavelengths": list(g.wavelengths) if self.wavelength_mode else None}
        if self.use_gsd:  # ground distance of a pixel after resizing to img_size
            kw["gsd"] = float(self.gsd) * x.shape[-1] / self.img_size
        return kw

    def pooled(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """[N, D * groups] pooled features."""
        outs = []
        for g, x in zip(self.groups, xs):
            _, pooled = self.mae.encode(resize(x, self.img_size), **self._kw(g, x))
            outs.append(pooled)
        return torch.cat(outs, dim=1)

    def levels(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Multi-level maps, each [N, D * groups, H/p, W/p]."""
        per_group = [self.mae.encode_features(resize(x, self.img_size), **self._kw(g, x)) for g, x in zip(self.groups, xs)]
        return [torch.cat(maps, dim=1) for maps in zip(*per_group)]


@torch.no_grad()
def extract(backbone: Backbone, loader, device: torch.device, multilevel: bool = False, desc: str = "features"):
    """Run a loader through the frozen backbone once: (features, labels) on the CPU.

    Pooled features come back as one float32 [N, F] tensor; multi-level features as a list of
    float16 [N, F, h, w] tensors (half the memory; the decoder trains in float32).
    """
    backbone.eval().to(device)
    feats: list = []
    labels = []
    for xs, y in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        xs = [x.to(device, non_blocking=True) for x in xs]
        with autocast(device):
            f = backbone.levels(xs) if multilevel else backbone.pooled(xs)
        feats.append([m.to("cpu", torch.float16) for m in f] if multilevel else f.float().cpu())
        labels.append(y)
    y = torch.cat(labels)
    if multilevel:
        return [torch.cat(level) for level in zip(*feats)], y
    return torch.cat(feats), y
