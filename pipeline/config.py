"""The options of ``ofa train`` and ``ofa demo`` (``TrainConfig``, ``DemoConfig``), light to import: the ``ofa``
command builds their flags, ``--config`` keys and environment variables from these fields at start-up
(``pipeline.options``), so each default and help text is written once, here.

``TrainConfig`` keeps the flat keys every ``config.yaml`` has had (``size``, ``batch_size``, ...); the model's
and the loader's configurations are built from them in one place, ``TrainConfig.model_config`` and
``TrainConfig.loader_config``, by field name: an option feeds every part with a field of its name (``img_size``
is the model's input and the loader's crop), so a new model or loader option is one field here with the name
it has there. Why not ``TrainConfig(model=ModelConfig(...), loader=LoaderConfig(...))``: the keys would nest
(``model: {size: ...}``) and change, shared options would need linking, and neither is a user's whole config
(the model's modalities come from the data, the loader's rank and position from the launch).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ofa.model.config import ModelConfig

if TYPE_CHECKING:
    from ofa.pipeline.data import LoaderConfig

Size = Literal["tiny", "small", "base", "large"]
Embedding = Literal["ofa", "wavelength"]


@dataclass
class TrainConfig:
    """Pretrain the MAE on WebDataset shards (Accelerate; also: accelerate launch -m ofa.pipeline.train).

    AdamW with linear warmup + cosine decay, learning rate scaled by the global batch (lr * global_batch / 256),
    bf16/fp16 autocast, gradient accumulation, clipping, optional torch.compile. Every step appends a JSON line to
    OUT/log.jsonl (or --log-dir) and TensorBoard scalars; the resolved options go to OUT/config.yaml (usable as
    --config). Checkpoints go atomically to OUT/checkpoints/step-NNNNNNNN; --resume auto continues from the last
    complete one and reproduces the uninterrupted run exactly, and refuses, in one line, a folder holding a run
    with other model or data options."""

    data: list[str] = field(default_factory=list, metadata={"repeat": True, "metavar": "URL"})
    """dataset URL (folder, file:// or s3://); repeat for several"""
    out: str = "ofa-train"
    """run folder or s3:// URL for logs and checkpoints"""
    size: Size = "base"
    """backbone size"""
    embedding: Embedding = "ofa"
    """patch embedding: per sensor (ofa) or wavelength-conditioned"""
    steps: int = 1000
    """optimiser steps"""
    batch_size: int = 64
    """images per process and micro-step"""
    img_size: int = 224
    """crop size in pixels (the model's input)"""
    patch_size: int = 16
    """ViT patch size"""
    mask_ratio: float = 0.75
    """share of patches masked"""
    seed: int = 0
    """random seed (initialisation, shuffles, crops)"""
    save_every: int = 500
    """checkpoint every K steps"""
    resume: str = "auto"
    """'auto' (last complete checkpoint in --out), 'none', or a checkpoint URL"""
    cpu: bool = False
    """train on CPU even if a GPU is present"""
    storage_options: dict[str, Any] | None = None
    """fsspec options for s3:// URLs as JSON, e.g. '{"client_kwargs": {"endpoint_url": ...}}' (never written to
    config.yaml)"""
    lr: float = 1.5e-4
    """base learning rate per 256 images of global batch"""
    min_lr_ratio: float = 0.0
    """final learning rate as a share of the peak"""
    weight_decay: float = 0.05
    """AdamW weight decay"""
    warmup_steps: int | None = None
    """linear warmup steps (null: 5 % of steps)"""
    grad_accum: int = 1
    """gradient accumulation micro-steps"""
    clip: float = 1.0
    """gradient norm clip, 0 = off"""
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None
    """autocast precision (null: accelerate launch's setting, else no)"""
    compile: bool = False
    """torch.compile the model"""
    workers: int = 0
    """loader worker processes per rank"""
    device_augment: bool = False
    """loader workers only decode; normalise/crop/flip run on the accelerator (for fast GPUs)"""
    shuffle_buffer: int = 256
    """samples in each shuffle buffer"""
    resampled: bool = False
    """draw shards with replacement (multi-node)"""
    weights: dict[str, float] | None = None
    """mixing weight per sensor as JSON, e.g. '{"sentinel-2": 2}' (null: sample counts)"""
    dataset_weights: list[float] | None = None
    """mixing weight per --data URL, in order (null: 1 each)"""
    max_bad_steps: int = 5
    """stop after N non-finite losses in a row"""
    tensorboard: bool = True
    """TensorBoard logs"""
    plot_every: int = 0
    """reconstruction PNG every N steps (0: never)"""
    peak_tflops: float | None = None
    """peak TFLOP/s per device for MFU (null: known GPUs only)"""
    log_dir: str | None = None
    """local folder for log.jsonl and TensorBoard, copied to OUT at each checkpoint (null: OUT itself; for an
    s3:// OUT, ofa-logs/s3/BUCKET/PREFIX)"""
    threads: int | None = None
    """torch's CPU threads (OMP_NUM_THREADS, when set, wins; null: the CPUs this process may use)"""

    def model_config(self, modalities: dict[str, int]) -> ModelConfig:
        """The model this run trains, for the data's ``modalities`` (sensor -> channels): every ``ModelConfig``
        field this config has by name (size, embedding, img_size, patch_size, mask_ratio), the rest its defaults."""
        return ModelConfig(**self._shared(ModelConfig), modalities=modalities)

    def loader_config(self, rank: int = 0, world_size: int = 1, skip_batches: int = 0) -> LoaderConfig:
        """What one rank's loader reads: every ``LoaderConfig`` field this config has by name (data, batch size,
        crop size, seed, shuffle buffer, mixing weights, storage options, device augmentation), the rest from the
        launch (``rank``, ``world_size``) and the resume position (``skip_batches``)."""
        from ofa.pipeline.data import LoaderConfig

        return LoaderConfig(**self._shared(LoaderConfig), rank=rank, world_size=world_size, skip_batches=skip_batches)

    def _shared(self, cls: type) -> dict[str, Any]:
        """This config's values of the fields dataclass ``cls`` also has: one option, one name, every part it feeds."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(cls) if f.name in self.__dataclass_fields__}


@dataclass
class DemoConfig:
    """Run the whole pipeline offline on an embedded catalog, in a few minutes on a CPU: write the demo catalog
    (small COGs + STAC Items for Sentinel-2, Sentinel-1, Landsat, NAIP), serve it from a real STAC API on 127.0.0.1
    (rustac serve), ingest it into WebDataset shards + manifest, pretrain a tiny shared-backbone MAE under
    Accelerate, write a checkpoint, a loss-curve PNG and a reconstruction PNG. Every stage reuses what a previous
    run left: a second run only re-checks and re-plots."""

    out: str = "ofa-demo"
    """folder for everything the demo makes"""
    steps: int = 300
    """optimiser steps"""
    batch_size: int = 8
    """images per step"""
    img_size: int = 64
    """crop size in pixels"""
    patch_size: int = 8     # 8 x 8 tokens at 64 px: enough context for a tiny MAE to learn in minutes
    """ViT patch size"""
    lr: float = 0.05        # per 256 images (MAE convention): 1.6e-3 at batch 8
    """base learning rate per 256 images"""
    chip_size: int = 128
    """chip size in pixels"""
    size: Size = "tiny"
    """backbone size"""
    embedding: Embedding = "ofa"
    """patch embedding: per sensor (ofa) or wavelength-conditioned"""
    seed: int = 0
    """random seed"""
    workers: int | None = None
    """ingest workers (null: one per CPU of the thread budget)"""
    threads: int | None = None
    """CPU budget: torch's threads and the ingest's workers (OMP_NUM_THREADS, when set, wins; null: the CPUs this
    process may use)"""
    progress: bool = True
    """progress bars"""
    fresh: bool = False
    """delete --out first instead of reusing it"""
