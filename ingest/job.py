"""An ingest run: search -> per-item chip tasks on Dask -> shards -> manifest.

Item tasks run in parallel. Each writes the shards its own samples fill (item shards) straight to
the output, so the pixels do not all pass through the client; the client streams what is left of
each item into the sensor's numbered shards in a fixed item order, so the same inputs give the same
bytes. Resumable: the search result, every shard and a progress record (finished shards, where the
open shard starts, records of finished items) are written atomically, and the manifest last; a rerun
with the same command redoes only the items from the open shard on, so a run killed at any point
ends as an uninterrupted one would.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import importlib
import json
import logging
import os
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import dask
import numpy
import rasterio
from dask.distributed import Client, LocalCluster, Worker, as_completed
from tqdm.auto import tqdm

from ofa.ingest.chips import DROP_REASONS, BandStats, ChipOptions, process_item
from ofa.ingest.config import IngestConfig
from ofa.ingest.dataset.contract import (
    FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, ManifestError, item_shard_path, parse_manifest, statistics_key,
)
from ofa.ingest.dataset.manifest import finalize_stats, verify_shards, write_manifest
from ofa.ingest.dataset.shard_writer import (
    STAGING_DIR, ShardWriter, is_local_fs, remove_temporaries, sample_block,
    write_atomic, write_full_shards,
)
from ofa.ingest.items import item_etag, plan_item
from ofa.ingest.limits import ReadLimits
from ofa.ingest.plans import ItemError, ItemPlan, clean_href, identity_href, redact
from ofa.ingest.search import search_items
from ofa.ingest.sensors import SENSORS
from ofa.ingest.storage import get_fs, join
from ofa.ingest.version import package_version

log = logging.getLogger("ofa.ingest")
SEARCH_RECORD = f"{STAGING_DIR}/_search.json"
PROGRESS_DIR = f"{STAGING_DIR}/progress"


class IngestError(RuntimeError):
    """The run cannot go on (or ``--strict`` met a skipped item)."""


def item_key(collection: str, item_id: str) -> str:
    """A file-name-safe key naming an item (progress records, item shard names); where characters had
    to be replaced, a CRC of the original keeps ids such as ``a:b`` and ``a-b`` apart."""
    raw = f"{collection}__{item_id}"
    safe = "".join(c if (c.isascii() and c.isalnum() or c in "-_.") else "-" for c in raw)
    return safe if safe == raw else f"{safe}-{zlib.crc32(raw.encode()):08x}"


def resolve_hook(hook: Callable[[str], str] | str | None) -> Callable[[str], str]:
    """A signing hook from a callable or a ``"module:function"`` string (identity when None)."""
    if hook is None:
        return identity_href
    if callable(hook):
        return hook
    module, _, name = str(hook).partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise IngestError(f"--sign-href {hook!r}: cannot load it ({exc}); expected module:function") from None
    if not callable(fn):
        raise IngestError(f"--sign-href {hook!r} is not callable")
    return fn


def software_versions() -> dict[str, str]:
    return {"ofa": package_version(), "format_version": str(FORMAT_VERSION), "numpy": numpy.__version__,
            "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__}


# ------------------------------------------------------------------ the per-item task
@dataclass(frozen=True)
class ShardTarget:
    """Where item tasks write the shards their own samples fill, and the shard bounds."""

    out: str
    storage_options: dict | None
    max_samples: int
    max_bytes: int


def ingest_item_task(plan: ItemPlan, options: ChipOptions, sign_href: Callable[[str], str] | str | None,
                     target: ShardTarget | None = None) -> dict:
    """Read one item (runs on a Dask worker). Returns its record, the shards its samples fill on their
    own (written here, with ``target``, so the pixels do not all pass through the client) and its
    remaining samples as tar blocks, which the client packs in item order."""
    record: dict[str, Any] = {"item_id": plan.item_id, "collection": plan.collection, "sensor": plan.sensor,
                              "bands": [c.name for c in plan.channels]}
    blocks: list = []
    try:
        result = process_item(plan, options, resolve_hook(sign_href))
        blocks = [sample_block(*sample) for sample in result.samples]
        record.update(kept=result.kept, dropped=result.dropped, stats=[s.to_list() for s in result.stats])
    except ItemError as exc:
        record.update(skipped=str(exc))
    except Exception as exc:  # noqa: BLE001 - anything else about one item must not stop the run
        record.update(skipped=f"{type(exc).__name__}: {redact(' '.join(str(exc).split()))[:300]}")
    shards: list[dict] = []
    if target is not None and blocks:  # a storage failure here fails the run (a rerun resumes): never a skipped item
        shards, blocks = write_item_shards(target, plan, blocks)
    return {"record": record, "shards": shards, "blocks": blocks}


def write_item_shards(target: ShardTarget, plan: ItemPlan, blocks: list) -> tuple[list[dict], list]:
    """Write the shards an item's samples fill on their own (``items/{item key}-{n}.tar``); return their
    records and the samples left over for the numbered shards."""
    fs, root = get_fs(target.out, target.storage_options)
    name = functools.partial(item_shard_path, plan.sensor, item_key(plan.collection, plan.item_id))
    return write_full_shards(fs, root.rstrip("/"), plan.sensor, blocks, target.max_samples, target.max_bytes, name)


# ------------------------------------------------------------------ the run
def _existing_manifest(fs, root: str, cfg: IngestConfig) -> dict | None:
    path = f"{root}/{MANIFEST_NAME}"
    if not fs.exists(path):
        return None
    manifest = parse_manifest(fs.cat_file(path), path)
    mine = {"search": cfg.search_params().to_dict(), "chips": cfg.chips_record(), "reads": cfg.reads_record()}
    # a dataset written before ``reads`` was recorded is compared on the rest
    diff = [k for k in mine if json.loads(json.dumps(mine[k])) != manifest.get(k) and (k != "reads" or k in manifest)]
    if diff:
        raise IngestError(f"{cfg.out} already holds a dataset built with other parameters ({', '.join(diff)}); "
                          "choose another --out or delete it")
    if manifest.get("catalog") != cfg.catalog:
        log.info("%s was built from %s; the same search now names %s", cfg.out, manifest.get("catalog"), cfg.catalog)
    return manifest


def _select_items(fs, root: str, cfg: IngestConfig) -> list[dict]:
    """The search result, saved on the first run and reused by a resumed one."""
    path = f"{root}/{SEARCH_RECORD}"
    key = {"catalog": clean_href(cfg.catalog),  # never credentials: a killed run leaves this file behind
           "search": cfg.search_params().to_dict(), "ids": cfg.ids, "chips": cfg.chips_record(),
           "reads": cfg.reads_record()}
    if fs.exists(path):
        saved = json.loads(fs.cat_file(path))
        if saved.get("key") == json.loads(json.dumps(key)):
            return saved["items"]
        log.warning("%s: unfinished work of a run with other parameters; starting over", cfg.out)
        _remove_staging(fs, root)
    elif fs.exists(f"{root}/{STAGING_DIR}"):
        _remove_staging(fs, root)  # item files without a search record cannot be trusted
    items = search_items(cfg.catalog, cfg.search_params(), cfg.ids, cfg.read_limits())
    write_atomic(fs, path, json.dumps({"key": key, "items": items}, sort_keys=True).encode())
    return items


def _aoi(cfg: IngestConfig) -> dict | None:
    """The search area as a WGS84 geometry: chips outside its bounds are not read."""
    if cfg.intersects:
        return cfg.intersects
    if cfg.bbox:
        w, s, e, n = (float(v) for v in cfg.bbox)
        return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    return None


def _chip_estimate(plan: ItemPlan, chip_size: int) -> int:
    """Chip windows an item will probably have, from ``proj:shape`` (0 when the item does not say)."""
    shape = plan.shape
    return (shape[0] // chip_size) * (shape[1] // chip_size) if shape else 0


@dataclass
class _Progress:
    """What a run has made durable, per sensor: the finished shards, where the open shard starts
    (item position, sample index) and the records of the items before it.

    Saved as one small file per finished shard (``_staging/progress/{sensor}-{n:06d}.json``) holding
    only what is new since the sensor's previous file, so saving stays cheap in long runs."""

    shards: dict[str, list[dict]] = field(default_factory=dict)
    cursor: dict[str, tuple[int, int]] = field(default_factory=dict)
    records: dict[str, dict] = field(default_factory=dict)
    saves: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, fs, root: str) -> "_Progress":
        """The saved progress, up to the first shard that is no longer in the store as recorded (the
        work from that shard on is redone; the parts recording it and later ones are deleted)."""
        progress = cls()
        folder = f"{root}/{PROGRESS_DIR}"
        if not fs.exists(folder):
            return progress
        sizes = shard_sizes(fs, root)
        broken: set[str] = set()
        for path in sorted(fs.find(folder)):
            part = json.loads(fs.cat_file(path))
            sensor = part["sensor"]
            lost = _lost_shards(part["shards"], sizes)
            if sensor not in broken and lost:
                log.warning("%s is missing or changed since it was written; redoing %s from it", lost[0], sensor)
                broken.add(sensor)
            if sensor in broken:
                fs.rm_file(path)
                continue
            progress.shards.setdefault(sensor, []).extend(part["shards"])
            progress.cursor[sensor] = tuple(part["cursor"])
            progress.records.update(part["records"])
            progress.saves[sensor] = progress.saves.get(sensor, 0) + 1
        return progress

    def save(self, fs, root: str, sensor: str, shards: list[dict], cursor: tuple[int, int], records: dict[str, dict]) -> None:
        """Record ``sensor``'s progress: its shards so far, the new cursor and the records new since the last save."""
        n = self.saves.get(sensor, 0)
        new_shards = shards[len(self.shards.get(sensor, [])):]
        part = {"sensor": sensor, "shards": new_shards, "cursor": list(cursor), "records": records}
        write_atomic(fs, f"{root}/{PROGRESS_DIR}/{sensor}-{n:06d}.json", json.dumps(part, sort_keys=True).encode())
        self.shards.setdefault(sensor, []).extend(new_shards)
        self.cursor[sensor], self.saves[sensor] = cursor, n + 1
        self.records.update(records)


