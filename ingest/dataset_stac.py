"""The dataset as STAC: ``stac/collection.json`` (a STAC 1.1 Collection) beside ``manifest.json``, with the
sample index ``index.parquet`` (``sample_index``) as an asset.

The Collection says what the samples cover (spatial and temporal extent from their own ``meta.json``),
what they hold (``summaries``: sensors, bands with wavelengths and statistics, quantities, GSD, chip
size), where they came from (links ``via`` the STAC API searched and ``derived_from`` each source
collection, whose licence and providers it repeats) and carries the manifest and the index as assets
with their sha256 (``file:checksum``, a sha2-256 multihash). Hrefs are relative, so the folder can move.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from ofa.ingest.dataset.contract import MANIFEST_NAME, statistics_for
from ofa.ingest.geoparquet import PARQUET_MEDIA_TYPE, union_bbox
from ofa.ingest.plans import clean_href, redact
from ofa.ingest.sample_index import INDEX_NAME, index_bytes, index_table, read_metas
from ofa.ingest.sensors import SENSORS
from ofa.ingest.storage import get_fs, join
from ofa.ingest.version import package_version

log = logging.getLogger("ofa.ingest")

STAC_VERSION = "1.1.0"
COLLECTION_PATH = "stac/collection.json"
FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
EO_EXT = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
#: SPDX ids STAC 1.1 accepts besides SPDX expressions; anything else makes the licence "other"
_NOT_SPDX = ("proprietary", "various", "other")


def multihash_sha256(data: bytes) -> str:
    """``file:checksum`` of ``data``: the sha2-256 multihash (code 0x12, length 0x20) in hex."""
    return "1220" + hashlib.sha256(data).hexdigest()


def fetch_source_collections(catalog: str | None, ids: list[str]) -> dict[str, dict]:
    """The source collections' JSON from the catalog; {} (and a warning) when it cannot be reached."""
    if not catalog or not ids:
        return {}
    try:
        from ofa.ingest.hrefs import policy_for
        from ofa.ingest.limits import ReadLimits
        from ofa.ingest.search import open_client
        from ofa.ingest.static_catalog import is_static, static_collections

        if is_static(catalog):
            return static_collections(catalog, ids, policy_for(catalog), ReadLimits())
        client = open_client(catalog)   # responses bounded as the search's are
        return {cid: client.get_collection(cid).to_dict(transform_hrefs=False) for cid in ids}
    except Exception as exc:  # noqa: BLE001 - the collection is still written, without the sources' licence
        log.warning("%s: source collections not read (%s: %s); licence 'other', no providers", catalog,
                    type(exc).__name__, redact(str(exc)))
        return {}


def _licence(sources: dict[str, dict]) -> str:
    found = sorted({str(c.get("license")) for c in sources.values() if c.get("license")})
    if not found or any(lic.lower() in _NOT_SPDX for lic in found):
        return found[0] if len(found) == 1 else "other"
    return " AND ".join(found)


def _providers(sources: dict[str, dict]) -> list[dict]:
    out: dict[str, dict] = {}
    for coll in sources.values():
        for provider in coll.get("providers") or []:
            if isinstance(provider, dict) and provider.get("name"):
                out.setdefault(provider["name"], provider)
    out["ofa"] = {"name": "ofa", "roles": ["processor"],
                  "description": f"chips cut, filtered and sharded by ofa ingest {package_version()}"}
    return list(out.values())


def _source_links(manifest: dict, sources: dict[str, dict]) -> list[dict]:
    catalog = manifest.get("catalog")
    links = [{"rel": "root", "href": "./collection.json", "type": "application/json"}]
    if catalog:
        links.append({"rel": "via", "href": catalog, "type": "application/json", "title": "STAC API searched"})
    for cid in (manifest.get("search") or {}).get("collections") or []:
        coll = sources.get(cid, {})
        self_link = next((ln["href"] for ln in coll.get("links") or [] if ln.get("rel") == "self"), None)
        href = self_link or (f"{str(catalog).rstrip('/')}/collections/{cid}" if catalog else None)
        if href:  # hrefs copied from a catalog never carry its query strings (signed-URL tokens) or credentials
            links.append({"rel": "derived_from", "href": clean_href(href), "type": "application/json",
                          "title": coll.get("title") or f"source collection {cid}"})
    seen = set()
    for coll in sources.values():
        for link in coll.get("links") or []:
            if link.get("rel") == "license" and link.get("href") and clean_href(link["href"]) not in seen:
                seen.add(clean_href(link["href"]))
                links.append({**link, "href": clean_href(link["href"])})
    return links


def _band_summaries(manifest: dict, sensors: list[str]) -> list[dict]:
    """One STAC 1.1 band object per sensor band: name, wavelength, GSD and the manifest's statistics."""
    out = []
    stats = manifest.get("statistics") or {}
    for sensor in sensors:
        spec = SENSORS.get(sensor)
        if spec is None:
            continue
        entry = statistics_for(stats, sensor, spec.quantity) or {}
        names = entry.get("bands") or []
        for band in spec.bands:
            obj: dict[str, Any] = {"name": band.name, "ofa:sensor": sensor, "eo:center_wavelength": band.wavelength,
                                   "gsd": band.gsd}
            if band.common_name:
                obj["eo:common_name"] = band.common_name
            if band.name in names:
                i = names.index(band.name)
                values = {k: entry[src][i] for k, src in (("count", "count"), ("mean", "mean"), ("stddev", "std"),
                                                          ("minimum", "min"), ("maximum", "max"))
                          if entry.get(src) and entry[src][i] is not None}
                if values:
                    obj["statistics"] = values
            out.append(obj)
    return out


