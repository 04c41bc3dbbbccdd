"""What an evaluation is asked to do, light to import (the ``ofa`` command builds ``ofa eval geobench``'s
options from these fields at start-up, ``ofa.pipeline.options``): the benchmark and checkpoints
(``GeoBenchOptions``), the protocol and budget (``EvalOptions``) and the backbone (``BackboneSpec``). Each
default is written once, here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PROTOCOLS = ("linear", "finetune")


@dataclass
class GeoBenchOptions:
    """Evaluate one checkpoint (or several with --compare) on GEO-Bench as released (classification_v1.0/ and
    segmentation_v1.0/ under --root). Writes geobench_runs.csv (per seed), geobench_results.csv and
    geobench_results.md (mean ± std over seeds) and geobench_results.png into --out."""

    root: str
    """GEO-Bench folder (holding classification_v1.0/, segmentation_v1.0/)"""
    checkpoint: str | None = None
    """a saved model, a training run folder (its last complete checkpoint), a step-NNNNNNNN folder or its model/
    folder (local, file://, s3://), or 'random' for a random init"""
    compare: list[str] | None = field(default=None, metadata={"nargs": "+", "type": str, "metavar": "LABEL=CHECKPOINT"})
    """several checkpoints side by side, e.g. random=random s2=ckpt/s2 multi=s3://b/multi"""
    tasks: str = "all"
    """'all' or comma-separated task names"""
    out: str | None = None
    """output folder (required unless --list)"""
    list: bool = False
    """list the tasks found under --root and how their bands map to model inputs, then exit"""
    storage_options: dict | None = None
    """fsspec options for s3:// checkpoints, as JSON"""


@dataclass
class EvalOptions:
    """Protocol and budget knobs shared by all tasks."""

    protocol: Literal["linear", "finetune"] = "linear"
    """linear: frozen backbone + linear head / UPerNet-style decoder; finetune: train everything"""
    partition: str = "default"
    """partition file prefix: default, 0.10x_train, ..."""
    seeds: int = 3
    """number of seeds (0..N-1)"""
    batch_size: int = 32
    """samples per batch"""
    num_workers: int = 0
    """data loader worker processes"""
    device: str = "auto"
    """auto, cpu, cuda, cuda:1 ..."""
    probe_epochs: int = 100
    """linear-probe epochs over cached features"""
    seg_epochs: int = 30
    """frozen-decoder epochs over cached features"""
    decoder_channels: int = 128
    """width of the segmentation decoder"""
    finetune_epochs: int = field(default=10, metadata={"flag": "--epochs"})
    """fine-tuning epochs"""
    lr: float = 1e-4
    """fine-tuning backbone learning rate"""
    max_samples: int | None = None   # cap per split (quick runs); None = the whole partition
    """use at most N samples per split (quick runs)"""
    threads: int | None = None
    """torch's CPU threads (OMP_NUM_THREADS, when set, wins; null: the CPUs this process may use)"""


@dataclass
class BackboneSpec:
    """How to get the backbone: ``checkpoint`` is a path/URL or "random" (then size/embedding/patch apply)."""

    checkpoint: str
    size: Literal["tiny", "small", "base", "large"] = "tiny"
    """backbone size for --checkpoint random"""
    embedding: Literal["ofa", "wavelength"] | None = None      # None: the checkpoint's own (random: "ofa")
    """patch embedding: per-sensor (ofa) or wavelength-conditioned (null: the checkpoint's; ofa for random)"""
    img_size: int | None = None       # None: the checkpoint's own (random: 224)
    """model input size (null: the checkpoint's; 224 for random)"""
    patch_size: int = 16
    """patch size for --checkpoint random"""
    storage_options: dict | None = None