def _lost_shards(shards: list[dict], sizes: dict[str, int]) -> list[str]:
    """Paths of the recorded ``shards`` that the store (``shard_sizes``) no longer holds as written."""
    return [s["path"] for s in shards if sizes.get(s["path"]) != s["bytes"]]


def shard_sizes(fs, root: str) -> dict[str, int]:
    """Size of every file under the dataset's shard folder, by path relative to ``root`` (one listing)."""
    fs.invalidate_cache()
    folder = f"{root}/shards"
    if not fs.exists(folder):
        return {}
    return {path.split(root, 1)[-1].lstrip("/"): int(info.get("size") or 0)
            for path, info in fs.find(folder, detail=True).items()}


#: Dask settings for the local cluster: its workers' statistical profiler (a stack sample of every thread
#: each 10 ms) and the event-loop health tick (every 20 ms) serve dashboards an ingest never shows; they
#: cost 4% of a core while idle and ~0.2 ms of CPU per chip in a run (bench/RESULTS.md)
LOCAL_CLUSTER_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s"}


@contextmanager
def _dask_client(cfg: IngestConfig, tasks: int) -> Iterator[Any]:
    """A Dask client: on ``cfg.scheduler``, or on a local cluster of ``cfg.workers`` workers."""
    if cfg.scheduler:
        with Client(cfg.scheduler) as client:
            yield client
        return
    n = max(1, min(cfg.workers or os.cpu_count() or 1, tasks))
    with dask.config.set(LOCAL_CLUSTER_CONFIG), \
            LocalCluster(n_workers=n, threads_per_worker=1, processes=cfg.processes, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        try:
            yield client
        except BaseException:
            _stop_workers_now(cluster)
            raise


def _stop_workers_now(cluster: Any) -> None:
    """After a failure or Ctrl-C, stop a local cluster's in-process workers without waiting for the item
    tasks still running (a slow read, a write in retries against a dead store): Dask would otherwise
    wait for each; their threads are daemons and end with the process. Worker processes are killed
    by the cluster's own close."""
    for worker in list(cluster.workers.values()):
        if isinstance(worker, Worker):
            try:
                cluster.sync(worker.close, executor_wait=False, reason="ofa ingest stopped")
            except Exception as exc:  # noqa: BLE001 - the failure being raised is the one to report
                log.debug("could not stop worker %s at once: %s", worker, exc)


#: one item task waiting to run: (sensor, position in the sensor's items, plan, samples already in shards)
Entry = tuple[str, int, ItemPlan, int]


def _queue(by_sensor: dict[str, list[ItemPlan]], progress: _Progress) -> list[Entry]:
    """The items still to write, sensor by sensor, from each sensor's saved cursor on."""
    queue: list[Entry] = []
    for sensor in sorted(by_sensor):
        start, skip = progress.cursor.get(sensor, (0, 0))
        queue += [(sensor, pos, plan, skip if pos == start else 0) for pos, plan in enumerate(by_sensor[sensor]) if pos >= start]
    return queue


class _InOrderWriter:
    """Streams item results, handed over in queue order, into each sensor's shards.

    After every finished shard, and when a sensor's last item is in, the sensor's progress is saved
    (its shards, where the open shard starts, the records since the last save), so a rerun starts from
    the shard that was open. ``client_target``: the client also writes the shards items fill on their
    own (when the workers cannot reach the output); the dataset is the same."""

    def __init__(self, fs, root: str, cfg: IngestConfig, by_sensor: dict[str, list[ItemPlan]], progress: _Progress,
                 queue: list[Entry], client_target: ShardTarget | None = None) -> None:
        self.fs, self.root, self.by_sensor, self.progress = fs, root, by_sensor, progress
        self.client_target = client_target
        self.writers = {s: ShardWriter(fs, root, s, cfg.shard_max_samples, cfg.shard_max_bytes,
                                       shards=list(progress.shards.get(s, []))) for s in sorted(by_sensor)}
        pending = {item_key(plan.collection, plan.item_id) for _, _, plan, _ in queue}
        #: the record of every item written (this run or before the cursor)
        self.records = {k: v for k, v in progress.records.items() if k not in pending}
        #: records taken since each sensor's last save
        self.unsaved: dict[str, dict[str, dict]] = {s: {} for s in self.writers}
        # an item redone after a kill writes its own shards again (the same bytes); the ones saved already stay listed once
        self.recorded = {s: {shard["path"] for shard in progress.shards.get(s, [])} for s in self.writers}

    def shards(self) -> dict[str, list[dict]]:
        """The shards written so far, per sensor."""
        return {s: w.shards for s, w in self.writers.items()}

    def consume(self, entry: Entry, result: dict) -> dict:
        """Write one item's result (the next in queue order); return its record."""
        record = self.add_item(entry, result)
        sensor, pos = entry[0], entry[1]
        if pos == len(self.by_sensor[sensor]) - 1:
            self.finish_sensor(sensor, pos)
        return record

    def add_item(self, entry: Entry, result: dict) -> dict:
        """List the shards the item filled, append its other samples to the sensor's open shard and
        keep its record."""
        sensor, pos, plan, skip = entry
        record, writer, blocks = result["record"], self.writers[sensor], result["blocks"]
        if self.client_target is not None and blocks:
            result["shards"], blocks = write_item_shards(self.client_target, plan, blocks)
        writer.shards.extend(s for s in result["shards"] if s["path"] not in self.recorded[sensor])
        for i, block in enumerate(blocks[skip:], start=skip):
            if writer.add_block(block):
                self._save(sensor, (pos, i))   # a shard was finished: the open one starts with this sample
        key = item_key(plan.collection, plan.item_id)
        self.records[key] = self.unsaved[sensor][key] = record
        if record.get("skipped"):
            log.warning("skipped item %s (%s): %s", record["item_id"], record["collection"], record["skipped"])
        return record

    def finish_sensor(self, sensor: str, pos: int) -> None:
        """After the sensor's last item (at ``pos``): close its open shard and save its progress."""
        self.writers[sensor].flush()
        self._save(sensor, (pos + 1, 0))

    def _save(self, sensor: str, cursor: tuple[int, int]) -> None:
        self.progress.save(self.fs, self.root, sensor, self.writers[sensor].shards, cursor, self.unsaved[sensor])
        self.unsaved[sensor] = {}


def _results_in_order(client: Any, tasks: int, window: int, submit: Callable[[int], Any]) -> Iterator[tuple[int, Any]]:
    """``(i, result of task i)`` for ``i`` in ``range(tasks)``, in order, from futures ``submit(i)`` gives.

    At most ``window`` tasks are in flight or finished but not yet handed over: results arriving out
    of order wait on the workers (memory stays bounded) and each is released once handed over."""
    futures = as_completed()
    index_of: dict[str, int] = {}
    arrived: dict[int, Any] = {}
    submitted = done = 0
    while done < tasks:
        while submitted < tasks and submitted - done < window:
            future = submit(submitted)
            index_of[future.key] = submitted
            futures.add(future)
            submitted += 1
        future = next(futures)
        arrived[index_of.pop(future.key)] = future
        while done in arrived:
            head = arrived.pop(done)
            yield done, head.result()
            head.release()
            done += 1


def _write_items(fs, root: str, cfg: IngestConfig, by_sensor: dict[str, list[ItemPlan]]) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Run the item tasks on Dask and stream their samples into each sensor's shards, in item order
    (``_InOrderWriter``), resuming from the saved progress. Returns the shards per sensor and the
    record of every item."""
    progress = _Progress.load(fs, root)
    queue = _queue(by_sensor, progress)
    total = sum(map(len, by_sensor.values()))
    if len(queue) < total:
        log.info("resuming: %d of %d items already in shards", total - len(queue), total)
    target = ShardTarget(cfg.out, cfg.storage_options, cfg.shard_max_samples, cfg.shard_max_bytes)
    on_client = bool(cfg.scheduler) and is_local_fs(fs)   # workers elsewhere would write to their own disks
    writer = _InOrderWriter(fs, root, cfg, by_sensor, progress, queue, target if on_client else None)
    if not queue:
        return writer.shards(), writer.records
    if on_client:
        log.info("%s is a local path: the client writes every shard (an s3:// output lets the workers of %s "
                 "write the shards items fill)", cfg.out, cfg.scheduler)
    options = cfg.chip_options()
    kept = sum(r.get("kept", 0) for r in writer.records.values())   # the run's total so far, resumed items included
    bar = tqdm(total=sum(_chip_estimate(p, cfg.chip_size) for _, _, p, _ in queue) or None, unit="chip", desc="ingest",
               disable=not cfg.progress, dynamic_ncols=True)
    try:
        with _dask_client(cfg, len(queue)) as client:
            def submit(i: int) -> Any:
                plan = queue[i][2]
                return client.submit(ingest_item_task, plan, options, cfg.sign_href, None if on_client else target,
                                     key=f"ingest-{i}-{plan.item_id}", pure=False)

            # items in flight or finished but not yet written: two per worker thread keeps every thread
            # busy while the head of the queue finishes
            window = 2 * max(1, sum(client.nthreads().values())) + 2
            for i, result in _results_in_order(client, len(queue), window, submit):
                record = writer.consume(queue[i], result)
                bar.update(record.get("kept", 0) + sum((record.get("dropped") or {}).values()))
                kept += record.get("kept", 0)
                bar.set_postfix(items=f"{i + 1}/{len(queue)}", kept=kept)
    finally:
        bar.close()
    return writer.shards(), writer.records


def run_ingest(cfg: IngestConfig) -> dict:
    """Build (or finish, or reuse) the dataset at ``cfg.out``; return its manifest."""
    if not cfg.collections:
        raise IngestError("no --collection given")
    if cfg.chip_size < 8:
        raise IngestError(f"--chip-size {cfg.chip_size} is too small")
    resolve_hook(cfg.sign_href)  # fail early on a bad hook
    fs, root = get_fs(cfg.out, cfg.storage_options)
    root = root.rstrip("/")
    started = time.monotonic()
    remove_temporaries(fs, root)
    done = _existing_manifest(fs, root, cfg)
    if done is not None:
        problems = verify_shards(cfg.out, done, cfg.storage_options)
        if not problems:
            _remove_staging(fs, root)
            log.info("%s is complete; reusing it", cfg.out)
            _publish_stac(cfg, done, only_missing=True)
            return done
        log.warning("%s: manifest present but %s; rebuilding", cfg.out, problems[0])
        fs.rm_file(f"{root}/{MANIFEST_NAME}")

    items = _select_items(fs, root, cfg)
    if not items:
        raise IngestError(f"the search on {cfg.catalog} found no items ({cfg.search_params().to_dict()})")
    plans: list[ItemPlan] = []
    skipped: list[dict] = []
    aoi = _aoi(cfg)
    policy, limits = cfg.href_policy(), cfg.read_limits()
    for item in items:   # every href an item's plan names passes the policy here, before anything is opened
        try:
            plans.append(dataclasses.replace(plan_item(item, cfg.bands, policy=policy, limits=limits), aoi=aoi))
        except ItemError as exc:
            skipped.append({"item_id": str(item.get("id")), "collection": str(item.get("collection")), "reason": str(exc)})
            log.warning("skipped item %s (%s): %s", item.get("id"), item.get("collection"), exc)
    keys = [item_key(p.collection, p.item_id) for p in plans]
    if len(set(keys)) < len(keys):  # they name item shards: two items under one name would overwrite each other
        twice = sorted(k for k, n in collections.Counter(keys).items() if n > 1)
        raise IngestError(f"items whose collection and id give the same file name: {', '.join(twice[:5])}")
    by_sensor: dict[str, list[ItemPlan]] = {}
    for plan in plans:
        by_sensor.setdefault(plan.sensor, []).append(plan)
    shards, records = _write_items(fs, root, cfg, by_sensor)
    sizes = shard_sizes(fs, root)
    lost = _lost_shards([s for ss in shards.values() for s in ss], sizes)
    if lost:  # a store that lost objects (or someone deleting them) must not end in a manifest naming them
        raise IngestError(f"{len(lost)} shard(s) written by this run are missing or changed in {cfg.out} "
                          f"(first: {lost[0]}); rerun the same command to redo them")

    manifest = _manifest(cfg, items, by_sensor, shards, records, skipped)
    _remove_stale_shards(fs, root, set(sizes) - {s["path"] for s in manifest["shards"]})
    if cfg.strict and manifest["skipped"]:
        reasons = "; ".join(f"{s['item_id']}: {s['reason']}" for s in manifest["skipped"])
        raise IngestError(f"--strict: {len(manifest['skipped'])} item(s) skipped: {reasons}")
    _write_manifest(fs, root, manifest)
    _publish_stac(cfg, manifest)
    _remove_staging(fs, root)
    _print_summary(manifest, cfg, time.monotonic() - started)
    return manifest


def _manifest(cfg: IngestConfig, items: list[dict], by_sensor: dict[str, list[ItemPlan]],
              shards: dict[str, list[dict]], records: dict[str, dict], skipped: list[dict]) -> dict:
    """The manifest dict: counts and statistics merged in item order, so they never depend on timing."""
    stats: dict[str, tuple[list[str], list[BandStats], str | None]] = {}   # statistics key -> (bands, sums, quantity)
    kept, dropped = 0, {r: 0 for r in DROP_REASONS}
    for sensor in sorted(by_sensor):
        for plan in by_sensor[sensor]:
            record = records[item_key(plan.collection, plan.item_id)]
            if record.get("skipped"):
                skipped.append({"item_id": plan.item_id, "collection": plan.collection, "reason": record["skipped"]})
                continue
            kept += record["kept"]
            for reason, n in record["dropped"].items():
                dropped[reason] = dropped.get(reason, 0) + n
            # one entry per quantity: samples of different quantities are never normalised together
            key = statistics_key(sensor, plan.quantity, SENSORS[sensor].quantity if sensor in SENSORS else None)
            names, acc, _ = stats.setdefault(key, (record["bands"], [BandStats() for _ in record["bands"]], plan.quantity))
            for total, part in zip(acc, record["stats"]):
                total.merge(BandStats.from_list(part))
    all_shards = [s for sensor in sorted(shards) for s in shards[sensor]]
    skipped.sort(key=lambda s: (s["collection"], s["item_id"]))
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": software_versions(),
        "catalog": clean_href(cfg.catalog),
        "search": cfg.search_params().to_dict(),
        "items": [{"id": it.get("id"), "collection": it.get("collection"),
                   "updated": (it.get("properties") or {}).get("updated"), "etag": item_etag(it)} for it in items],
        "chips": cfg.chips_record(),
        "reads": cfg.reads_record(),
        "shards": all_shards,
        "statistics": {s: {**finalize_stats(names, acc), "quantity": q} for s, (names, acc, q) in sorted(stats.items())},
        "skipped": skipped,
        "counts": {"kept": kept, "dropped": dropped},
    }


def _write_manifest(fs, root: str, manifest: dict) -> None:
    """Publish the manifest: from here on the dataset is complete."""
    write_manifest(fs, root, manifest)


def _publish_stac(cfg: IngestConfig, manifest: dict, only_missing: bool = False) -> None:
    """Write the dataset's ``index.parquet`` and ``stac/collection.json`` (``ingest.dataset_stac``)."""
    from ofa.ingest.dataset_stac import COLLECTION_PATH, write_dataset_stac
    from ofa.ingest.sample_index import INDEX_NAME

    fs, root = get_fs(cfg.out, cfg.storage_options)
    if only_missing and all(fs.exists(join(root, name)) for name in (INDEX_NAME, COLLECTION_PATH)):
        return
    write_dataset_stac(cfg.out, manifest, cfg.storage_options)


def _remove_stale_shards(fs, root: str, stale: set[str]) -> None:
    """Delete files under the shard folder that the manifest does not name (paths relative to ``root``)."""
    for rel in sorted(stale):
        fs.rm_file(f"{root}/{rel}")


def _remove_staging(fs, root: str) -> None:
    path = f"{root}/{STAGING_DIR}"
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _print_summary(manifest: dict, cfg: IngestConfig, seconds: float) -> None:
    if not cfg.progress:
        return
    counts = manifest["counts"]
    total = counts["kept"] + sum(counts["dropped"].values())
    dropped = ", ".join(f"{k} {v}" for k, v in counts["dropped"].items())
    print(f"ingest: {len(manifest['items'])} items ({len(manifest['skipped'])} skipped), {total} chips read, "
          f"{counts['kept']} kept (dropped: {dropped}), {len(manifest['shards'])} shards -> {join(cfg.out, MANIFEST_NAME)} "
          f"in {seconds:.1f} s ({total / max(seconds, 1e-9):.1f} chips/s)", flush=True)


#: the ``chips`` record keys that are ``IngestConfig`` fields of the same name
CHIP_RECORD_KEYS = ("chip_size", "max_nodata_fraction", "max_cloud_fraction", "max_sar_border_fraction",
                    "shard_max_samples", "shard_max_bytes")


#: the ``IngestConfig`` fields of what a run may read (the manifest's ``reads``)
READ_LIMIT_KEYS = tuple(f.name for f in dataclasses.fields(ReadLimits))


def recorded_reads(manifest: dict, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The read options (href policy, limits) a rebuild of ``manifest`` follows: the ones it records, the
    rebuilding command's own (``given``) for a manifest written before they were recorded. A manifest may
    narrow what a rebuild reads, never widen it by itself: a recorded ``--allow-local-hrefs`` or a limit above
    the command's own needs the command to say so too (``ValueError`` naming the options to pass)."""
    given = given or {}
    defaults = {f.name: f.default for f in dataclasses.fields(IngestConfig) if f.name in READ_LIMIT_KEYS}
    mine = {k: given.get(k) if given.get(k) is not None else defaults.get(k) for k in
            ("allow_local_hrefs", "allow_href_hosts", "deny_href_hosts", *READ_LIMIT_KEYS)}
    reads = manifest.get("reads")
    if not isinstance(reads, dict):
        return mine
    hrefs, limits = reads.get("hrefs") or {}, reads.get("limits") or {}
    out = {"allow_local_hrefs": bool(hrefs.get("allow_local_hrefs")),
           "allow_href_hosts": list(hrefs.get("allow_href_hosts") or []) or mine["allow_href_hosts"],
           "deny_href_hosts": list(dict.fromkeys([*(hrefs.get("deny_href_hosts") or []),
                                                  *(mine["deny_href_hosts"] or [])])) or None,
           **{k: int(limits.get(k, defaults[k])) for k in READ_LIMIT_KEYS}}
    wider = ["--allow-local-hrefs"] if out["allow_local_hrefs"] and not mine["allow_local_hrefs"] else []
    wider += [f"--{k.replace('_', '-')} {out[k]}" for k in READ_LIMIT_KEYS if out[k] > int(mine[k] or defaults[k])]
    if wider:
        raise ValueError(f"the manifest's run was allowed to read more than this command: pass {' '.join(wider)} "
                         "to rebuild it (a manifest cannot widen what a rebuild reads by itself)")
    return out


def config_from_manifest(manifest: dict, out: str, given: dict[str, Any] | None = None, **overrides: Any) -> IngestConfig:
    """The config that rebuilds ``manifest``'s dataset at ``out`` (same items, same parameters, the same
    rule on what may be read: ``recorded_reads``, with ``given`` the rebuilding command's options)."""
    search, chips = manifest.get("search") or {}, manifest.get("chips") or {}
    if not search.get("collections"):
        raise ManifestError("manifest has no search.collections; cannot rebuild from it")
    cfg = IngestConfig(
        catalog=manifest["catalog"], collections=list(search["collections"]), out=out,
        bbox=search.get("bbox"), intersects=search.get("intersects"), datetime=search.get("datetime"),
        max_cloud=search.get("max_cloud"), max_items=search.get("max_items"),
        bands=chips.get("bands"), **{k: chips[k] for k in CHIP_RECORD_KEYS if k in chips},
        ids=[it["id"] for it in manifest.get("items", [])], **recorded_reads(manifest, given),
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg
