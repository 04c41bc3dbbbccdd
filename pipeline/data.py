"""Streaming loader: WebDataset shards (local, file://, s3://) -> single-sensor normalised batches.

Deterministic for a seed: the shard order, shuffle buffer, sensor choice and augmentation of batch
``i`` depend only on ``(seed, rank, worker, i)``, so a run resumed at batch ``k`` (``skip_batches``)
sees exactly the batches an uninterrupted run sees. Raw bytes are shuffled and only the chosen
samples are decoded; on resume the shuffle is replayed over sample positions (the manifest's
per-shard counts) and only the samples left in the shuffle buffer are read, so skipping costs no
more than one buffer's worth of reads however far into training the run was.

Splitting: each sensor's shards go to ``rank * workers + worker`` slots; a sensor with fewer
shards than slots is split by sample index instead. Streams are infinite: each pass over the
shards is a new epoch (a new shard permutation, or shards drawn with replacement if
``resampled``). Damaged shards/samples are logged, counted (``batch["skipped"]``) and skipped.

Two ways to augment: in the workers (default: float32 batches at ``img_size``), or, with
``device_augment``, only decode in the workers and ship native-dtype pixels (uint16 for
Sentinel-2: half the bytes of float32, before the crop) with per-sample crop parameters;
``to_device`` then normalises, crops, resizes and flips the whole batch on the GPU.

Every batch carries ``valid`` [N, C] (bool): the bands each sample has (meta.json ``band_valid``;
all true for datasets written before it). Invalid bands are 0 after normalisation. Each sample is
normalised with the manifest statistics of its own ``quantity`` (``statistics_for``).
"""
from __future__ import annotations

import functools
import io
import itertools
import json
import logging
import math
import os
import random
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ingest.contract import MANIFEST_NAME, META_EXT, PIXELS_EXT, check_pixels, parse_manifest, statistics_for
from ingest.storage import get_fs, join
from pipeline import augment

log = logging.getLogger(__name__)


@dataclass
class Stream:
    """One (dataset, sensor) source of samples."""

    dataset: str
    sensor: str
    shards: list[str]  # full URLs
    count: int
    mean: np.ndarray
    std: np.ndarray
    bands: list[str]
    #: samples per shard, from the manifest (lets a resumed loader skip without reading); None: unknown
    counts: list[int] | None = None
    #: per-band constants of each distinct (dtype, scale, offset, nodata) seen, filled by ``_affine``
    consts: dict = field(default_factory=dict, repr=False, compare=False)
    #: quantity -> (mean, std) of every statistics entry of this sensor (``mean``/``std`` above: the default)
    quantities: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass
class LoaderConfig:
    """What the loader reads and how it augments."""

    data: list[str]
    batch_size: int = 8
    img_size: int = 224
    seed: int = 0
    shuffle_buffer: int = 256
    min_scale: float = 0.2
    max_scale: float = 1.0
    resampled: bool = False
    weights: dict[str, float] | None = None  # sensor -> mixing weight (default: sample counts)
    dataset_weights: list[float] | None = None  # per dataset URL (default 1)
    storage_options: dict[str, Any] | None = None
    rank: int = 0
    world_size: int = 1
    skip_batches: int = 0  # batches of this rank already consumed (resume)
    device_augment: bool = False  # ship native-dtype pixels + crop parameters; ``to_device`` finishes on the GPU
    extra: dict[str, Any] = field(default_factory=dict)


