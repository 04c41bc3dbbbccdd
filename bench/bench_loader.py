"""Benchmark: training-loader samples/s per worker from shards vs random COG windows read with rasterio.

One synthetic 12-band uint16 scene (smooth fields + noise, Sentinel-2-like levels) is stored twice:

- as WebDataset shards of 256 px chips (``ingest.dataset.contract`` layout, uncompressed ``pixels.npy``),
  read by ``pipeline.data`` (one DataLoader worker process; decode, scale/offset, normalise,
  random resized crop to 224, flips), from a local folder and from the local S3 server; each
  chip's meta records ``pixels_crc32`` as ``ofa ingest`` writes it, and the loader verifies every
  sample (``--no-checksum`` leaves it out, as in older rows of ``bench/RESULTS.md``, now in its git history);
- as Cloud-Optimized GeoTIFFs, one per band (as Sentinel-2 is published: DEFLATE, predictor 2,
  512 px tiles, overviews), read by the baseline in one process: a random 256 px window per
  sample, one ``read`` per band (datasets opened once), then the same normalisation and crop.

The baseline is timed twice, reading only ("read") and with the same transform as the loader
("read+transform"); the loader is timed twice too, transforming in the worker (default) and
decoding only (``--device-augment``, where the transform runs on the GPU). Ratios: loader /
baseline, locally and over S3 (GDAL ``/vsis3/`` range requests to the same server). GDAL's
block cache is kept small (``--gdal-cache-mb``) so the baseline decodes tiles as it would from an
archive larger than memory.

    python bench/bench_loader.py                        # local + S3, 2048 px scene, 64 chips
    python bench/bench_loader.py --size 4096 --seconds 20
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
WAVELENGTHS = [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19]
SCALE, OFFSET = 1e-4, -0.1


def make_scene(size: int, seed: int) -> np.ndarray:
    """[12, size, size] uint16: per-band smooth fields (bilinear upsampled noise) plus pixel noise."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, len(BANDS), size // 64, size // 64, generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
    noise = torch.rand(len(BANDS), size, size, generator=g) * 0.05
    return (1000 + (smooth + noise) * 3000).numpy().astype(np.uint16)


def write_cogs(scene: np.ndarray, folder: Path) -> list[Path]:
    """One COG per band (GDAL COG driver), in a UTM grid at 10 m."""
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for b, name in enumerate(BANDS):
        path = folder / f"{name}.tif"
        profile = dict(driver="COG", width=scene.shape[2], height=scene.shape[1], count=1, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10), nodata=0,
                       compress="DEFLATE", predictor=2, blocksize=512)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(scene[b], 1)
        paths.append(path)
    return paths


def write_shards(scene: np.ndarray, root: Path, chip: int, per_shard: int, checksum: bool = True) -> int:
    """The scene's non-overlapping chips as shards + manifest (statistics of scaled values); with ``checksum``
    each meta.json records ``pixels_crc32`` as ``ofa ingest`` writes it, so the loader verifies every sample."""
    from ofa.ingest.dataset.contract import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, pixels_checksum, sample_key, shard_path

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))

    n = scene.shape[1] // chip
    windows = [(r * chip, c * chip) for r in range(n) for c in range(n)]
    entries = []
    for s in range(0, len(windows), per_shard):
        rel = shard_path("sentinel-2", s // per_shard)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for row, col in windows[s : s + per_shard]:
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(scene[:, row : row + chip, col : col + chip]), allow_pickle=False)
                key = sample_key("bench-scene", row, col)
                meta = {"sensor": "sentinel-2", "bands": BANDS, "wavelengths": WAVELENGTHS, "gsd": 10.0,
                        "dtype": "uint16", "nodata": [0] * 12, "scale": [SCALE] * 12, "offset": [OFFSET] * 12,
                        "crs": "EPSG:32633", "window": {"row_off": row, "col_off": col, "width": chip, "height": chip}}
                if checksum:
                    meta["pixels_crc32"] = pixels_checksum(buf.getvalue())
                add(tar, f"{key}.pixels.npy", buf.getvalue())
                add(tar, f"{key}.meta.json", json.dumps(meta).encode())
        count = len(windows[s : s + per_shard])
        entries.append({"path": rel, "sensor": "sentinel-2", "count": count, "bytes": path.stat().st_size, "sha256": ""})
    phys = scene.reshape(12, -1).astype(np.float64) * SCALE + OFFSET
    stats = {"bands": BANDS, "count": [phys.shape[1]] * 12, "mean": phys.mean(1).tolist(), "std": phys.std(1).tolist(),
             "min": phys.min(1).tolist(), "max": phys.max(1).tolist()}
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created": "", "software": {}, "catalog": "",
                "search": {}, "items": [], "chips": {"chip_size": chip}, "shards": entries,
                "statistics": {"sentinel-2": stats}, "skipped": [], "counts": {"kept": len(windows), "dropped": {}}}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    return len(windows)


def bench_loader(url: str, storage_options: dict | None, batch: int, img_size: int, seconds: float,
                 workers: int, buffer: int, device_augment: bool = False) -> float:
    """Samples/s of the training loader (``workers`` DataLoader processes), after one warm-up batch.

    ``device_augment``: the workers only decode (the transform would run on the GPU, not timed here).
    """
    from ofa.pipeline.data import LoaderConfig, batches, make_loader

    loader = make_loader(LoaderConfig(data=[url], batch_size=batch, img_size=img_size, seed=0, shuffle_buffer=buffer,
                                      storage_options=storage_options, device_augment=device_augment), workers=workers)
    it = batches(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += next(it)["pixels"].shape[0]
    return n / (time.perf_counter() - t0)


def bench_cogs(paths: list[str], chip: int, img_size: int, seconds: float, transform: bool, seed: int = 0,
               cache_mb: int = 16) -> float:
    """Samples/s of random ``chip`` px windows read band by band from COGs (opened once), optionally transformed.

    GDAL's block cache is held at ``cache_mb`` so that, as with a real archive far larger than
    memory, windows are decoded from the file rather than served from already-decoded tiles.
    """
    import rasterio
    import torch
    from rasterio.windows import Window

    from ofa.pipeline.data import random_resized_crop

    rng = random.Random(seed)
    mean = std = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=cache_mb))
        datasets = [stack.enter_context(rasterio.open(p)) for p in paths]
        h, w = datasets[0].height, datasets[0].width

        def one() -> None:
            nonlocal mean, std
            row, col = rng.randrange(0, h - chip + 1), rng.randrange(0, w - chip + 1)
            raw = np.stack([ds.read(1, window=Window(col, row, chip, chip)) for ds in datasets])
            if transform:
                x = raw.astype(np.float32) * SCALE + OFFSET
                if mean is None:  # the loader gets these from the manifest; a baseline user computes them once
                    mean, std = x.mean((1, 2), keepdims=True), x.std((1, 2), keepdims=True)
                x = (x - mean) / std
                x[raw == 0] = 0.0
                random_resized_crop(torch.from_numpy(x), img_size, rng)

        one()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            one()
            n += 1
        return n / (time.perf_counter() - t0)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set environment variables for the block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="scene side in pixels (default: %(default)s)")
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--per-shard", type=int, default=16, help="chips per shard (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="loader worker processes (default: %(default)s)")
    parser.add_argument("--shuffle-buffer", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per contender (default: %(default)s)")
    parser.add_argument("--no-s3", action="store_true", help="local files only")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the best is reported (default: %(default)s)")
    parser.add_argument("--gdal-cache-mb", type=int, default=16, help="GDAL block cache for the baseline (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the main process (default: %(default)s)")
    parser.add_argument("--no-checksum", dest="checksum", action="store_false",
                        help="leave pixels_crc32 out of the chips' meta (ofa ingest always writes it), so the loader "
                             "checks nothing, as in the older RESULTS.md rows")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ofa-bench-loader-"))
    try:
        t = time.monotonic()
        scene = make_scene(args.size, seed=0)
        cogs = [str(p) for p in write_cogs(scene, work / "cogs")]
        chips = write_shards(scene, work / "dataset", args.chip_size, args.per_shard, checksum=args.checksum)
        print(f"scene 12 x {args.size} px uint16, {chips} chips of {args.chip_size} px in "
              f"{-(-chips // args.per_shard)} shards ({time.monotonic() - t:.1f} s to write)")
        kw = dict(batch=args.batch_size, img_size=args.img_size, seconds=args.seconds, workers=args.workers,
                  buffer=args.shuffle_buffer)
        ckw = dict(chip=args.chip_size, img_size=args.img_size, seconds=args.seconds, cache_mb=args.gdal_cache_mb)
        local = str(work / "dataset")
        contenders = {
            "loader_local": lambda: bench_loader(local, None, **kw),
            "loader_raw_local": lambda: bench_loader(local, None, device_augment=True, **kw),
            "cog_local_read": lambda: bench_cogs(cogs, transform=False, **ckw),
            "cog_local_read_transform": lambda: bench_cogs(cogs, transform=True, **ckw),
        }
        with contextlib.ExitStack() as stack:
            if not args.no_s3:
                import s3fs

                from ofa.infra.localstack import s3_server

                s3 = stack.enter_context(s3_server())
                fs = s3fs.S3FileSystem(**s3.storage_options)
                bucket = s3.make_bucket("ofa-bench-loader")[len("s3://"):]
                fs.put(local, f"{bucket}/dataset", recursive=True)
                fs.put(str(work / "cogs"), f"{bucket}/cogs", recursive=True)
                s3_data, so = f"s3://{bucket}/dataset", s3.storage_options
                s3_cogs = [f"s3://{bucket}/cogs/{Path(p).name}" for p in cogs]
                # GDAL reads /vsis3/ from the same server (range requests)
                stack.enter_context(_environ(s3.gdal_env))
                contenders.update({
                    "loader_s3": lambda: bench_loader(s3_data, so, **kw),
                    "loader_raw_s3": lambda: bench_loader(s3_data, so, device_augment=True, **kw),
                    "cog_s3_read": lambda: bench_cogs(s3_cogs, transform=False, **ckw),
                    "cog_s3_read_transform": lambda: bench_cogs(s3_cogs, transform=True, **ckw),
                })
            runs: dict[str, list[float]] = {k: [] for k in contenders}
            for r in range(args.repeat):  # interleaved rounds; the best of each is kept (shared machines)
                for name, fn in contenders.items():
                    runs[name].append(fn())
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()), flush=True)
        res = {k: max(v) for k, v in runs.items()}
        out = {k: round(v, 1) for k, v in res.items()}
        for where in ("local", "s3"):
            if f"loader_{where}" in res:
                out[f"ratio_{where}_vs_read"] = round(res[f"loader_{where}"] / res[f"cog_{where}_read"], 2)
                out[f"ratio_{where}_vs_read_transform"] = round(res[f"loader_{where}"] / res[f"cog_{where}_read_transform"], 2)
                out[f"ratio_{where}_raw_vs_read"] = round(res[f"loader_raw_{where}"] / res[f"cog_{where}_read"], 2)
        out.update(checksum=args.checksum, repeat=args.repeat, gdal_cache_mb=args.gdal_cache_mb, workers=args.workers, batch_size=args.batch_size, chip_size=args.chip_size, img_size=args.img_size,
                   scene=args.size, seconds=args.seconds)
        print(json.dumps(out, indent=1))
        for where in ("local", "s3"):
            if f"loader_{where}" in res:
                print(f"{where}: loader {res[f'loader_{where}']:.1f} samples/s with {args.workers} worker(s); "
                      f"COG windows {res[f'cog_{where}_read']:.1f}/s read only ({out[f'ratio_{where}_vs_read']}x), "
                      f"{res[f'cog_{where}_read_transform']:.1f}/s with the same transform "
                      f"({out[f'ratio_{where}_vs_read_transform']}x); decode-only loader (--device-augment) "
                      f"{res[f'loader_raw_{where}']:.1f}/s vs read only: {out[f'ratio_{where}_raw_vs_read']}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
