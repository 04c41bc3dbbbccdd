"""Search a static STAC catalog on disk (a ``catalog.json``/``collection.json``, an item file, or a folder
holding one), as ``--catalog PATH`` or ``file://`` URL: STAC APIs are searched by pystac-client, which has no
fallback for catalogs without item search.

The walk reads only files inside the catalog's folder (its links checked by the run's href policy, so a
catalog cannot link the walk out of its folder or to a URL), each at most ``max_stac_bytes`` long. Items are
filtered here as an API would: collections, ids, datetime (an instant or an interval, open ends ``..``), and
``bbox``/``intersects`` by bounding boxes (the chip grid keeps only chips touching the search area itself).
Asset hrefs come out absolute (relative ones resolved against the item file), for the href policy to check.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Iterator

from ofa.ingest.hrefs import HrefPolicy, catalog_folder
from ofa.ingest.limits import ReadLimits

#: the file a catalog folder is read from, in this order
ROOT_FILES = ("catalog.json", "collection.json")


def is_static(catalog: str) -> bool:
    """Whether ``catalog`` names a catalog on disk (a path or ``file://`` URL) rather than a STAC API."""
    return catalog_folder(catalog) is not None


def _root_file(catalog: str) -> str:
    path = catalog[len("file://"):] if catalog.lower().startswith("file://") else catalog
    if os.path.isdir(path):
        found = next((os.path.join(path, f) for f in ROOT_FILES if os.path.isfile(os.path.join(path, f))), None)
        if found is None:
            raise FileNotFoundError(f"{catalog}: no {' or '.join(ROOT_FILES)} in this folder")
        return found
    return path


def _stac_io(policy: HrefPolicy, limits: ReadLimits) -> Any:
    """A pystac ``StacIO`` that reads only local files the policy lets a catalog on disk name, bounded in size."""
    from pystac.stac_io import DefaultStacIO

    class Bounded(DefaultStacIO):
        def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
            href = policy.check(str(os.fspath(source)))
            path = href[len("file://"):] if href.lower().startswith("file://") else href
            if "://" in path:
                raise ValueError(f"{href}: a catalog on disk links to a URL; its links are followed on disk only")
            if os.path.getsize(path) > limits.max_stac_bytes:
                raise ValueError(f"{href} is over {limits.max_stac_bytes:,} bytes (--max-stac-bytes)")
            return super().read_text(path, *args, **kwargs)

    return Bounded()


def _read_root(catalog: str, policy: HrefPolicy, limits: ReadLimits) -> Any:
    """The catalog, collection or item at ``catalog``, reading every file of the walk through ``_stac_io``."""
    import pystac

    stac_io = _stac_io(policy, limits)
    path = _root_file(catalog)
    kind = {"Catalog": pystac.Catalog, "Collection": pystac.Collection}.get(stac_io.read_json(path).get("type"))
    if kind is None:
        return pystac.Item.from_file(path, stac_io=stac_io)
    return kind.from_file(path, stac_io=stac_io)   # from_file: the links resolve through ``stac_io`` too


def _when(text: str | None) -> datetime | None:
    if not text or text == "..":
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _in_time(props: dict, interval: str | None) -> bool:
    if not interval:
        return True
    start, _, end = interval.partition("/")
    lo, hi = _when(start), _when(end if end else start)
    first = _when(props.get("start_datetime") or props.get("datetime"))
    last = _when(props.get("end_datetime") or props.get("datetime"))
    return first is not None and (hi is None or first <= hi) and (lo is None or (last or first) >= lo)


def _bounds(geometry: dict) -> tuple[float, float, float, float]:
    xs, ys = [], []
    stack = [geometry.get("coordinates")] + [g.get("coordinates") for g in geometry.get("geometries") or []]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)) and node and isinstance(node[0], (int, float)):
            xs.append(float(node[0]))
            ys.append(float(node[1]))
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return min(xs), min(ys), max(xs), max(ys)


def _in_area(item: dict, params: Any) -> bool:
    area = params.bbox or (_bounds(params.intersects) if params.intersects else None)
    box = item.get("bbox")
    if area is None or not box:
        return True
    w, s, e, n = (float(v) for v in (box[:2] + box[-2:] if len(box) == 6 else box))
    return w <= area[2] and e >= area[0] and s <= area[3] and n >= area[1]


def static_items(catalog: str, params: Any, ids: list[str] | None, policy: HrefPolicy,
                 limits: ReadLimits) -> Iterator[dict]:
    """The items of the catalog on disk that match ``params`` (``search.SearchParams``) and ``ids``, as dicts
    with absolute asset hrefs."""
    import pystac

    root = _read_root(catalog, policy, limits)
    found = [root] if isinstance(root, pystac.Item) else root.get_items(recursive=True)
    for item in found:
        if (params.collections and item.collection_id not in params.collections) or (ids and item.id not in ids):
            continue
        item.make_asset_hrefs_absolute()
        doc = item.to_dict(include_self_link=True, transform_hrefs=False)
        if _in_time(doc.get("properties") or {}, params.datetime) and _in_area(doc, params):
            yield doc


def static_collections(catalog: str, ids: list[str], policy: HrefPolicy, limits: ReadLimits) -> dict[str, dict]:
    """The JSON of the collections ``ids`` in the catalog on disk (walked as ``static_items`` walks it)."""
    import pystac

    root = _read_root(catalog, policy, limits)
    if isinstance(root, pystac.Item):
        return {}
    found = [root] if isinstance(root, pystac.Collection) else []
    found += list(root.get_all_collections())
    return {c.id: c.to_dict(transform_hrefs=False) for c in found if c.id in ids}