def _seed(*parts: Any) -> int:
    """A stable 32-bit seed from any printable parts (no Python hash randomisation)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def read_streams(data: list[str], storage_options: dict[str, Any] | None = None) -> list[Stream]:
    """Read each dataset's manifest into one Stream per sensor."""
    if not data:
        raise ValueError("no dataset given: pass at least one --data URL")
    streams = []
    for url in data:
        fs, root = get_fs(url, storage_options)
        path = join(root, MANIFEST_NAME)
        if not fs.exists(path):
            raise FileNotFoundError(f"{url}: no {MANIFEST_NAME} (is this an ofa dataset?)")
        with fs.open(path, "rb") as f:
            manifest = parse_manifest(f.read(), source=join(url, MANIFEST_NAME))
        by_sensor: dict[str, list[dict]] = {}
        for shard in manifest["shards"]:
            by_sensor.setdefault(shard["sensor"], []).append(shard)
        for sensor, shards in sorted(by_sensor.items()):
            entries = {k: v for k, v in manifest["statistics"].items() if k == sensor or k.startswith(f"{sensor}/")}
            if not entries:
                raise ValueError(f"{url}: manifest has shards but no statistics for sensor {sensor!r}")
            stats = entries.get(sensor) or entries[sorted(entries)[0]]
            mean, std = _mean_std(stats)
            streams.append(Stream(
                dataset=url, sensor=sensor, shards=[join(url, s["path"]) for s in shards],
                count=sum(int(s["count"]) for s in shards), bands=list(stats["bands"]), counts=[int(s["count"]) for s in shards],
                mean=mean, std=std, quantities={e.get("quantity"): _mean_std(e) for e in entries.values()},
            ))
    if not streams:
        raise ValueError(f"no shards in {data}")
    return streams


