"""``ofa train`` / ``accelerate launch -m pipeline.train``: MAE pretraining on streamed shards.

AdamW with linear warmup + cosine decay, learning rate scaled by the global batch
(``lr * global_batch / 256``), bf16/fp16 autocast, gradient accumulation, clipping, optional
``torch.compile``. Every step appends a JSON line (step, loss, lr, images/s, MFU, data-wait
share, world size) to ``OUT/log.jsonl`` and TensorBoard scalars to ``OUT/tensorboard``.
Checkpoints (model + optimiser, scheduler, RNG states, data position, step) go atomically to
``OUT/checkpoints/step-NNNNNNNN`` (a folder or ``s3://``); ``--resume auto`` continues from the
last complete one and reproduces the uninterrupted run exactly. A non-finite loss skips the
optimiser step; ``max_bad_steps`` of them in a row stop the run (checkpoints stay intact).
Any option can also come from ``--config FILE.yaml`` (keys = option names); flags win.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("ofa.train")

#: dense bf16 peak FLOP/s per device for MFU, by substring of the CUDA device name
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12, "V100": 125e12}


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row."""


@dataclass
class TrainConfig:
    """Everything a pretraining run needs; field names double as CLI options and YAML keys."""

    data: list[str] = field(default_factory=list)
    out: str = "ofa-train"
    size: str = "base"
    embedding: str = "ofa"
    steps: int = 1000
    batch_size: int = 64  # per process and micro-step
    img_size: int = 224
    patch_size: int = 16
    mask_ratio: float = 0.75
    seed: int = 0
    save_every: int = 500
    resume: str = "auto"  # "auto", "none" or a checkpoint URL
    cpu: bool = False
    storage_options: dict[str, Any] | None = None
    lr: float = 1.5e-4  # per 256 images of global batch
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.05
    warmup_steps: int | None = None  # default: 5 % of steps
    grad_accum: int = 1
    clip: float = 1.0
    mixed_precision: str | None = None  # no | bf16 | fp16; None: what accelerate launch / its config says
    compile: bool = False
    workers: int = 0
    device_augment: bool = False  # workers ship native-dtype pixels; normalise/crop on the accelerator
    shuffle_buffer: int = 256
    resampled: bool = False
    weights: dict[str, float] | None = None
    dataset_weights: list[float] | None = None
    max_bad_steps: int = 5
    tensorboard: bool = True
    plot_every: int = 0  # reconstruction PNG every N steps (0: never)
    peak_tflops: float | None = None  # per device, for MFU (default: known GPUs only)
    log_dir: str | None = None  # where log.jsonl goes when OUT is remote (default ./ofa-logs)
    stop_after: int | None = None  # stop (as if interrupted) after this step; for tests
    debug_nan_steps: list[int] = field(default_factory=list)  # steps whose loss is forced to NaN; for tests


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
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_FLOPS.items():
            if key in name:
                return value
    return None


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _log_path(cfg: TrainConfig) -> Path:
    if _is_remote(cfg.out):
        return Path(cfg.log_dir or "ofa-logs") / "log.jsonl"
    return Path(cfg.out.removeprefix("file://")) / "log.jsonl"


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


def _rank_optimizer_name(step: int, rank: int) -> str:
    from pipeline.checkpoint import checkpoint_name

    return f"checkpoints/{checkpoint_name(step)}-optimizer/rank-{rank:05d}.pt"


def _save_rank_optimizer(cfg: TrainConfig, step: int, rank: int, optimizer: Any, so: dict | None) -> None:
    """FSDP: each rank writes its optimiser shard next to (not inside) the checkpoint folder, before the marker."""
    import io

    import torch

    from ingest.storage import get_fs, join

    fs, root = get_fs(cfg.out, so)
    path = join(root, _rank_optimizer_name(step, rank))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    buf = io.BytesIO()
    torch.save(optimizer.state_dict(), buf)
    with fs.open(path, "wb") as f:
        f.write(buf.getvalue())


