"""One embedding job: plan, encode region by region, write, finish; in one or several processes.

Processes come from ``accelerate launch`` (one per GPU, or ``--cpu``): each loads the model once on its
device and takes the regions ``index % world_size == rank`` of the fixed plan that are not done yet;
the main process writes the store's metadata first and finishes it (and the preview) last.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from .encode import Encoder, check_fit, encode_region
from .killpoint import kill_point
from .plan import Plan, make_plan, region_samples
from .storage import Target

FORMATS = ("zarr", "geoparquet")
#: bump when the same inputs would give other bytes (layout, decoding, pooling)
LAYOUT_VERSION = 1


@dataclass
class EmbedConfig:
    """What ``ofa embed`` does; see ``pipeline.embed.cli`` for the options."""

    checkpoint: str
    data: list[str]
    out: str
    format: str = "zarr"
    pool: str = "mean"
    batch_size: int = 64
    chunk_size: int = 1024
    storage_options: dict[str, Any] | None = None
    cpu: bool = False
    preview: str | None = ""   # "" = OUT.preview.png, None = no preview
    progress: bool = True
    threads: int | None = None  # CPU budget for torch (pipeline.threads), set by the command before torch loads


def preview_url(cfg: EmbedConfig) -> str | None:
    """Where the PNG goes: ``--preview``, or ``OUT.preview.png`` beside OUT."""
    if cfg.preview is None or cfg.preview:
        return cfg.preview
    return f"{cfg.out.rstrip('/')}.preview.png"


def _sha256(url: str, storage_options: dict[str, Any] | None) -> str:
    data = Target(url, storage_options)
    return hashlib.sha256(data.fs.cat_file(data.root)).hexdigest()


def job_attrs(cfg: EmbedConfig, model_url: str, model_config: Any, dim: int) -> dict[str, Any]:
    """What the output records about its making (attributes), including the fingerprint that a resumed
    or repeated job must match: weights, model config, manifests and every option that changes bits."""
    from ofa.ingest.contract import MANIFEST_NAME
    from ofa.model.io import WEIGHTS_NAME
    from ofa.ingest.version import package_version

    so = cfg.storage_options
    manifests = {url: _sha256(f"{url.rstrip('/')}/{MANIFEST_NAME}", so) for url in cfg.data}
    weights = _sha256(f"{model_url}/{WEIGHTS_NAME}", so)
    config = json.dumps(model_config.to_dict(), sort_keys=True)
    key = {"layout": LAYOUT_VERSION, "weights": weights, "config": config, "manifests": list(manifests.items()),
           "pool": cfg.pool, "batch_size": cfg.batch_size, "chunk_size": cfg.chunk_size, "format": cfg.format}
    return {
        "title": "ofa embed: one pooled encoder vector per sample",
        "checkpoint": cfg.checkpoint, "model_dir": model_url, "model_sha256": weights, "model_config": config,
        "embedding_dim": dim, "pool": cfg.pool, "img_size": model_config.img_size,
        "data": json.dumps(cfg.data), "manifests_sha256": json.dumps(manifests, sort_keys=True),
        "software": json.dumps({"ofa": package_version()}), "layout_version": LAYOUT_VERSION,
        "ofa_embed_fingerprint": hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest(),
    }


def make_writer(cfg: EmbedConfig, plan: Plan, dim: int, attrs: dict[str, Any]) -> Any:
    """The writer of ``cfg.format`` at ``cfg.out``."""
    if cfg.format == "zarr":
        from .zarr_out import ZarrWriter

        return ZarrWriter(cfg.out, cfg.storage_options, plan, dim, cfg.chunk_size, attrs)
    if cfg.format == "geoparquet":
        from .parquet_out import ParquetWriter

        return ParquetWriter(cfg.out, cfg.storage_options, plan, dim, attrs)
    raise ValueError(f"--format {cfg.format}: expected one of {list(FORMATS)}")


def write_preview(cfg: EmbedConfig, writer: Any, plan: Plan) -> str | None:
    """Render the PCA map of the written output to ``preview_url(cfg)``."""
    from .preview import MAX_POINTS, render

    url = preview_url(cfg)
    if url is None or plan.total == 0:
        return None
    step = max(1, math.ceil(plan.total / MAX_POINTS))
    png = render(writer.preview_rows(step), title=f"{cfg.out}: PCA of {plan.total} embeddings")
    target = Target(url, cfg.storage_options)
    target.put(target.root, png)
    return url


def _setup(cfg: EmbedConfig) -> tuple[Any, Encoder, Plan, Any]:
    """Processes, model, plan and writer; every check that can refuse the job runs here, in each process."""
    from accelerate import PartialState

    from ofa.model import from_pretrained
    from ofa.pipeline.checkpoint import model_dir
    from ofa.pipeline.data import read_streams

    if cfg.batch_size <= 0:
        raise ValueError(f"--batch-size {cfg.batch_size}: must be positive")
    state = PartialState(cpu=cfg.cpu)
    model_url = model_dir(cfg.checkpoint, cfg.storage_options)
    streams = read_streams(cfg.data, cfg.storage_options)
    model = from_pretrained(model_url, cfg.storage_options)
    check_fit(model.config, streams, cfg.checkpoint)
    encoder = Encoder(model, state.device, cfg.pool)
    plan = make_plan(streams, cfg.chunk_size)
    writer = make_writer(cfg, plan, encoder.dim, job_attrs(cfg, model_url, model.config, encoder.dim))
    return state, encoder, plan, writer


def run_embed(cfg: EmbedConfig) -> dict[str, Any]:
    """Run (or resume, or confirm done) an embedding job; return a summary."""
    from tqdm import tqdm

    state, encoder, plan, writer = _setup(cfg)
    summary = {"out": cfg.out, "format": cfg.format, "samples": plan.total, "regions": len(plan.regions),
               "dim": encoder.dim, "processes": state.num_processes}
    status = writer.status()  # every process: a refusal stops them all before any barrier
    if status == "done":
        if state.is_main_process:
            writer.cleanup()
        return {**summary, "status": "already done", "encoded": 0}
    state.wait_for_everyone()
    if state.is_main_process and status == "new":
        writer.create()
    state.wait_for_everyone()
    done = writer.done()
    mine = [r for r in plan.regions if r.index % state.num_processes == state.process_index and r.index not in done]
    bar = tqdm(total=sum(r.size for r in mine), unit="sample", desc="embed", file=sys.stderr,
               disable=not (cfg.progress and state.is_main_process))
    for region in mine:
        cols = encode_region(encoder, region_samples(plan, region, cfg.storage_options), cfg.batch_size, bar)
        writer.write(region, cols)
        kill_point("region")
    bar.close()
    state.wait_for_everyone()
    preview = None
    if state.is_main_process:
        writer.finish()
        preview = write_preview(cfg, writer, plan)
    state.wait_for_everyone()
    return {**summary, "status": "resumed" if done else "written", "encoded": sum(r.size for r in mine),
            "skipped_regions": len(done), "preview": preview}
