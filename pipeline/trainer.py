"""The training loop of ``ofa train`` (launched as ``accelerate launch -m ofa.pipeline.train``): MAE pretraining on
streamed shards.

AdamW with linear warmup + cosine decay, learning rate scaled by the global batch
(``lr * global_batch / 256``), bf16/fp16 autocast, gradient accumulation, clipping, optional
``torch.compile``. Every step appends a JSON line (step, loss, lr, images/s, MFU, data-wait
share, world size, sensor) to ``log.jsonl`` and TensorBoard scalars to ``tensorboard/``, in OUT (or
``--log-dir``; copied to an ``s3://`` OUT at each checkpoint); the resolved options go to
``OUT/config.yaml``. Checkpoints (model + optimiser, scheduler, RNG states, data position, step;
the model's config.json also names each sensor's bands, wavelengths, GSD and normalisation and the
training data's manifest hashes) go atomically to ``OUT/checkpoints/step-NNNNNNNN`` (a folder or
``s3://``); ``--resume auto`` continues from the last complete one and reproduces the
uninterrupted run exactly, and refuses, in one line, a folder holding a run with other model or
data options. A non-finite loss skips the optimiser step; ``max_bad_steps`` of them in a row stop
the run (checkpoints stay intact). The options are ``TrainConfig``'s fields (``pipeline.config``): flags,
``--config FILE.yaml`` keys and ``OFA_TRAIN__*`` environment variables (``pipeline.options``).

The loop (``train``) reads top to bottom: ``find_resume`` -> ``setup`` -> per step ``train_step``,
``RunLog.step`` and, when due, ``save``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from tqdm import tqdm

from ofa.ingest.dataset.manifest import load_manifest
from ofa.ingest.storage import storage_access
from ofa.model import MaskedAutoencoder, flops_per_image, from_pretrained
from ofa.pipeline.checkpoint import (MODEL_DIR, latest_checkpoint, load_optimizer_shard, load_state, optimizer_layout_problem,
                                     rng_state, save_checkpoint, save_optimizer_shard, set_rng_state)
from ofa.pipeline.config import TrainConfig
from ofa.pipeline.data import batches, make_loader, modalities, streams_from, to_device
from ofa.pipeline.options import build
from ofa.pipeline.provenance import checkpoint_metadata
from ofa.pipeline.runs import (LOG_NAME, RunConflictError, check_resume, fetch_log, log_dir, run_options, sync_logs,
                               write_run_config)

log = logging.getLogger("ofa.train")

#: dense bf16 peak FLOP/s per device for MFU, by substring of the CUDA device name
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12, "V100": 125e12}


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row."""


