"""The model card (``README.md`` with YAML front matter) of a Hugging Face Hub export."""
from __future__ import annotations

from typing import Any

import yaml

from .config import ModelConfig


def front_matter(info: dict[str, Any], license: str, geobench: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Hub metadata: licence, tags, the sensors with their bands, the training data's manifest hashes."""
    cfg = ModelConfig.from_dict(info["config"])
    sensors = info.get("sensors") or {}
    meta: dict[str, Any] = {
        "license": license,
        "library_name": "pytorch",
        "pipeline_tag": "image-feature-extraction",
        "tags": ["earth-observation", "remote-sensing", "satellite-imagery", "masked-autoencoder", "vision-transformer",
                 "ofa-net", f"vit-{cfg.size}", f"{cfg.embedding}-embedding", *sorted(cfg.modalities)],
        "model": {"size": cfg.size, "embedding": cfg.embedding, "img_size": cfg.img_size, "patch_size": cfg.patch_size,
                  "embed_dim": cfg.embed_dim, "depth": cfg.depth},
        "sensors": {name: {"bands": s.get("bands"), "wavelengths_um": s.get("wavelengths"), "gsd_m": s.get("gsd")}
                    for name, s in sorted(sensors.items())}
        or {name: {"channels": c} for name, c in sorted(cfg.modalities.items())},
        "training_data": [{"url": d.get("url"), "manifest_sha256": d.get("manifest_sha256"), "samples": d.get("samples")}
                          for d in (info.get("training") or {}).get("data", [])],
    }
    if geobench:
        meta["geobench"] = geobench
    return meta


def _sensor_table(sensors: dict[str, Any]) -> list[str]:
    lines = ["| sensor | band | wavelength (µm) | GSD (m) | scale | offset | mean | std |", "|---|---|---|---|---|---|---|---|"]
    for name, s in sorted(sensors.items()):
        for i, band in enumerate(s.get("bands", [])):
            row = [s.get(k, [None] * (i + 1))[i] for k in ("wavelengths", "gsd", "scale", "offset", "mean", "std")]
            lines.append(f"| {name} | {band} | " + " | ".join("" if v is None else f"{v:g}" for v in row) + " |")
    return lines


def parse_geobench_markdown(text: str) -> list[dict[str, Any]]:
    """Rows of a ``geobench_results.md`` table (as ``ofa eval geobench`` writes it) as dicts of strings."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.strip().startswith("|")]
    if len(rows) < 2:
        return []
    header = [h.strip() for h in rows[0]]
    return [dict(zip(header, (c.strip() for c in r))) for r in rows[2:] if len(r) == len(header)]


def model_card(info: dict[str, Any], geobench_markdown: str | None, license: str, ofa_version: str) -> str:
    """``README.md``: YAML front matter, then how to load and feed the model, its sensors and data, GEO-Bench."""
    cfg = ModelConfig.from_dict(info["config"])
    sensors = info.get("sensors") or {}
    meta = front_matter(info, license, parse_geobench_markdown(geobench_markdown) if geobench_markdown else None)
    body = [f"# OFA-Net ViT-{cfg.size} ({cfg.embedding} embedding)", "",
            f"One shared ViT-{cfg.size}/{cfg.patch_size} backbone with per-sensor patch embeddings, pretrained as a "
            f"masked autoencoder at {cfg.img_size} px on {', '.join(sorted(cfg.modalities))}. Exported by ofa {ofa_version}.",
            "", "## Use", "", "```python", "from model import from_pretrained, read_info, normalise",
            "mae = from_pretrained(\"THIS_FOLDER\")", "facts = read_info(\"THIS_FOLDER\")[\"sensors\"][\"SENSOR\"]",
            "x = normalise(raw_pixels, facts)          # [N, C, H, W] native dtype, bands in the order below",
            "tokens, pooled = mae.encode(x, modality=\"SENSOR\")", "```", ""]
    if sensors:
        body += ["## Sensors and normalisation", "", "Model input per band: `(raw * scale + offset - mean) / std`; "
                 "no-data pixels are 0. Bands in channel order:", "", *_sensor_table(sensors), ""]
    data = (info.get("training") or {}).get("data", [])
    if data:
        body += ["## Training data", "", "| dataset | manifest sha256 | samples | collections |", "|---|---|---|---|"]
        body += [f"| {d.get('url')} | `{d.get('manifest_sha256')}` | {d.get('samples')} | "
                 f"{', '.join(d.get('collections') or [])} |" for d in data]
        body.append("")
    if geobench_markdown:
        body += ["## GEO-Bench", "", geobench_markdown.strip(), ""]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)
