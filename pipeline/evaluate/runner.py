"""Evaluate one checkpoint on one GEO-Bench task over several seeds."""
from __future__ import annotations

import copy
import time

import torch
from torch import nn

from ofa.ingest.storage import storage_access

from .bands import InputGroup, plan_inputs
from .data import TaskSplit, loader
from .features import Backbone, BackboneSpec, extract, load_mae, model_config
from .finetune import finetune
from .geobench import SPLITS, Task
from .metrics import METRIC_NAMES
from .options import PROTOCOLS, EvalOptions
from .probe import linear_probe
from .report import RunResult
from .segmentation import train_frozen_decoder

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def missing_text(groups: list[InputGroup]) -> str:
    return ";".join(f"{g.modality}:{'+'.join(g.missing)}" for g in groups if g.missing)


class MaeSource:
    """Gives a fresh MAE per seed: a new random init, or a copy of one loaded checkpoint."""

    def __init__(self, spec: BackboneSpec) -> None:
        self.spec = spec
        self._loaded: nn.Module | None = None

    @property
    def is_random(self) -> bool:
        return self.spec.checkpoint == "random"

    def check(self) -> None:
        """Load the checkpoint (or build the random configuration) once, so that a bad one stops the run
        with one error before any task instead of failing every task."""
        if self.is_random:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                load_mae(self.spec, 0)
        elif self._loaded is None:
            with storage_access(self.spec.checkpoint, "--checkpoint"):
                self._loaded = load_mae(self.spec, 0)

    def get(self, seed: int) -> nn.Module:
        if self.is_random:
            return load_mae(self.spec, seed)
        if self._loaded is None:
            self._loaded = load_mae(self.spec, seed)
        return copy.deepcopy(self._loaded)


def evaluate_task(task: Task, label: str, source: MaeSource, opts: EvalOptions) -> list[RunResult]:
    """All seeds of one (checkpoint, task): frozen probe/decoder or full fine-tuning."""
    if opts.protocol not in PROTOCOLS:
        raise ValueError(f"protocol {opts.protocol!r}: expected one of {PROTOCOLS}")
    device = pick_device(opts.device)
    names = task.partition(opts.partition)
    if opts.max_samples:
        names = {s: n[: opts.max_samples] for s, n in names.items()}
    empty = [s for s in SPLITS if not names[s]]
    if empty:
        raise ValueError(f"task {task.name}, partition {opts.partition}: empty split(s) {empty}")
    results: list[RunResult] = []
    cache: dict[int, dict] = {}
    for seed in range(opts.seeds):
        start = time.perf_counter()
        mae = source.get(seed)
        cfg = model_config(mae)
        groups = plan_inputs(task, cfg.embedding)
        backbone = Backbone(mae, groups, source.spec.img_size or cfg.img_size, task.spatial_resolution)
        splits = {s: TaskSplit(task, names[s], groups) for s in SPLITS}
        if opts.protocol == "linear":
            key = seed if source.is_random else 0  # a pretrained backbone's features do not depend on the seed
            if key not in cache:
                multilevel = task.kind == "segmentation"
                cache = {key: {s: extract(backbone, loader(splits[s], opts.batch_size, num_workers=opts.num_workers),
                                          device, multilevel, desc=f"{task.name} {s}") for s in SPLITS}}
            f = cache[key]
            if task.kind == "segmentation":
                value, _ = train_frozen_decoder(f["train"], f["valid"], f["test"], task.n_classes, seed=seed,
                                                epochs=opts.seg_epochs, batch_size=min(16, opts.batch_size), device=device,
                                                channels=opts.decoder_channels)
            else:
                value = linear_probe(f["train"], f["valid"], f["test"], task.kind, task.n_classes, seed=seed,
                                     epochs=opts.probe_epochs).test
        else:
            loaders = {s: loader(splits[s], opts.batch_size, shuffle=(s == "train"), num_workers=opts.num_workers, seed=seed)
                       for s in SPLITS}
            value, _ = finetune(backbone, task.kind, task.n_classes, loaders, device, seed=seed,
                                epochs=opts.finetune_epochs, lr=opts.lr, decoder_channels=opts.decoder_channels)
        results.append(RunResult(label, task.name, task.kind, opts.protocol, METRIC_NAMES[task.kind], seed,
                                 float(value), round(time.perf_counter() - start, 2), opts.partition,
                                 missing_text(groups)))
    return results