def _lr_lambda(warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:  # step = optimiser steps done so far
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def _param_groups(model: Any, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or "token" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _peak_flops(cfg: TrainConfig, device: Any) -> float | None:
    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_FLOPS.items():
            if key in name:
                return value
    return None


def _log_path(cfg: TrainConfig) -> Path:
    return log_dir(cfg) / LOG_NAME


def _trim_log(path: Path, last_step: int) -> None:
    """Drop log lines past ``last_step`` (written by a run that died after its last checkpoint)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    path.write_text("".join(line + "\n" for line in keep))


def _band_valid(batch: dict, device: Any) -> Any:
    """The batch's per-sample band validity [N, C] on ``device``, or None when every band is valid (the
    plain loss, bit for bit as before band_valid existed)."""
    valid = batch.get("valid")
    return None if valid is None or bool(valid.all()) else valid.to(device, non_blocking=True)


def check_config(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` naming the option for values no run can start with."""
    if not cfg.data:
        raise ValueError("no training data: pass --data URL (or 'data:' in the config file)")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise ValueError(f"steps={cfg.steps}, batch_size={cfg.batch_size}, grad_accum={cfg.grad_accum}: must be >= 1")


@dataclass
class Resume:
    """Where a run starts: step 0, or a checkpoint's step with its saved training state."""

    step: int = 0
    url: str | None = None  # the checkpoint folder
    state: dict[str, Any] | None = None

    @property
    def model_dir(self) -> str | None:
        return f"{self.url}/{MODEL_DIR}" if self.url else None

    @property
    def loss(self) -> float | None:
        return self.state.get("loss") if self.state else None


def find_resume(cfg: TrainConfig) -> Resume:
    """The checkpoint ``cfg.resume`` names: the last complete one in ``cfg.out`` ("auto"), none, or a URL.

    "auto" into a folder holding a run with other model or data options raises ``RunConflictError``."""
    if not cfg.resume or cfg.resume == "none":
        return Resume()
    url, option = cfg.resume, "--resume"
    if cfg.resume == "auto":
        with storage_access(cfg.out, "--out"):
            found = latest_checkpoint(cfg.out, cfg.storage_options)
        if not found:
            return Resume()
        url, option = found[1], "--out"
        check_resume(cfg, f"{url}/{MODEL_DIR}")
    with storage_access(url, option):
        state = load_state(url, cfg.storage_options)
    return Resume(int(state["step"]), url, state)


@dataclass
class Run:
    """What ``setup`` builds: the prepared model, optimiser and schedule, and the stream of batches."""

    cfg: TrainConfig
    accelerator: Any
    mcfg: Any  # ModelConfig
    model: Any  # as prepared by accelerate (DDP, FSDP, compiled)
    unwrapped: Any  # the plain MaskedAutoencoder inside it
    optimizer: Any
    scheduler: Any
    batches: Iterator[dict]
    sharded: bool  # FSDP: each rank holds a shard of the optimiser state
    metadata: dict[str, Any] | None  # sensors and training data, for the checkpoints' config.json (main process)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


def make_accelerator(cfg: TrainConfig) -> Any:
    return Accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def setup(cfg: TrainConfig, accelerator: Any, resume: Resume) -> Run:
    """Seed; build the model, AdamW and its schedule; restore them from ``resume``; prepare them; open the loader.

    The order of the random draws here is part of the exact-resume contract: model init from ``cfg.seed``,
    then a per-rank masking seed, which a resumed run replaces by the saved RNG states."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    with storage_access(" ".join(cfg.data), "--data"):
        manifests = [load_manifest(url, cfg.storage_options) for url in cfg.data]   # read once per run
    streams = streams_from(manifests)
    mcfg = cfg.model_config(modalities(streams))
    model = MaskedAutoencoder(mcfg)
    optimizer, scheduler = _optimizer(cfg, model, accelerator.num_processes)
    rank = accelerator.process_index
    torch.manual_seed(cfg.seed * 1000 + 1 + rank)  # masking differs per rank
    if resume.state is not None:
        _restore(model, scheduler, resume, cfg, rank)
        if accelerator.is_main_process:
            log.info("resuming from %s at step %d", resume.url, resume.step)
    if cfg.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    sharded = accelerator.distributed_type == DistributedType.FSDP
    if resume.state is not None:  # optimiser state after prepare (under FSDP each rank reloads its own shard)
        saved = resume.state
        optimizer.load_state_dict(load_optimizer_shard(resume.url, rank, cfg.storage_options)
                                  if saved.get("sharded_optimizer") else saved["optimizer"])
    unwrapped = accelerator.unwrap_model(model)
    if getattr(unwrapped, "_orig_mod", None) is not None:
        unwrapped = unwrapped._orig_mod
    batches = _batches(cfg, accelerator, streams, resume.step)
    metadata = checkpoint_metadata(streams, manifests, run_options(cfg), cfg.storage_options) if accelerator.is_main_process else None
    return Run(cfg, accelerator, mcfg, model, unwrapped, optimizer, scheduler, batches, sharded, metadata)


def _check_layout(resume: Resume, accelerator: Any) -> None:
    """Refuse, in one line, a checkpoint whose optimiser state this run's distribution cannot load."""
    if resume.state is None:
        return
    problem = optimizer_layout_problem(resume.state, accelerator.distributed_type == DistributedType.FSDP,
                                       accelerator.num_processes)
    if problem:
        raise RunConflictError(f"cannot resume from {resume.url}: {problem}; resume it as it was launched, "
                               f"or give this run another --out")


def _optimizer(cfg: TrainConfig, model: Any, world: int) -> tuple[Any, Any]:
    """AdamW at ``lr * global batch / 256`` with linear warmup (default 5 % of steps) and cosine decay."""
    lr = cfg.lr * cfg.batch_size * cfg.grad_accum * world / 256
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=lr, betas=(0.9, 0.95))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, cfg.steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, cfg.steps, cfg.min_lr_ratio))
    return optimizer, scheduler


