"""What an evaluation is asked to do, light to import (the ``ofa`` command builds ``ofa eval geobench``'s
options from these fields at start-up): the protocol and budget (``EvalOptions``) and the backbone
(``BackboneSpec``). Each default is written once, here."""
from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("linear", "finetune")


@dataclass
class EvalOptions:
    """Protocol and budget knobs shared by all tasks."""

    protocol: str = "linear"
    partition: str = "default"
    seeds: int = 3
    batch_size: int = 32
    num_workers: int = 0
    device: str = "auto"
    probe_epochs: int = 100
    seg_epochs: int = 30
    decoder_channels: int = 128
    finetune_epochs: int = 10
    lr: float = 1e-4
    max_samples: int | None = None   # cap per split (quick runs); None = the whole partition
    threads: int | None = None       # CPU budget for torch (pipeline.threads); None: OMP_NUM_THREADS, else the CPUs allowed


@dataclass
class BackboneSpec:
    """How to get the backbone: ``checkpoint`` is a path/URL or "random" (then size/embedding/patch apply)."""

    checkpoint: str
    size: str = "tiny"
    embedding: str | None = None      # None: the checkpoint's own (random: "ofa")
    img_size: int | None = None       # None: the checkpoint's own (random: 224)
    patch_size: int = 16
    storage_options: dict | None = None
