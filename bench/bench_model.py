"""Forward+backward throughput of the OFA-Net MAE (not a test).

CPU (default when no GPU): tiny config, float32, images/s.
CUDA: MAE ViT-B/16 at 224, bf16 autocast, images/s and model-FLOPs utilisation (MFU) against a
dense bf16 peak (default 989 TFLOP/s, H100 SXM), next to timm's ``vit_base_patch16_224``
forward+backward in the same run when timm is installed (timm is imported only here).

    python bench/bench_model.py                      # CPU tiny
    python bench/bench_model.py --device cuda        # H100: MAE-B/16 vs timm ViT-B/16
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ofa.model import MaskedAutoencoder, ModelConfig, flops_per_image
from ofa.model.flops import _transformer_flops


def timed(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per step after ``warmup`` untimed steps."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def bench_mae(args: argparse.Namespace, device: torch.device) -> dict:
    wavelengths = [0.4 + 0.1 * i for i in range(args.channels)]
    cfg = ModelConfig(size=args.size, embedding=args.embedding, img_size=args.img_size, patch_size=16,
                      modalities={"bench": args.channels}, mask_ratio=args.mask_ratio,
                      wavelengths={"bench": wavelengths})
    mae = MaskedAutoencoder(cfg).to(device)
    run = torch.compile(mae) if args.compile else mae
    x = torch.randn(args.batch, args.channels, args.img_size, args.img_size, device=device)
    dtype = torch.bfloat16 if args.bf16 else torch.float32

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=args.bf16):
            loss = run(x, modality="bench").loss
        loss.backward()
        mae.zero_grad(set_to_none=True)

    sec = timed(step, args.warmup, args.steps, device)
    flops = flops_per_image(cfg)
    return {"model": f"MAE-{args.size}/16 ({args.embedding}, mask {args.mask_ratio})", "images_per_s": args.batch / sec,
            "train_gflops_per_image": flops / 1e9, "tflops_per_s": args.batch * flops / sec / 1e12}


def bench_timm(args: argparse.Namespace, device: torch.device) -> dict | None:
    try:
        import timm  # only the benchmark touches timm
    except ImportError:
        return None
    net = timm.create_model("vit_base_patch16_224", in_chans=args.channels).to(device)
    run = torch.compile(net) if args.compile else net
    x = torch.randn(args.batch, args.channels, 224, 224, device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = run(x)
        out.float().sum().backward()
        net.zero_grad(set_to_none=True)

    sec = timed(step, args.warmup, args.steps, device)
    fwd = 2.0 * 196 * args.channels * 256 * 768 + _transformer_flops(197, 768, 12, 4.0) + 2.0 * 768 * 1000
    return {"model": "timm vit_base_patch16_224", "images_per_s": args.batch / sec,
            "train_gflops_per_image": 3 * fwd / 1e9, "tflops_per_s": args.batch * 3 * fwd / sec / 1e12}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--size", default=None, help="model size (default: tiny on CPU, base on CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 8 CPU, 256 CUDA)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--embedding", choices=["ofa", "wavelength"], default="ofa")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--channels", type=int, default=3, help="input channels (3 matches timm's ViT-B)")
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 5 CPU, 30 CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 2 CPU, 10 CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak for MFU (H100: 989)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.size = args.size or ("base" if gpu else "tiny")
    args.batch = args.batch or (256 if gpu else 8)
    args.steps = args.steps or (30 if gpu else 5)
    args.warmup = args.warmup or (10 if gpu else 2)
    args.bf16 = gpu
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    results = [bench_mae(args, device)]
    if gpu:
        ref = bench_timm(args, device)
        if ref:
            results.append(ref)
        for r in results:
            r["mfu"] = r["tflops_per_s"] / args.peak_tflops
    report = {"device": name, "torch": torch.__version__, "batch": args.batch, "img_size": args.img_size,
              "channels": args.channels, "dtype": "bf16" if args.bf16 else "fp32", "compile": args.compile,
              "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{name} | torch {torch.__version__} | batch {args.batch} | {args.img_size}px | {args.channels} ch | "
          f"{report['dtype']}{' | compiled' if args.compile else ''}")
    for r in results:
        mfu = f"  MFU {100 * r['mfu']:.1f}%" if "mfu" in r else ""
        print(f"  {r['model']:<36} {r['images_per_s']:>9.1f} images/s  {r['tflops_per_s']:.3f} TFLOP/s{mfu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