def _load_rank_optimizer(ckpt_url: str, rank: int, so: dict | None) -> dict:
    import io

    import torch

    from ingest.storage import get_fs

    base, name = ckpt_url.rstrip("/").rsplit("/", 1)
    fs, root = get_fs(f"{base}/{name}-optimizer/rank-{rank:05d}.pt", so)
    with fs.open(root, "rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) pretraining; return a summary with ``loss``, ``step`` and ``checkpoint`` (model folder)."""
    import numpy as np
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    from model import MaskedAutoencoder, ModelConfig, flops_per_image
    from pipeline.checkpoint import MODEL_DIR, latest_checkpoint, load_state, rng_state, save_checkpoint, set_rng_state
    from pipeline.data import LoaderConfig, batches, make_loader, modalities, read_streams, to_device

    if not cfg.data:
        raise ValueError("no training data: pass --data URL (or 'data:' in the config file)")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise ValueError(f"steps={cfg.steps}, batch_size={cfg.batch_size}, grad_accum={cfg.grad_accum}: must be >= 1")
    accelerator = Accelerator(
        cpu=cfg.cpu, mixed_precision=cfg.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    so = cfg.storage_options

    # ---- resume point
    start, state, ckpt_url = 0, None, None
    if cfg.resume and cfg.resume != "none":
        found = latest_checkpoint(cfg.out, so) if cfg.resume == "auto" else None
        if cfg.resume != "auto":
            ckpt_url = cfg.resume
        elif found:
            start, ckpt_url = found
        if ckpt_url:
            state = load_state(ckpt_url, so)
            start = int(state["step"])
    model_dir = f"{ckpt_url}/{MODEL_DIR}" if ckpt_url else None
    if state is not None and start >= cfg.steps:
        return {"loss": state.get("loss"), "step": start, "checkpoint": model_dir, "checkpoint_dir": ckpt_url,
                "log": str(_log_path(cfg)), "world_size": world, "resumed": True}

    # ---- model, optimiser, schedule
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    streams = read_streams(cfg.data, so)
    mcfg = ModelConfig(size=cfg.size, embedding=cfg.embedding, img_size=cfg.img_size, patch_size=cfg.patch_size,
                       modalities=modalities(streams), mask_ratio=cfg.mask_ratio)
    model = MaskedAutoencoder(mcfg)
    global_batch = cfg.batch_size * cfg.grad_accum * world
    lr = cfg.lr * global_batch / 256
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=lr, betas=(0.9, 0.95))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, cfg.steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, cfg.steps, cfg.min_lr_ratio))
    torch.manual_seed(cfg.seed * 1000 + 1 + rank)  # masking differs per rank
    if state is not None:
        from model import from_pretrained

        model.load_state_dict(from_pretrained(model_dir, so).state_dict())
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        if main:
            log.info("resuming from %s at step %d", ckpt_url, start)
    if cfg.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    sharded = accelerator.distributed_type == DistributedType.FSDP
    if state is not None:  # optimiser state after prepare (under FSDP each rank reloads its own shard)
        if state.get("sharded_optimizer"):
            optimizer.load_state_dict(_load_rank_optimizer(ckpt_url, rank, so))
        else:
            optimizer.load_state_dict(state["optimizer"])
    unwrapped = accelerator.unwrap_model(model)
    if getattr(unwrapped, "_orig_mod", None) is not None:
        unwrapped = unwrapped._orig_mod

    loader = make_loader(LoaderConfig(
        data=cfg.data, batch_size=cfg.batch_size, img_size=cfg.img_size, seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer,
        resampled=cfg.resampled, weights=cfg.weights, dataset_weights=cfg.dataset_weights, storage_options=so,
        rank=rank, world_size=world, skip_batches=start * cfg.grad_accum, device_augment=cfg.device_augment,
    ), workers=cfg.workers, streams=streams, pin_memory=accelerator.device.type == "cuda")
    it = batches(loader)

    # ---- logging
    log_path = _log_path(cfg)
    writer = None
    if main:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        _trim_log(log_path, start)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(log_path.parent / "tensorboard"))
    peak = _peak_flops(cfg, accelerator.device)
    stop_at = min(cfg.steps, cfg.stop_after) if cfg.stop_after else cfg.steps
    bad_in_row, last_loss, last_ckpt, skipped = 0, state.get("loss") if state else None, ckpt_url, 0
    ips_sum, ips_n = 0.0, 0
    from tqdm import tqdm

    bar = tqdm(total=stop_at, initial=start, desc="train", unit="step", disable=not main or not sys.stderr.isatty())
    model.train()
    for step in range(start + 1, stop_at + 1):
        t0 = time.perf_counter()
        wait, loss_sum, images, flops = 0.0, torch.zeros((), device=accelerator.device), 0, 0.0
        for micro in range(cfg.grad_accum):
            tw = time.perf_counter()
            batch = next(it)
            wait += time.perf_counter() - tw
            x = to_device(batch, accelerator.device, cfg.img_size)
            skipped = max(skipped, int(batch["skipped"]))
            sync = accelerator.no_sync(model) if micro < cfg.grad_accum - 1 and world > 1 else nullcontext()
            with sync, accelerator.autocast():
                loss = model(x, modality=batch["sensor"], band_valid=_band_valid(batch, accelerator.device)).loss
                if step in cfg.debug_nan_steps:
                    loss = loss * float("nan")
                accelerator.backward(loss / cfg.grad_accum)
            loss_sum += loss.detach().float() / cfg.grad_accum
            images += x.shape[0]
            flops += flops_per_image(mcfg, channels=x.shape[1], img_size=cfg.img_size) * x.shape[0]
        mean_loss = accelerator.reduce(loss_sum, reduction="mean")
        finite = bool(torch.isfinite(mean_loss).item())
        grad_norm = None
        if finite:
            bad_in_row = 0
            if cfg.clip and cfg.clip > 0:
                grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.clip))
            optimizer.step()
            last_loss = float(mean_loss)
        else:
            bad_in_row += 1
            if main:
                log.warning("step %d: non-finite loss, optimiser step skipped (%d in a row)", step, bad_in_row)
        optimizer.zero_grad(set_to_none=True)
        current_lr = scheduler.get_last_lr()[0]
        scheduler.step()
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        ips = images * world / dt
        ips_sum, ips_n = ips_sum + ips, ips_n + 1
        if main:
            rec: dict[str, Any] = {"step": step, "lr": current_lr, "images_per_s": round(ips, 3), "world_size": world,
                                   "data_wait": round(wait / dt, 4), "step_s": round(dt, 4), "sensor": batch["sensor"],
                                   "mfu": round(flops * world / dt / (peak * world), 5) if peak else None,
                                   "skipped_samples": skipped}
            if finite:
                rec["loss"] = last_loss
                rec["grad_norm"] = grad_norm
            else:
                rec["nonfinite_loss"] = True
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if writer is not None:
                for k in ("loss", "lr", "images_per_s", "data_wait", "mfu"):
                    if rec.get(k) is not None:
                        writer.add_scalar(f"train/{k}", rec[k], step)
            if cfg.plot_every and step % cfg.plot_every == 0:
                from pipeline.plots import plot_batch

                plot_batch(unwrapped, x[:4].float().cpu(), batch["sensor"], log_path.parent / f"reconstruction-{step:08d}.png")
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}" if last_loss is not None else "nan")
            if bar.disable and (step % max(stop_at // 20, 1) == 0 or step == stop_at):
                # no terminal (CI, batch jobs): a plain progress line about every 5 % of the run
                print(f"step {step}/{stop_at} loss {rec.get('loss', float('nan')):.4f} "
                      f"{rec['images_per_s']:.1f} img/s data-wait {rec['data_wait']:.0%}", flush=True)
        if bad_in_row >= cfg.max_bad_steps:
            bar.close()
            raise NonFiniteLossError(f"stopped at step {step}: {bad_in_row} non-finite losses in a row; "
                                     f"last complete checkpoint: {last_ckpt}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            rngs = [None] * world
            mine = rng_state()
            if world > 1:
                torch.distributed.all_gather_object(rngs, mine)
            else:
                rngs = [mine]
            to_save = unwrapped
            if sharded:  # FSDP: gathering the full weights is collective; each rank keeps its optimiser shard
                full = accelerator.get_state_dict(model)
                if main:
                    to_save = MaskedAutoencoder(mcfg)
                    to_save.load_state_dict(full)
                _save_rank_optimizer(cfg, step, rank, optimizer, so)
                accelerator.wait_for_everyone()  # every shard is written before the marker
            if main:
                train_state = {"step": step, "loss": last_loss, "optimizer": None if sharded else optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "rng": rngs, "sharded_optimizer": sharded,
                               "data": {"batches_per_rank": step * cfg.grad_accum, "seed": cfg.seed, "world_size": world}}
                last_ckpt = save_checkpoint(cfg.out, step, to_save, train_state, so)
            accelerator.wait_for_everyone()
            if not main:
                last_ckpt = latest_checkpoint(cfg.out, so)[1]
    bar.close()
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    return {"loss": last_loss, "step": stop_at, "checkpoint": f"{last_ckpt}/{MODEL_DIR}" if last_ckpt else None,
            "checkpoint_dir": last_ckpt, "log": str(log_path), "world_size": world, "skipped_samples": skipped,
            "images_per_s": ips_sum / ips_n if ips_n else None, "resumed": state is not None}


# --------------------------------------------------------------------------- CLI
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def load_yaml(path: str) -> dict[str, Any]:
    """Options from a YAML file (keys = option names, dashes or underscores)."""
    from ingest.options import load_yaml_options

    return load_yaml_options(path, _FIELDS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Training options; defaults are suppressed so the config file fills what flags do not."""
    S = argparse.SUPPRESS
    d = TrainConfig()
    p.add_argument("--config", default=S, help="YAML file of options (keys = option names); flags override it")
    p.add_argument("--data", action="append", default=S, help="dataset URL (folder, file:// or s3://); repeatable")
    p.add_argument("--out", default=S, help=f"run folder or s3:// URL for logs and checkpoints (default: {d.out})")
    p.add_argument("--size", choices=["tiny", "small", "base", "large"], default=S, help=f"backbone size (default: {d.size})")
    p.add_argument("--embedding", choices=["ofa", "wavelength"], default=S, help=f"patch embedding (default: {d.embedding})")
    p.add_argument("--steps", type=int, default=S, help=f"optimiser steps (default: {d.steps})")
    p.add_argument("--batch-size", type=int, default=S, help=f"images per process and micro-step (default: {d.batch_size})")
    p.add_argument("--img-size", type=int, default=S, help=f"crop size in pixels (default: {d.img_size})")
    p.add_argument("--patch-size", type=int, default=S, help=f"ViT patch size (default: {d.patch_size})")
    p.add_argument("--seed", type=int, default=S, help=f"random seed (default: {d.seed})")
    p.add_argument("--save-every", type=int, default=S, help=f"checkpoint every K steps (default: {d.save_every})")
    p.add_argument("--resume", default=S, help="'auto' (last complete checkpoint in --out), 'none', or a checkpoint URL")
    p.add_argument("--cpu", action="store_true", default=S, help="train on CPU even if a GPU is present")
    p.add_argument("--lr", type=float, default=S, help=f"base learning rate per 256 images (default: {d.lr})")
    p.add_argument("--weight-decay", type=float, default=S, help=f"AdamW weight decay (default: {d.weight_decay})")
    p.add_argument("--warmup-steps", type=int, default=S, help="linear warmup steps (default: 5%% of steps)")
    p.add_argument("--grad-accum", type=int, default=S, help=f"gradient accumulation micro-steps (default: {d.grad_accum})")
    p.add_argument("--clip", type=float, default=S, help=f"gradient norm clip, 0 = off (default: {d.clip})")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=S, help="autocast precision (default: accelerate launch's setting, else no)")
    p.add_argument("--compile", action="store_true", default=S, help="torch.compile the model")
    p.add_argument("--workers", type=int, default=S, help=f"loader worker processes per rank (default: {d.workers})")
    p.add_argument("--device-augment", action="store_true", default=S,
                   help="loader workers only decode; normalise/crop/flip run on the GPU (for fast GPUs)")
    p.add_argument("--shuffle-buffer", type=int, default=S, help=f"samples in each shuffle buffer (default: {d.shuffle_buffer})")
    p.add_argument("--resampled", action="store_true", default=S, help="draw shards with replacement (multi-node)")
    p.add_argument("--max-bad-steps", type=int, default=S, help=f"stop after N non-finite losses in a row (default: {d.max_bad_steps})")
    p.add_argument("--plot-every", type=int, default=S, help="reconstruction PNG every N steps (default: never)")
    p.add_argument("--peak-tflops", type=float, default=S, help="peak TFLOP/s per device for MFU (default: known GPUs)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=S, help="no TensorBoard logs")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the config file (if any) overridden by the flags given."""
    values = dict(vars(args))
    values.pop("func", None)
    values.pop("command", None)
    merged = load_yaml(values.pop("config")) if "config" in values else {}
    merged.update({k: v for k, v in values.items() if k in _FIELDS})
    return TrainConfig(**merged)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        summary = train(cfg)
    except NonFiniteLossError as exc:
        print(f"ofa train: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"ofa train: {exc}", file=sys.stderr)
        return 2
    if summary.get("world_size", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ofa train``."""
    p = subparsers.add_parser("train", help="pretrain the MAE on WebDataset shards (Accelerate)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=_run)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``accelerate launch -m pipeline.train``."""
    p = argparse.ArgumentParser(prog="pipeline.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return _run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