def _restore(model: Any, scheduler: Any, resume: Resume, cfg: TrainConfig, rank: int) -> None:
    """Weights, schedule and this rank's RNG states from the checkpoint (the optimiser follows after prepare)."""
    model.load_state_dict(from_pretrained(resume.model_dir, cfg.storage_options).state_dict())
    scheduler.load_state_dict(resume.state["scheduler"])
    rngs = resume.state["rng"]
    set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])


def _batches(cfg: TrainConfig, accelerator: Any, streams: list, start: int) -> Iterator[dict]:
    """This rank's batches from step ``start`` on (the loader replays its position without reading up to it)."""
    loader_cfg = cfg.loader_config(rank=accelerator.process_index, world_size=accelerator.num_processes,
                                   skip_batches=start * cfg.grad_accum)
    loader = make_loader(loader_cfg, workers=cfg.workers, streams=streams, pin_memory=accelerator.device.type == "cuda")
    return batches(loader)


@dataclass
class StepResult:
    """What one optimiser step did (this rank's images and FLOPs; the loss is averaged over ranks)."""

    loss: float | None  # None: non-finite, the optimiser step was skipped
    grad_norm: float | None
    lr: float
    images: int
    flops: float
    wait: float  # seconds spent waiting for batches
    seconds: float
    sensor: str
    skipped: int  # damaged samples the loader skipped so far
    x: Any  # the last micro-batch on the device (for plots)


def train_step(run: Run) -> StepResult:
    """Forward/backward over ``grad_accum`` micro-batches, then clip and step; a non-finite loss skips the step."""
    cfg, acc = run.cfg, run.accelerator
    t0 = time.perf_counter()
    wait, loss_sum, images, flops, skipped = 0.0, torch.zeros((), device=acc.device), 0, 0.0, 0
    for micro in range(cfg.grad_accum):
        tw = time.perf_counter()
        batch = next(run.batches)
        wait += time.perf_counter() - tw
        x = to_device(batch, acc.device, cfg.img_size)
        skipped = max(skipped, int(batch["skipped"]))
        sync = acc.no_sync(run.model) if micro < cfg.grad_accum - 1 and run.world > 1 else nullcontext()
        with sync, acc.autocast():
            loss = run.model(x, modality=batch["sensor"], band_valid=_band_valid(batch, acc.device)).loss
            acc.backward(loss / cfg.grad_accum)
        loss_sum += loss.detach().float() / cfg.grad_accum
        images += x.shape[0]
        flops += flops_per_image(run.mcfg, channels=x.shape[1], img_size=cfg.img_size) * x.shape[0]
    mean_loss = acc.reduce(loss_sum, reduction="mean")
    finite = bool(torch.isfinite(mean_loss).item())
    grad_norm = None
    if finite:
        if cfg.clip and cfg.clip > 0:
            grad_norm = float(acc.clip_grad_norm_(run.model.parameters(), cfg.clip))
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    lr = run.scheduler.get_last_lr()[0]
    run.scheduler.step()
    if acc.device.type == "cuda":
        torch.cuda.synchronize()
    return StepResult(float(mean_loss) if finite else None, grad_norm, lr, images, flops, wait,
                      time.perf_counter() - t0, batch["sensor"], skipped, x)