def _mean_std(stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of a statistics entry (bands without statistics: 0 and 1)."""
    mean = np.asarray([0.0 if v is None else v for v in stats["mean"]], dtype=np.float32)
    std = np.asarray([1.0 if v is None else v for v in stats["std"]], dtype=np.float32)
    return mean, np.where(std > 0, std, 1.0).astype(np.float32)


def _stats(meta: dict, stream: Stream) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) for a sample: the entry of its quantity; never another quantity's."""
    quantity = meta.get("quantity")
    if quantity is None or not stream.quantities:
        return stream.mean, stream.std
    if quantity in stream.quantities:
        return stream.quantities[quantity]
    if None in stream.quantities and len(stream.quantities) == 1:   # an entry that does not say (older writer)
        return stream.mean, stream.std
    raise ValueError(f"no statistics for quantity {quantity!r} of sensor {stream.sensor!r} "
                     f"(the manifest has {sorted(map(str, stream.quantities))})")


def band_valid(meta: dict, channels: int) -> list[bool]:
    """A sample's per-band validity (meta.json ``band_valid``; all true when it has none)."""
    valid = meta.get("band_valid")
    if valid is None:
        return [True] * channels
    if len(valid) != channels:
        raise ValueError(f"band_valid has {len(valid)} values for {channels} bands")
    return [bool(v) for v in valid]


def modalities(streams: list[Stream]) -> dict[str, int]:
    """Sensor -> band count, for ``ModelConfig.modalities``; the same sensor must agree across datasets."""
    out: dict[str, int] = {}
    for s in streams:
        if out.setdefault(s.sensor, len(s.bands)) != len(s.bands):
            raise ValueError(f"{s.dataset}: sensor {s.sensor!r} has {len(s.bands)} bands, another dataset has {out[s.sensor]}")
    return out


class Counter:
    """Damaged shards/samples seen by this worker."""

    def __init__(self) -> None:
        self.skipped = 0

    def bad(self, what: str, exc: BaseException) -> None:
        self.skipped += 1
        log.warning("skipping damaged %s: %s: %s", what, type(exc).__name__, exc)


def _read_at_most(stream: Any, size: int, chunk: int = 1 << 24) -> bytes:
    """Up to ``size`` bytes, in chunks: a forged header claiming gigabytes allocates no more than the file holds."""
    if size <= chunk:
        return stream.read(size) if size else b""
    parts = []
    while size > 0:
        part = stream.read(min(size, chunk))
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _until_damage(files: Iterator[dict], url: str, counter: Counter) -> Iterator[dict]:
    """Pass members through; on a read error count it and end cleanly, so complete samples before it are kept."""
    try:
        yield from files
    except Exception as exc:  # noqa: BLE001 - a damaged shard must not stop training
        counter.bad(f"shard {url}", exc)


def iter_tar(stream: Any, url: str) -> Iterator[dict]:
    """Members ``{"fname", "data", "__url__"}`` of a POSIX tar read front to back: one read per header and
    one per member (tarfile's stream mode reads 10 KiB records). Raises on a bad header or a short read."""
    import tarfile

    long_name = None
    while True:
        header = stream.read(512)
        if not header or header == b"\0" * len(header):
            return  # end of archive
        if len(header) < 512:
            raise tarfile.ReadError(f"{url}: truncated tar header")
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        data = _read_at_most(stream, info.size)
        if len(data) < info.size:
            raise tarfile.ReadError(f"{url}: member {info.name} truncated ({len(data)} of {info.size} bytes)")
        pad = (-info.size) % 512
        if pad:
            stream.read(pad)
        if info.type == tarfile.GNUTYPE_LONGNAME:
            long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            for record in data.decode("utf-8", "surrogateescape").splitlines():
                if " path=" in record:
                    long_name = record.split(" path=", 1)[1]
            continue
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            long_name = None
            continue
        name, long_name = long_name or info.name, None
        if name.rsplit("/", 1)[-1].startswith("__"):
            continue  # WebDataset meta members
        yield {"fname": name, "data": data, "__url__": url}


def iter_shard(url: str, storage_options: dict[str, Any] | None, counter: Counter) -> Iterator[dict]:
    """Samples ``{"__key__", "pixels.npy", "meta.json", "__url__"}`` of one shard; stops at damage."""
    import webdataset.tariterators as wt

    def handler(exc: Exception) -> bool:
        counter.bad(f"shard {url}", exc)
        return False  # stop this shard

    try:
        fs, path = get_fs(url, storage_options)
        with fs.open(path, "rb") as stream:
            files = _until_damage(iter_tar(stream, url), url, counter)
            for sample in wt.group_by_keys(files, handler=handler):
                key = str(sample.get("__key__"))
                if key.startswith("/") or ".." in key.replace("\\", "/").split("/"):
                    counter.bad(f"sample {key!r} of {url}", ValueError("member name escapes the shard ('..' or absolute)"))
                    continue
                yield sample
    except Exception as exc:  # noqa: BLE001 - a damaged shard must not stop training
        counter.bad(f"shard {url}", exc)


#: where a raw sample comes from: (epoch, position in the slot's shard order, shard index, sample index in the shard)
Position = tuple[int, int, int, int]


def _raw_samples(stream: Stream, slot: int, slots: int, seed: int, resampled: bool, cfg: LoaderConfig,
                 counter: Counter, read: Any = None, after: Position | None = None) -> Iterator[tuple[Position, Any]]:
    """Infinite ``(position, raw sample)`` of one stream for one slot, epoch after epoch.

    ``read(shard index)`` gives a shard's samples (default: read the shard); ``after``: start right
    after that position (shards before it are not opened)."""
    if read is None:
        def read(k: int) -> Iterator[dict]:
            return iter_shard(stream.shards[k], cfg.storage_options, counter)
    by_shard = len(stream.shards) >= slots
    epoch = after[0] if after else 0
    while True:
        rng = random.Random(_seed(seed, stream.dataset, stream.sensor, "epoch", epoch))
        if resampled:
            order = [rng.randrange(len(stream.shards)) for _ in stream.shards]
        else:
            order = list(range(len(stream.shards)))
            rng.shuffle(order)
        mine = order[slot::slots] if by_shard else order
        resumed = after is not None and after[0] == epoch
        got = int(resumed)  # the sample at `after` was read in this epoch
        for j, k in enumerate(mine):
            if resumed and j < after[1]:
                continue
            first = after[3] + 1 if resumed and j == after[1] else 0
            for i, sample in enumerate(read(k)):
                if i >= first and (by_shard or i % slots == slot):
                    got += 1
                    yield (epoch, j, k, i), sample
        if got == 0 and not by_shard:
            raise RuntimeError(f"{stream.dataset}: no readable samples for sensor {stream.sensor!r}")
        if got == 0:  # this slot's shards are all damaged: share every shard by sample index instead
            log.warning("%s/%s: slot %d read no samples from its shards; splitting by sample from now on",
                        stream.dataset, stream.sensor, slot)
            by_shard = False
        epoch += 1


class _Shuffle:
    """A shuffle buffer of ``size`` samples over an infinite ``(position, sample)`` iterator: each output
    is a random buffered sample, replaced by the next input. Its state (buffer, RNG, input) can be
    rebuilt elsewhere, which is how a resumed loader skips without reading (``fast_forward``)."""

    def __init__(self, items: Iterator[tuple[Position, Any]], size: int, rng: random.Random) -> None:
        self.items, self.size, self.rng = items, max(1, size), rng
        self.buf: list[tuple[Position, Any]] = []
        self.last: Position | None = None   # position of the last input taken

    def _take(self) -> tuple[Position, Any]:
        item = next(self.items)
        self.last = item[0]
        return item

    def __iter__(self) -> "_Shuffle":
        return self

    def __next__(self) -> Any:
        while len(self.buf) < self.size:
            self.buf.append(self._take())
        i = self.rng.randrange(len(self.buf))
        out = self.buf[i]
        self.buf[i] = self._take()
        return out[1]


def fast_forward(stream: Stream, slot: int, slots: int, cfg: LoaderConfig, counter: Counter, rng: random.Random,
                 n: int) -> _Shuffle:
    """The shuffled samples of one stream for one slot after ``n`` outputs, as if they had been read.

    The shuffle is replayed over sample positions (per-shard counts from the manifest), not bytes;
    then only the samples left in the buffer are read, and the stream goes on after the last input
    taken. Without per-shard counts, the samples are read and dropped (the same result, slower).
    Exact while the shards hold what the manifest counts; where damage cut a shard short (the loader
    counts it), the resumed order can differ from an uninterrupted run's."""
    def shuffle(**kwargs: Any) -> _Shuffle:
        return _Shuffle(_raw_samples(stream, slot, slots, cfg.seed, cfg.resampled, cfg, counter, **kwargs),
                        cfg.shuffle_buffer, rng)

    if n <= 0 or stream.counts is None or len(stream.counts) != len(stream.shards):
        read_through = shuffle()
        for _ in range(max(0, n)):
            next(read_through)
        return read_through
    ghost = shuffle(read=lambda k: itertools.repeat(None, stream.counts[k]))
    for _ in range(n):
        next(ghost)
    wanted: dict[int, set[int]] = {}
    for (_, _, k, i), _ in ghost.buf:
        wanted.setdefault(k, set()).add(i)
    found: dict[tuple[int, int], Any] = {}
    for k, indices in sorted(wanted.items()):
        left = len(indices)
        for i, sample in enumerate(iter_shard(stream.shards[k], cfg.storage_options, counter)):
            if i in indices:
                found[k, i] = sample
                left -= 1
                if not left:
                    break
    real = shuffle(after=ghost.last)
    for pos, _ in ghost.buf:
        if (pos[2], pos[3]) in found:
            real.buf.append((pos, found[pos[2], pos[3]]))
        else:  # the shard no longer holds it (damage): counted by iter_shard; the next input takes its place
            real.buf.append(real._take())
    return real


def _frozen(value: Any) -> Any:
    """A meta value (number, None or list) as a hashable key."""
    return tuple(value) if isinstance(value, list) else value


def _affine(meta: dict, stream: Stream, dtype: np.dtype) -> tuple:
    """``(a, b, nodata, has)`` for pixels of ``dtype``, cached per stream: ``x * a + b`` is scale/offset +
    normalisation ([C, 1, 1] float32); ``nodata`` [C, 1, 1] in ``dtype`` (float64 for float pixels) or None
    if no band has one; ``has`` [C, 1, 1] bool where only some bands have one, else None."""
    key = (dtype.str, *(_frozen(meta.get(k)) for k in ("scale", "offset", "nodata", "quantity", "band_valid")))
    hit = stream.consts.get(key)
    if hit is not None:
        return hit
    c = len(stream.bands)
    scale = np.asarray(meta.get("scale") or [1.0] * c, dtype=np.float32)
    offset = np.asarray(meta.get("offset") or [0.0] * c, dtype=np.float32)
    mean, std = _stats(meta, stream)
    valid = np.asarray(band_valid(meta, c), dtype=np.float32)   # invalid bands: x * 0 + 0
    a = (scale / std * valid).reshape(c, 1, 1)
    b = ((offset - mean) / std * valid).reshape(c, 1, 1)
    nd = has = None
    nodata = meta.get("nodata")
    if nodata is not None:
        nd = np.asarray([np.nan if v is None else v for v in (nodata if isinstance(nodata, list) else [nodata] * c)],
                        dtype=np.float64).reshape(c, 1, 1)
        has = np.isfinite(nd)
        if not has.any():
            nd = has = None
        else:
            if dtype.kind != "f":
                nd = np.where(has, nd, 0).astype(dtype)
            has = None if has.all() else has
    if len(stream.consts) >= 64:
        stream.consts.clear()
    stream.consts[key] = a, b, nd, has
    return a, b, nd, has


def _normalise(raw: np.ndarray, meta: dict, stream: Stream) -> np.ndarray:
    """Native-dtype [C, h, w] (any view) -> contiguous float32: one fused affine, nodata/non-finite -> 0."""
    a, b, nd, has = _affine(meta, stream, raw.dtype)
    x = raw.astype(np.float32)  # contiguous copy (flipped views come out flipped)
    x *= a
    x += b
    invalid = ~np.isfinite(x) if raw.dtype.kind == "f" else None
    if nd is not None:
        hit = raw == nd
        if has is not None:
            hit &= has
        invalid = hit if invalid is None else invalid | hit
    if invalid is not None and invalid.any():
        np.copyto(x, 0.0, where=invalid)
    return x


@functools.lru_cache(maxsize=32)
def _npy_header(head: bytes) -> tuple[int, np.dtype, tuple[int, ...], bool]:
    """``(data offset, dtype, shape, fortran_order)`` of a version 1/2 ``.npy`` header (parsed by numpy)."""
    f = io.BytesIO(head)
    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if dtype.hasobject:
        raise ValueError("pixels.npy holds Python objects (refused, like np.load(allow_pickle=False))")
    return f.tell(), dtype, shape, fortran


def _npy(data: bytes) -> np.ndarray:
    """``pixels.npy`` bytes -> read-only array viewing them (no copy), as ``np.load(allow_pickle=False)`` reads them."""
    if data[:6] != b"\x93NUMPY" or data[6:7] not in (b"\x01", b"\x02"):
        return np.load(io.BytesIO(data), allow_pickle=False)  # other versions, or an error message from numpy
    n = 10 if data[6] == 1 else 12
    offset, dtype, shape, fortran = _npy_header(bytes(data[: n + int.from_bytes(data[8:n], "little")]))
    arr = np.frombuffer(data, dtype, count=math.prod(shape), offset=offset)
    arr.flags.writeable = False  # also over a bytearray: the sample's bytes are never changed through it
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _read(sample: dict) -> tuple[np.ndarray, dict]:
    """Pixels and meta of a sample, after checking the pixels against the checksum its meta records."""
    meta = json.loads(sample[META_EXT])
    if "pixels_crc32" in meta or "pixels_sha256" in meta:  # datasets written before the per-sample checksum carry none
        check_pixels(sample[PIXELS_EXT], meta, sample.get("__key__", "sample"))
    return _npy(sample[PIXELS_EXT]), meta


def _load(sample: dict, stream: Stream) -> tuple[np.ndarray, dict]:
    raw, meta = _read(sample)
    if raw.ndim != 3 or raw.shape[0] != len(stream.bands):
        raise ValueError(f"pixels shape {raw.shape}, expected ({len(stream.bands)}, H, W)")
    return raw, meta


def decode(sample: dict, stream: Stream) -> torch.Tensor:
    """Raw sample -> float32 [C, H, W]: scale/offset, per-band normalisation, nodata -> 0."""
    raw, meta = _load(sample, stream)
    return torch.from_numpy(_normalise(raw, meta, stream))


def decode_crop(sample: dict, stream: Stream, rng: random.Random, size: int,
                scale: tuple[float, float] = (0.2, 1.0)) -> torch.Tensor:
    """``decode`` + ``random_resized_crop`` (same draws), cropping the raw pixels first so only the crop
    is converted and normalised."""
    return decode_crop_valid(sample, stream, rng, size, scale)[0]


def decode_crop_valid(sample: dict, stream: Stream, rng: random.Random, size: int,
                      scale: tuple[float, float] = (0.2, 1.0)) -> tuple[torch.Tensor, list[bool]]:
    """``decode_crop`` and the sample's per-band validity."""
    raw, meta = _load(sample, stream)
    valid = band_valid(meta, raw.shape[0])
    top, left, ch, cw, hflip, vflip = map(int, augment.crop_params(rng, raw.shape[1], raw.shape[2], scale))
    # normalised before flipping: numpy's casts and compares are several times slower on reversed rows,
    # torch.flip of the float32 crop is one fast copy
    x = torch.from_numpy(_normalise(raw[:, top:top + ch, left:left + cw], meta, stream))
    flips = [d for d, on in ((2, hflip), (1, vflip)) if on]
    if flips:
        x = x.flip(flips)
    x = x[None]
    if ch == size and cw == size:
        return x[0], valid
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=(ch > size or cw > size))[0], valid


