"""``ofa model info`` (a configuration's parameter counts, or what a checkpoint says about itself) and
``ofa model export`` (timm weights, or a Hugging Face Hub folder with a model card)."""
from __future__ import annotations

import argparse
import json


def _storage(args: argparse.Namespace) -> dict | None:
    """``--storage-options`` as a dict (a bad value is a usage error naming the option)."""
    text = args.storage_options
    value = None
    if text:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--storage-options {text!r}: not valid JSON ({exc})") from None
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"--storage-options {text!r}: expected a JSON object")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ofa model`` with its ``info`` and ``export`` subcommands."""
    model = subparsers.add_parser("model", help="inspect and export OFA-Net models",
                                  description="Inspect OFA-Net configurations and checkpoints; export checkpoints.")
    sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    info = sub.add_parser("info", help="parameter counts of a configuration, or what a checkpoint says about itself",
                          description="Without --checkpoint: build a configuration (on the meta device, no memory) "
                                      "and print its parameter counts: backbone (blocks + final norm), embeddings, "
                                      "decoder (with heads), total. With --checkpoint: print its configuration, per "
                                      "sensor the bands, wavelengths, GSD and normalisation, and its training data.")
    info.add_argument("--checkpoint", metavar="URL", help="a saved model, a training run folder (its last complete "
                                                          "checkpoint), a step-NNNNNNNN folder or its model/ folder "
                                                          "(local, file:// or s3://)")
    info.add_argument("--size", choices=["tiny", "small", "base", "large"], default="base",
                      help="backbone size (default: base)")
    info.add_argument("--embedding", choices=["ofa", "wavelength"], default="ofa",
                      help="per-modality (ofa) or wavelength-conditioned patch embedding (default: ofa)")
    info.add_argument("--img-size", type=int, default=224, help="input size in pixels (default: 224)")
    info.add_argument("--patch-size", type=int, default=16, help="patch size in pixels (default: 16)")
    info.add_argument("--storage-options", metavar="JSON", help="fsspec options for s3:// URLs")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.set_defaults(func=run_info)
    _register_export(sub)
    model.set_defaults(func=lambda args: (model.print_help(), 2)[1])


def _register_export(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="write a checkpoint as timm weights or a Hugging Face Hub folder",
                        description="timm: model.safetensors under timm's ViT names + timm's config.json, for "
                                    "timm.create_model('local-dir:OUT', pretrained=True), or "
                                    "timm.create_model('vit_SIZE_patch16_224', **model_args) with "
                                    "load_state_dict(strict=True) (model_args: patch_size, img_size, in_chans, "
                                    "class_token=False, global_pool='avg', fc_norm=False, num_classes=0); without "
                                    "--sensor one folder per sensor, OUT/SENSOR. "
                                    "hf: the checkpoint with config.json and a model card (README.md with YAML "
                                    "metadata), ready for huggingface_hub's upload_folder. Both also write "
                                    "mlm-item.json, the model as a STAC Item (Machine Learning Model extension v1.4).")
    ex.add_argument("--checkpoint", required=True, metavar="URL",
                    help="a saved model, a training run folder (its last complete checkpoint), a step-NNNNNNNN "
                         "folder or its model/ folder (local, file:// or s3://)")
    ex.add_argument("--format", required=True, choices=["timm", "hf"], help="timm weights or a Hub folder")
    ex.add_argument("--out", required=True, metavar="DIR", help="output folder")
    ex.add_argument("--sensor", help="timm: the sensor whose patch embedding to export into OUT (default: every "
                                     "sensor, each into OUT/SENSOR)")
    ex.add_argument("--geobench", metavar="FILE.md", help="hf: a geobench_results.md from ofa eval geobench for the card")
    ex.add_argument("--license", default="apache-2.0", help="hf: licence id for the card (default: apache-2.0)")
    ex.add_argument("--storage-options", metavar="JSON", help="fsspec options for s3:// URLs")
    ex.set_defaults(func=run_export)


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
    storage = _storage(args)
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

    storage = _storage(args)
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