class RunLog:
    """Where a run reports: ``log.jsonl`` (a line per step), TensorBoard, reconstruction plots and a progress bar
    (without a terminal, a plain line about every 5 % of the run). Only the main process writes."""

    def __init__(self, run: Run, start: int) -> None:
        cfg = run.cfg
        self.run, self.path, self.writer = run, _log_path(cfg), None
        self.peak = _peak_flops(cfg, run.accelerator.device)
        self.skipped, self.rates = 0, []
        if run.main:
            fetch_log(cfg, self.path.parent)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _trim_log(self.path, start)
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.path.parent / "tensorboard"))
        self.bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step",
                        disable=not run.main or not sys.stderr.isatty())

    def step(self, step: int, r: StepResult, loss: float | None, bad_in_row: int) -> dict[str, Any]:
        """Record step ``step`` (``loss``: the last finite one); return its log record."""
        world = self.run.world
        rate = r.images * world / r.seconds
        self.rates.append(rate)
        self.skipped = max(self.skipped, r.skipped)
        rec: dict[str, Any] = {"step": step, "lr": r.lr, "images_per_s": round(rate, 3), "world_size": world,
                               "data_wait": round(r.wait / r.seconds, 4), "step_s": round(r.seconds, 4), "sensor": r.sensor,
                               "mfu": round(r.flops * world / r.seconds / (self.peak * world), 5) if self.peak else None,
                               "skipped_samples": self.skipped}
        if r.loss is not None:
            rec.update(loss=r.loss, grad_norm=r.grad_norm)
        else:
            rec["nonfinite_loss"] = True
        if self.run.main:
            if r.loss is None:
                log.warning("step %d: non-finite loss, optimiser step skipped (%d in a row)", step, bad_in_row)
            self._write(rec)
            self._plot(step, r)
            self._progress(step, rec, loss)
        return rec

    def _write(self, rec: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.writer is not None:
            for k in ("loss", "lr", "images_per_s", "data_wait", "mfu"):
                if rec.get(k) is not None:
                    self.writer.add_scalar(f"train/{k}", rec[k], rec["step"])

    def _plot(self, step: int, r: StepResult) -> None:
        every = self.run.cfg.plot_every
        if every and step % every == 0:
            from ofa.pipeline.plots import plot_batch

            bands = ((self.run.metadata or {}).get("sensors", {}).get(r.sensor) or {}).get("bands")
            plot_batch(self.run.unwrapped, r.x[:4].float().cpu(), r.sensor, self.path.parent / f"reconstruction-{step:08d}.png",
                       bands)

    def _progress(self, step: int, rec: dict[str, Any], loss: float | None) -> None:
        total = self.run.cfg.steps
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}" if loss is not None else "nan")
        if self.bar.disable and (step % max(total // 20, 1) == 0 or step == total):
            print(f"step {step}/{total} loss {rec.get('loss', float('nan')):.4f} "
                  f"{rec['images_per_s']:.1f} img/s data-wait {rec['data_wait']:.0%}", flush=True)

    def sync(self) -> None:
        """Copy the logs to OUT when they are written elsewhere (an s3:// OUT, --log-dir)."""
        if self.run.main:
            if self.writer is not None:
                self.writer.flush()
            sync_logs(self.run.cfg, self.path.parent)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.sync()

    @property
    def images_per_s(self) -> float | None:
        return sum(self.rates) / len(self.rates) if self.rates else None


def save(run: Run, step: int, loss: float | None) -> str:
    """Checkpoint ``step`` with the model, optimiser, schedule, every rank's RNG states and the data position.
    Collective: every rank calls it. Returns the checkpoint's URL."""
    cfg, acc = run.cfg, run.accelerator
    rngs: list[Any] = [None] * run.world
    if run.world > 1:
        torch.distributed.all_gather_object(rngs, rng_state())
    else:
        rngs = [rng_state()]
    to_save = run.unwrapped
    if run.sharded:  # FSDP: gathering the full weights is collective; each rank keeps its optimiser shard
        full = _gather_weights(run)
        if run.main:
            to_save = _full_model(run.mcfg, full)
        save_optimizer_shard(cfg.out, step, run.rank, run.optimizer.state_dict(), cfg.storage_options)
        acc.wait_for_everyone()  # every shard is written before the marker
    url = None
    if run.main:
        state = {"step": step, "loss": loss, "optimizer": None if run.sharded else run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "rng": rngs, "sharded_optimizer": run.sharded,
                 "data": {"batches_per_rank": step * cfg.grad_accum, "seed": cfg.seed, "world_size": run.world}}
        url = save_checkpoint(cfg.out, step, to_save, state, cfg.storage_options, run.metadata)
    acc.wait_for_everyone()
    return url if run.main else latest_checkpoint(cfg.out, cfg.storage_options)[1]


def _gather_weights(run: Run) -> dict:
    """FSDP: the full weights on the main process (collective). Offloaded to host memory when they live on an
    accelerator; not on a CPU run, where torch 2.13's FSDP1 offload of CPU tensors crashes (segfault in clone)."""
    offload = run.accelerator.device.type != "cpu"
    return get_model_state_dict(run.model, options=StateDictOptions(full_state_dict=True, cpu_offload=offload))


def _full_model(mcfg: Any, state_dict: dict) -> Any:
    """A plain model holding gathered FSDP weights, built without drawing from the run's random stream."""
    with torch.random.fork_rng(devices=[]):
        model = MaskedAutoencoder(mcfg)
    model.load_state_dict(state_dict)
    return model


def _summary(cfg: TrainConfig, step: int, loss: float | None, ckpt: str | None, world: int, resumed: bool,
             log_: RunLog | None = None) -> dict[str, Any]:
    return {"loss": loss, "step": step, "checkpoint": f"{ckpt}/{MODEL_DIR}" if ckpt else None, "checkpoint_dir": ckpt,
            "log": str(_log_path(cfg)), "world_size": world, "resumed": resumed,
            "skipped_samples": log_.skipped if log_ else None, "images_per_s": log_.images_per_s if log_ else None}


def train(cfg: TrainConfig, on_step: Callable[[int, dict[str, Any]], bool | None] | None = None) -> dict[str, Any]:
    """Run (or resume) pretraining; return a summary with ``loss``, ``step`` and ``checkpoint`` (model folder).

    ``on_step(step, record)`` runs after each step (and its checkpoint, when one is due); returning True stops
    the run there, as an interruption would (tests, notebooks)."""
    check_config(cfg)
    accelerator = make_accelerator(cfg)
    resume = find_resume(cfg)
    _check_layout(resume, accelerator)
    if resume.state is not None and resume.step >= cfg.steps:
        log.info("%s finished already at step %d; nothing to do (raise --steps to train on)", cfg.out, resume.step)
        return _summary(cfg, resume.step, resume.loss, resume.url, accelerator.num_processes, resumed=True)
    if accelerator.is_main_process:
        write_run_config(cfg)
    run = setup(cfg, accelerator, resume)
    run_log = RunLog(run, resume.step)
    step, loss, ckpt, bad_in_row = resume.step, resume.loss, resume.url, 0
    run.model.train()
    while step < cfg.steps:
        step += 1
        result = train_step(run)
        bad_in_row = 0 if result.loss is not None else bad_in_row + 1
        loss = result.loss if result.loss is not None else loss
        record = run_log.step(step, result, loss, bad_in_row)
        if bad_in_row >= cfg.max_bad_steps:
            run_log.close()
            raise NonFiniteLossError(f"stopped at step {step}: {bad_in_row} non-finite losses in a row; "
                                     f"last complete checkpoint: {ckpt}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            ckpt = save(run, step, loss)
            run_log.sync()
        if on_step is not None and on_step(step, record):
            break
    run_log.close()
    accelerator.wait_for_everyone()
    return _summary(cfg, step, loss, ckpt, run.world, resume.state is not None, run_log)


# --------------------------------------------------------------------------- CLI
def run_command(args: argparse.Namespace) -> int:
    """``ofa train``: ``args`` holds ``TrainConfig``'s options; failures reach ``pipeline.errors`` (one line, an
    exit code per kind)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = train(build(TrainConfig, vars(args)))
    if summary.get("world_size", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0