def decode_raw(sample: dict, stream: Stream) -> tuple[np.ndarray, list[list[float]]]:
    """Raw sample -> (native-dtype pixels [C, H, W], [scale, offset, nodata, has_nodata, mean, std, valid] per
    band); an invalid band gets scale 0, offset 0, mean 0, std 1, so it normalises to 0."""
    raw, meta = _read(sample)
    c = len(stream.bands)
    if raw.ndim != 3 or raw.shape[0] != c:
        raise ValueError(f"pixels shape {raw.shape}, expected ({c}, H, W)")

    def per_band(value: Any, default: float | None) -> list:
        if value is None or isinstance(value, (int, float)):
            return [default if value is None else value] * c
        if len(value) != c:
            raise ValueError(f"meta has {len(value)} per-band values for {c} bands")
        return [default if v is None else v for v in value]

    nodata = per_band(meta.get("nodata"), None)
    valid = band_valid(meta, c)
    mean, std = _stats(meta, stream)
    consts = [
        [float(v) if ok else 0.0 for v, ok in zip(per_band(meta.get("scale"), 1.0), valid)],
        [float(v) if ok else 0.0 for v, ok in zip(per_band(meta.get("offset"), 0.0), valid)],
        [0.0 if v is None else float(v) for v in nodata],
        [0.0 if v is None else 1.0 for v in nodata],
        [float(v) if ok else 0.0 for v, ok in zip(mean, valid)],
        [float(v) if ok else 1.0 for v, ok in zip(std, valid)],
        [1.0 if ok else 0.0 for ok in valid],
    ]
    return raw, consts


