"""``ofa model info`` (a configuration's parameter counts, or what a checkpoint says about itself) and
``ofa model export`` (timm weights, or a Hugging Face Hub folder with a model card): their options
(``InfoOptions``, ``ExportOptions``: the ``ofa`` command builds flags, ``--config`` keys and environment
variables from the documented fields) and what they run. Light to import."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Literal


Size = Literal["tiny", "small", "base", "large"]


@dataclass
class InfoOptions:
    """Without --checkpoint: build a configuration (on the meta device, no memory) and print its parameter counts:
    backbone (blocks + final norm), embeddings, decoder (with heads), total. With --checkpoint: print its
    configuration, per sensor the bands, wavelengths, GSD and normalisation, and its training data."""

    checkpoint: str | None = field(default=None, metadata={"metavar": "URL"})
    """a saved model, a training run folder (its last complete checkpoint), a step-NNNNNNNN folder or its model/
    folder (local, file:// or s3://)"""
    size: Size = "base"
    """backbone size"""
    embedding: Literal["ofa", "wavelength"] = "ofa"
    """per-modality (ofa) or wavelength-conditioned patch embedding"""
    img_size: int = 224
    """input size in pixels"""
    patch_size: int = 16
    """patch size in pixels"""
    storage_options: dict | None = None
    """fsspec options for s3:// URLs, as JSON"""
    json: bool = False
    """print one JSON object instead of a table"""


@dataclass
class ExportOptions:
    """timm: model.safetensors under timm's ViT names + timm's config.json, for timm.create_model('local-dir:OUT',
    pretrained=True), or timm.create_model('vit_SIZE_patch16_224', **model_args) with load_state_dict(strict=True)
    (model_args: patch_size, img_size, in_chans, class_token=False, global_pool='avg', fc_norm=False, num_classes=0);
    without --sensor one folder per sensor, OUT/SENSOR. hf: the checkpoint with config.json and a model card
    (README.md with YAML metadata), ready for huggingface_hub's upload_folder. Both also write mlm-item.json, the
    model as a STAC Item (Machine Learning Model extension v1.4)."""

    checkpoint: str = field(metadata={"metavar": "URL"})
    """a saved model, a training run folder (its last complete checkpoint), a step-NNNNNNNN folder or its model/
    folder (local, file:// or s3://)"""
    format: Literal["timm", "hf"] = field()
    """timm weights or a Hub folder"""
    out: str = field(metadata={"metavar": "DIR"})
    """output folder"""
    sensor: str | None = None
    """timm: the sensor whose patch embedding to export into OUT (default: every sensor, each into OUT/SENSOR)"""
    geobench: str | None = field(default=None, metadata={"metavar": "FILE.md"})
    """hf: a geobench_results.md from ofa eval geobench for the card"""
    license: str = "apache-2.0"
    """hf: licence id for the card"""
    storage_options: dict | None = None
    """fsspec options for s3:// URLs, as JSON"""


def _check_export(args: argparse.Namespace) -> None:
    """A ``ValueError`` naming the options ``ofa model export`` needs that were not given."""
    missing = [f"--{k}" for k in ("checkpoint", "format", "out") if getattr(args, k, None) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")


def model_info(size: str, embedding: str, img_size: int = 224, patch_size: int = 16) -> dict:
    """Parameter counts and settings of a configuration, built without allocating weights."""
    from .config import ModelConfig

    return config_info(ModelConfig(size=size, embedding=embedding, img_size=img_size, patch_size=patch_size))


def config_info(cfg) -> dict:
    """Parameter counts and settings of a ``ModelConfig``, built on the meta device."""
    import torch

    from .flops import flops_per_image
    from .mae import MaskedAutoencoder

    with torch.device("meta"):
        mae = MaskedAutoencoder(cfg)
    info: dict = {"size": cfg.size, "embedding": cfg.embedding}
    info.update(mae.parameter_counts())
    info.update({
        "modalities": list(cfg.modalities),
        "depth": cfg.depth, "embed_dim": cfg.embed_dim, "num_heads": cfg.num_heads,
        "decoder_depth": cfg.decoder_depth, "decoder_dim": cfg.decoder_dim,
        "img_size": cfg.img_size, "patch_size": cfg.patch_size,
        "train_gflops_per_image": round(flops_per_image(cfg) / 1e9, 3),
    })
    return info


def _print_counts(info: dict) -> None:
    print(f"OFA-Net {info['size']} ({info['embedding']} embedding): depth {info['depth']}, "
          f"width {info['embed_dim']}, {info['num_heads']} heads; decoder {info['decoder_depth']} x {info['decoder_dim']}; "
          f"{info['img_size']} px, patch {info['patch_size']}")
    for key in ("backbone", "embeddings", "decoder", "total"):
        print(f"  {key:<11}{info[key]:>14,d}  ({info[key] / 1e6:.2f}M)")
    print(f"  modalities {', '.join(info['modalities'])}")
    print(f"  training FLOPs per image (first modality): {info['train_gflops_per_image']} GFLOP")


def _print_checkpoint(doc: dict) -> None:
    sensors = doc.get("sensors") or {}
    if not sensors:
        print("  no sensor facts (a checkpoint not written by ofa train); channels per modality: "
              + ", ".join(f"{k} {v}" for k, v in doc["config"]["modalities"].items()))
    for name, s in sorted(sensors.items()):
        print(f"  {name}: {len(s['bands'])} bands; input = (raw * scale + offset - mean) / std, nodata -> 0")
        print(f"    {'band':<8}{'um':>8}{'gsd m':>8}{'scale':>11}{'offset':>9}{'mean':>12}{'std':>12}")
        for i, band in enumerate(s["bands"]):
            vals = [s.get(k, [None] * len(s["bands"]))[i] for k in ("wavelengths", "gsd", "scale", "offset", "mean", "std")]
            text = ["-" if v is None else f"{v:g}" for v in vals]
            print(f"    {band:<8}{text[0]:>8}{text[1]:>8}{text[2]:>11}{text[3]:>9}{text[4]:>12}{text[5]:>12}")
    for d in (doc.get("training") or {}).get("data", []):
        print(f"  trained on {d['url']} ({d.get('samples')} samples, manifest sha256 {d.get('manifest_sha256')})")


def run_info(args: argparse.Namespace) -> int:
    """``ofa model info``: errors reach the ``ofa`` command's one-line handler."""
    from .config import ModelConfig
    from .io import model_url, read_info

    if not args.checkpoint:
        info = model_info(args.size, args.embedding, args.img_size, args.patch_size)
        if args.json:
            print(json.dumps(info))
        else:
            _print_counts(info)
        return 0
    storage = args.storage_options
    url = model_url(args.checkpoint, storage)
    doc = read_info(url, storage)
    info = config_info(ModelConfig.from_dict(doc["config"]))
    if args.json:
        print(json.dumps({**doc, "checkpoint": url, "parameters": {k: info[k] for k in ("backbone", "embeddings",
                                                                                     "decoder", "total")}}))
        return 0
    print(f"checkpoint {url}")
    _print_counts(info)
    _print_checkpoint(doc)
    return 0


def run_export(args: argparse.Namespace) -> int:
    """``ofa model export``."""
    from pathlib import Path

    from .export import export_hf, export_timm
    from .io import model_url

    _check_export(args)
    storage = args.storage_options
    url = model_url(args.checkpoint, storage)
    if args.format == "timm":
        if args.geobench:
            raise ValueError("--geobench goes with --format hf")
        written = export_timm(url, args.out, args.sensor, storage)
    else:
        if args.sensor:
            raise ValueError("--sensor goes with --format timm (hf exports every sensor)")
        try:
            table = Path(args.geobench).read_text() if args.geobench else None
        except OSError as exc:
            raise ValueError(f"--geobench {args.geobench}: {exc.strerror or exc}") from None
        written = export_hf(url, args.out, table, args.license, storage)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0
