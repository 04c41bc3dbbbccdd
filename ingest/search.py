"""STAC search through pystac-client, with the property filters applied client-side (many
servers, rustac's memory backend among them, have no query/filter extension)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from ofa.ingest.plans import clean_href

# pystac_client is imported where a search runs: `ofa --help` imports this module (for SearchParams)


@dataclass(frozen=True)
class SearchParams:
    """What to search for; ``to_dict`` is what the manifest records."""

    collections: tuple[str, ...]
    bbox: tuple[float, float, float, float] | None = None
    intersects: dict | None = None
    datetime: str | None = None
    max_cloud: float | None = None     # percent, on eo:cloud_cover; items without it pass
    max_items: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "collections": list(self.collections),
            "bbox": None if self.bbox is None else list(self.bbox),
            "intersects": self.intersects,
            "datetime": self.datetime,
            "max_cloud": self.max_cloud,
            "max_items": self.max_items,
        }


class SearchError(RuntimeError):
    """The catalog could not be searched."""


class UnknownCollectionError(SearchError):
    """The search names a collection the catalog does not have."""


def check_collections(client: Any, catalog: str, wanted: tuple[str, ...]) -> None:
    """Raise ``UnknownCollectionError`` naming the catalog's ``/collections`` if ``wanted`` has one it lacks.

    Only for APIs that list their collections; a static catalog is not walked (the search then finds nothing)."""
    from pystac_client.conformance import ConformanceClasses

    if not client.conforms_to(ConformanceClasses.COLLECTIONS):
        return
    try:
        have = sorted(c.id for c in client.get_collections())
    except Exception:  # noqa: BLE001 - an unlisted catalog: leave it to the search
        return
    missing = [c for c in wanted if c not in have]
    if missing and have:
        raise UnknownCollectionError(f"--collection {', '.join(missing)}: not in the catalog {catalog} "
                                     f"(its /collections: {', '.join(have)})")


def passes_cloud(item: dict, max_cloud: float | None) -> bool:
    """Client-side ``eo:cloud_cover <= max_cloud`` (items that do not say pass)."""
    if max_cloud is None:
        return True
    cover = (item.get("properties") or {}).get("eo:cloud_cover")
    return cover is None or float(cover) <= max_cloud


def _iter_items(catalog: str, params: SearchParams, ids: list[str] | None) -> Iterator[dict]:
    from pystac_client import Client

    try:
        client = Client.open(catalog)
    except Exception as exc:  # noqa: BLE001
        raise SearchError(f"cannot open STAC catalog {catalog}: {exc}") from None
    check_collections(client, catalog, params.collections)
    kwargs: dict[str, Any] = {"collections": list(params.collections), "limit": 100}
    if params.bbox is not None:
        kwargs["bbox"] = list(params.bbox)
    if params.intersects is not None:
        kwargs["intersects"] = params.intersects
    if params.datetime:
        kwargs["datetime"] = params.datetime
    if ids:
        kwargs["ids"] = list(ids)
    try:
        yield from client.search(**kwargs).items_as_dicts()
    except Exception as exc:  # noqa: BLE001
        raise SearchError(f"STAC search on {catalog} failed: {exc}") from None


def _clean_item(item: dict) -> dict:
    """The item with query strings and credentials stripped from its asset and link hrefs, so
    signed URLs never reach a file (signing happens at read time, through the hook)."""
    for asset in (item.get("assets") or {}).values():
        if isinstance(asset, dict) and isinstance(asset.get("href"), str):
            asset["href"] = clean_href(asset["href"])
    for link in item.get("links") or []:
        if isinstance(link, dict) and isinstance(link.get("href"), str):
            link["href"] = clean_href(link["href"])
    return item


def search_items(catalog: str, params: SearchParams, ids: list[str] | None = None) -> list[dict]:
    """Items matching ``params`` (cloud filter and ``max_items`` applied here), in a fixed order:
    sorted by collection then id, so a rerun plans the same work in the same order."""
    selected: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for item in _iter_items(catalog, params, ids):
        key = (str(item.get("collection")), str(item.get("id")))
        if key in seen or not passes_cloud(item, params.max_cloud):
            continue
        seen.add(key)
        selected.append(_clean_item(item))
        if params.max_items is not None and len(selected) >= params.max_items:
            break
    return sorted(selected, key=lambda it: (str(it.get("collection")), str(it.get("id"))))