def raw_batch(raws: list[np.ndarray], consts: list[list[list[float]]], params: list[list[float]],
              stream: Stream) -> dict:
    """A batch for ``to_device``: stacked native-dtype pixels plus what ``augment.prepare`` needs."""
    c = np.asarray(consts, dtype=np.float32)  # [N, 7, C]
    return {
        "pixels": torch.from_numpy(np.stack(raws)),
        "params": torch.tensor(params, dtype=torch.float32),
        "scale": torch.from_numpy(c[:, 0]), "offset": torch.from_numpy(c[:, 1]),
        "nodata": torch.from_numpy(c[:, 2]), "has_nodata": torch.from_numpy(c[:, 3] > 0),
        "mean": torch.from_numpy(c[:, 4]), "std": torch.from_numpy(c[:, 5]), "valid": torch.from_numpy(c[:, 6] > 0),
    }


def to_device(batch: dict, device: torch.device | str, img_size: int) -> torch.Tensor:
    """Model input of a batch on ``device``: prepared pixels moved, or raw ones (device_augment) prepared there."""
    if "params" not in batch:
        return batch["pixels"].to(device, non_blocking=True)
    fields = {k: batch[k].to(device, non_blocking=True) for k in ("pixels", *augment.BATCH_FIELDS)}
    return augment.prepare(fields, img_size)


