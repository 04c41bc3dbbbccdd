"""``ofa model info``: parameter counts of a model configuration."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ofa model`` and its ``info`` subcommand."""
    model = subparsers.add_parser("model", help="inspect OFA-Net model configurations",
                                  description="Inspect OFA-Net model configurations.")
    sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    info = sub.add_parser("info", help="print parameter counts of a configuration",
                          description="Build a configuration (on the meta device, no memory) and print "
                                      "its parameter counts: backbone (blocks + final norm), embeddings, "
                                      "decoder (with heads), total.")
    info.add_argument("--size", choices=["tiny", "small", "base", "large"], default="base",
                      help="backbone size (default: base)")
    info.add_argument("--embedding", choices=["ofa", "wavelength"], default="ofa",
                      help="per-modality (ofa) or wavelength-conditioned patch embedding (default: ofa)")
    info.add_argument("--img-size", type=int, default=224, help="input size in pixels (default: 224)")
    info.add_argument("--patch-size", type=int, default=16, help="patch size in pixels (default: 16)")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.set_defaults(func=run_info)
    model.set_defaults(func=lambda args: (model.print_help(), 2)[1])


def model_info(size: str, embedding: str, img_size: int = 224, patch_size: int = 16) -> dict:
    """Parameter counts and settings of a configuration, built without allocating weights."""
    import torch

    from .config import ModelConfig
    from .flops import flops_per_image
    from .mae import MaskedAutoencoder

    cfg = ModelConfig(size=size, embedding=embedding, img_size=img_size, patch_size=patch_size)
    with torch.device("meta"):
        mae = MaskedAutoencoder(cfg)
    info: dict = {"size": size, "embedding": embedding}
    info.update(mae.parameter_counts())
    info.update({
        "modalities": list(cfg.modalities),
        "depth": cfg.depth, "embed_dim": cfg.embed_dim, "num_heads": cfg.num_heads,
        "decoder_depth": cfg.decoder_depth, "decoder_dim": cfg.decoder_dim,
        "img_size": img_size, "patch_size": patch_size,
        "train_gflops_per_image": round(flops_per_image(cfg) / 1e9, 3),
    })
    return info


def run_info(args: argparse.Namespace) -> int:
    try:
        info = model_info(args.size, args.embedding, args.img_size, args.patch_size)
    except ValueError as exc:
        print(f"ofa model info: {exc}")
        return 2
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"OFA-Net {info['size']} ({info['embedding']} embedding): depth {info['depth']}, "
          f"width {info['embed_dim']}, {info['num_heads']} heads; decoder {info['decoder_depth']} x {info['decoder_dim']}")
    for key in ("backbone", "embeddings", "decoder", "total"):
        print(f"  {key:<11}{info[key]:>14,d}  ({info[key] / 1e6:.2f}M)")
    print(f"  modalities {', '.join(info['modalities'])}")
    print(f"  training FLOPs per image (first modality): {info['train_gflops_per_image']} GFLOP")
    return 0