def _iso(stamp: Any) -> str:
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def dataset_collection(manifest: dict, dataset_id: str, table: Any, files: dict[str, bytes],
                       sources: dict[str, dict]) -> dict:
    """The STAC 1.1 Collection of a dataset: ``table`` is its index, ``files`` the bytes of the manifest and
    the index (for their checksums), ``sources`` the source collections' JSON by id."""
    import pyarrow.compute as pc

    sensors = sorted(set(table.column("sensor").drop_null().to_pylist()))
    boxes = [list(b.values()) for b in table.column("bbox").drop_null().to_pylist()]
    times = table.column("datetime").drop_null()
    start, end = (pc.min(times).as_py(), pc.max(times).as_py()) if len(times) else (None, None)
    cloud = table.column("cloud_fraction").drop_null()
    summaries: dict[str, Any] = {
        "ofa:sensor": sensors, "bands": _band_summaries(manifest, sensors),
        "ofa:quantity": sorted(set(table.column("quantity").drop_null().to_pylist())),
        "gsd": sorted(set(table.column("gsd").drop_null().to_pylist())),
        "ofa:chip_size": [(manifest.get("chips") or {}).get("chip_size")],
        "collection": sorted(set(table.column("collection").drop_null().to_pylist())),
    }
    if start is not None:
        summaries["datetime"] = {"minimum": _iso(start), "maximum": _iso(end)}
    if len(cloud):
        summaries["ofa:cloud_fraction"] = {"minimum": pc.min(cloud).as_py(), "maximum": pc.max(cloud).as_py()}
    counts = {s: int(pc.sum(pc.equal(table.column("sensor"), s)).as_py() or 0) for s in sensors}
    collections = ", ".join((manifest.get("search") or {}).get("collections") or [])
    return {
        "type": "Collection", "stac_version": STAC_VERSION, "stac_extensions": [EO_EXT, FILE_EXT],
        "id": dataset_id, "title": f"ofa dataset {dataset_id}",
        "description": f"{table.num_rows} chips of {manifest.get('chips', {}).get('chip_size')} px from {collections} "
                       f"({manifest.get('catalog')}), as WebDataset shards ({manifest.get('format')} "
                       f"v{manifest.get('format_version')}) with a GeoParquet sample index.",
        "license": _licence(sources), "providers": _providers(sources),
        "extent": {"spatial": {"bbox": [union_bbox(boxes) or [-180.0, -90.0, 180.0, 90.0]]},
                   "temporal": {"interval": [[_iso(start) if start else None, _iso(end) if end else None]]}},
        "summaries": summaries, "ofa:samples": counts,
        "links": _source_links(manifest, sources),
        "assets": {
            "manifest": {"href": f"../{MANIFEST_NAME}", "type": "application/json", "roles": ["metadata"],
                         "title": "ofa manifest: search, items, shards with sha256, band statistics",
                         "file:checksum": multihash_sha256(files["manifest"]), "file:size": len(files["manifest"])},
            "index": {"href": f"../{INDEX_NAME}", "type": PARQUET_MEDIA_TYPE, "roles": ["metadata"],
                      "title": "GeoParquet 1.1 sample index: one row per sample",
                      "file:checksum": multihash_sha256(files["index"]), "file:size": len(files["index"])},
        },
    }


def dataset_id_of(url: str) -> str:
    """A Collection id from the dataset URL: its last path part."""
    name = url.rstrip("/").rsplit("/", 1)[-1].split("://")[-1]
    return name or "ofa-dataset"


def _existing_sources(fs: Any, root: str) -> dict[str, dict]:
    """What an earlier ``stac/collection.json`` said about the sources (licence, providers, licence links)."""
    path = join(root, COLLECTION_PATH)
    if not fs.exists(path):
        return {}
    doc = json.loads(fs.cat_file(path))
    providers = [p for p in doc.get("providers") or [] if p.get("name") != "ofa"]
    links = [ln for ln in doc.get("links") or [] if ln.get("rel") == "license"]
    return {"_earlier": {"license": doc.get("license"), "providers": providers, "links": links}}


def write_dataset_stac(url: str, manifest: dict, storage_options: dict | None = None,
                       sources: dict[str, dict] | None = None) -> dict[str, str]:
    """Write ``index.parquet`` and ``stac/collection.json`` for the dataset at ``url``; ``sources`` (the
    source collections' JSON) are fetched from the manifest's catalog when not given, and fall back on
    what an earlier collection.json said when the catalog cannot be reached."""
    from ofa.ingest.dataset.shard_writer import write_atomic

    fs, root = get_fs(url, storage_options)
    root = root.rstrip("/")
    if sources is None:
        wanted = list((manifest.get("search") or {}).get("collections") or [])
        sources = fetch_source_collections(manifest.get("catalog"), wanted) or _existing_sources(fs, root)
    table = index_table(read_metas(url, manifest, storage_options))
    files = {"manifest": fs.cat_file(join(root, MANIFEST_NAME)), "index": index_bytes(table)}
    write_atomic(fs, join(root, INDEX_NAME), files["index"])
    doc = dataset_collection(manifest, dataset_id_of(url), table, files, sources)
    write_atomic(fs, join(root, COLLECTION_PATH), json.dumps(doc, indent=2).encode())
    return {"index": join(url, INDEX_NAME), "collection": join(url, COLLECTION_PATH)}