def random_resized_crop(x: torch.Tensor, size: int, rng: random.Random, scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Crop a random area share in ``scale`` and aspect ratio in ``ratio``, resize to ``size``, random flips."""
    top, left, ch, cw, hflip, vflip = map(int, augment.crop_params(rng, x.shape[1], x.shape[2], scale, ratio))
    crop = x[None, :, top:top + ch, left:left + cw]
    out = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=(ch > size or cw > size))[0]
    if hflip:
        out = out.flip(-1)
    if vflip:
        out = out.flip(-2)
    return out


class _Batch:
    """A float32 batch filled sample by sample. In a DataLoader worker it lives in shared memory (what the
    DataLoader hands to the trainer, allocated there as ``default_collate`` does); samples then go in with
    ``pwrite`` on its file rather than through a fresh mapping, which would cost a page fault per 4 KiB."""

    def __init__(self, shape: tuple[int, ...], shared: bool) -> None:
        if not shared:
            self.tensor, self.fd = torch.empty(shape), None
            return
        self.tensor = torch.empty(0).new(torch.empty(0)._typed_storage()._new_shared(math.prod(shape))).view(shape)
        fd_strategy = torch.multiprocessing.get_sharing_strategy() == "file_descriptor"
        self.fd = self.tensor.untyped_storage()._share_fd_cpu_()[0] if fd_strategy else None

    def __setitem__(self, i: int, x: torch.Tensor) -> None:
        if self.fd is None:
            self.tensor[i] = x
            return
        if x.shape != self.tensor.shape[1:]:
            raise ValueError(f"sample of shape {tuple(x.shape)} in a batch of {tuple(self.tensor.shape[1:])}")
        data = memoryview(x.to(torch.float32).contiguous().numpy()).cast("B")
        offset = i * data.nbytes
        while data:
            n = os.pwrite(self.fd, data, offset)
            data, offset = data[n:], offset + n


class ShardBatches(torch.utils.data.IterableDataset):
    """Infinite single-sensor batches ``{"pixels", "sensor", "index", "skipped", "keys"}`` for one rank."""

    def __init__(self, cfg: LoaderConfig, streams: list[Stream] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.streams = streams if streams is not None else read_streams(cfg.data, cfg.storage_options)
        dw = cfg.dataset_weights or [1.0] * len(cfg.data)
        if len(dw) != len(cfg.data):
            raise ValueError(f"dataset_weights has {len(dw)} values for {len(cfg.data)} datasets")
        ds_w = dict(zip(cfg.data, dw))
        weights = []
        for s in self.streams:
            w = (cfg.weights or {}).get(s.sensor, None)
            weights.append(ds_w.get(s.dataset, 1.0) * (float(s.count) if w is None else float(w)))
        if sum(weights) <= 0:
            raise ValueError(f"mixing weights {cfg.weights} leave nothing to sample")
        self.weights = weights

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        cfg = self.cfg
        slots = cfg.world_size * workers
        slot = cfg.rank * workers + worker
        counter = Counter()

        def sensor_of(index: int) -> int:
            # depends on the batch index only: every rank trains the same sensor per step
            return random.Random(_seed(cfg.seed, "sensor", index)).choices(range(len(self.streams)), self.weights)[0]

        # batch i of this rank comes from worker i % workers (DataLoader round-robin); on resume, each
        # stream skips the samples this worker's first batches took, without reading them
        first = cfg.skip_batches
        taken = [0] * len(self.streams)
        for index in range(worker, first, workers):
            taken[sensor_of(index)] += cfg.batch_size
        shuffled = [fast_forward(s, slot, slots, cfg, counter, random.Random(_seed(cfg.seed, "shuffle", cfg.rank, worker, k)), taken[k])
                    for k, s in enumerate(self.streams)]
        index = worker
        while True:
            k = sensor_of(index)
            stream = self.streams[k]
            picked = [next(shuffled[k]) for _ in range(cfg.batch_size)] if index >= first else []
            if index >= first and cfg.device_augment:
                aug = random.Random(_seed(cfg.seed, "augment", cfg.rank, index))
                raws, consts, params, keys = [], [], [], []
                pending = iter(picked)
                while len(raws) < cfg.batch_size:  # what damage takes is refilled from the same stream
                    sample = next(pending, None) or next(shuffled[k])
                    try:
                        raw, const = decode_raw(sample, stream)
                    except Exception as exc:  # noqa: BLE001
                        counter.bad(f"sample {sample.get('__key__')} of {sample.get('__url__')}", exc)
                        continue
                    if raws and (raw.shape != raws[0].shape or raw.dtype != raws[0].dtype):
                        counter.bad(f"sample {sample.get('__key__')} of {sample.get('__url__')}",
                                    ValueError(f"pixels {raw.dtype} {raw.shape} in a batch of {raws[0].dtype} {raws[0].shape}"))
                        continue
                    raws.append(raw)
                    consts.append(const)
                    params.append(augment.crop_params(aug, raw.shape[1], raw.shape[2], (cfg.min_scale, cfg.max_scale)))
                    keys.append(sample["__key__"])
                yield {**raw_batch(raws, consts, params, stream), "sensor": stream.sensor, "index": index,
                       "skipped": counter.skipped, "keys": keys}
            elif index >= first:
                aug = random.Random(_seed(cfg.seed, "augment", cfg.rank, index))
                c, size = len(stream.bands), cfg.img_size
                out = _Batch((cfg.batch_size, c, size, size), shared=info is not None)
                keys: list[str] = []
                valid: list[list[bool]] = []
                pending = iter(picked)
                while len(keys) < cfg.batch_size:  # what damage takes is refilled from the same stream
                    sample = next(pending, None) or next(shuffled[k])
                    try:
                        x, ok = decode_crop_valid(sample, stream, aug, size, (cfg.min_scale, cfg.max_scale))
                        out[len(keys)] = x
                    except Exception as exc:  # noqa: BLE001
                        counter.bad(f"sample {sample.get('__key__')} of {sample.get('__url__')}", exc)
                        continue
                    keys.append(sample["__key__"])
                    valid.append(ok)
                yield {"pixels": out.tensor, "valid": torch.tensor(valid, dtype=torch.bool), "sensor": stream.sensor,
                       "index": index, "skipped": counter.skipped, "keys": keys}
            else:  # keeps the DataLoader's round-robin aligned with batch indices on resume
                yield {"skip": True, "index": index}
            index += workers


def batches(loader: Iterator[dict] | torch.utils.data.DataLoader) -> Iterator[dict]:
    """Real batches of a loader in index order (drops the placeholders of skipped batches)."""
    for batch in loader:
        if not batch.get("skip"):
            yield batch


def make_loader(cfg: LoaderConfig, workers: int = 0, streams: list[Stream] | None = None,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over ``ShardBatches`` (already batched; ``batch_size=None``); pin memory for GPU copies."""
    dataset = ShardBatches(cfg, streams)
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, persistent_workers=False, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(cfg.seed), prefetch_factor=4 if workers else None,
    )
