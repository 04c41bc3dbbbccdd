"""STAC search through pystac-client, with the property filters applied client-side (many
servers, rustac's memory backend among them, have no query/filter extension)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ofa.ingest.hrefs import policy_for
from ofa.ingest.limits import ReadLimits, refused_stub
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


class ResponseTooLarge(SearchError):
    """A STAC API response over ``max_stac_bytes``."""


def _bounded_body(limit: int) -> Callable[..., Any]:
    """A requests response hook that reads the body (decompressed) up to ``limit`` bytes and refuses more,
    before requests would read it whole (redirect responses included)."""
    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        declared = response.headers.get("Content-Length", "")
        body = bytearray()
        if not (declared.isdigit() and int(declared) > limit):
            for chunk in response.iter_content(1 << 16):
                body += chunk
                if len(body) > limit:
                    break
        if len(body) > limit or (declared.isdigit() and int(declared) > limit):
            response.close()
            raise ResponseTooLarge(f"a STAC response over {limit:,} bytes from {clean_href(response.url)} "
                                   "(--max-stac-bytes)")
        response._content = bytes(body)   # what requests' own read would have stored
        return response
    return hook


def open_client(catalog: str, limits: ReadLimits | None = None) -> Any:
    """A pystac-client ``Client`` on ``catalog`` whose responses are bounded by ``limits.max_stac_bytes``."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    stac_io = StacApiIO()
    stac_io.session.hooks["response"].append(_bounded_body((limits or ReadLimits()).max_stac_bytes))
    return Client.open(catalog, stac_io=stac_io)


def _iter_items(catalog: str, params: SearchParams, ids: list[str] | None, limits: ReadLimits) -> Iterator[dict]:
    from ofa.ingest.static_catalog import is_static, static_items

    if is_static(catalog):   # a catalog on disk: walked inside its folder, filtered here
        try:
            yield from static_items(catalog, params, ids, policy_for(catalog), limits)
        except Exception as exc:  # noqa: BLE001 - pystac wraps why a link failed (the href policy, a limit) as the cause
            why = f"{exc} ({exc.__cause__})" if exc.__cause__ else str(exc)
            raise SearchError(f"cannot read the STAC catalog {catalog}: {' '.join(why.split())[:400]}") from None
        return
    try:
        client = open_client(catalog, limits)
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


def search_items(catalog: str, params: SearchParams, ids: list[str] | None = None,
                 limits: ReadLimits | None = None) -> list[dict]:
    """Items matching ``params`` (cloud filter and ``max_items`` applied here), in a fixed order:
    sorted by collection then id, so a rerun plans the same work in the same order. An item whose JSON is
    over ``limits`` (size, nesting) stays as a stub naming why (``limits.refused_stub``): planning skips it."""
    limits = limits or ReadLimits()
    selected: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for item in _iter_items(catalog, params, ids, limits):
        if not isinstance(item, dict):
            continue
        key = (str(item.get("collection")), str(item.get("id")))
        refused = limits.item_refusal(item)
        if key in seen or (not refused and not passes_cloud(item, params.max_cloud)):
            continue
        seen.add(key)
        selected.append(refused_stub(item, refused) if refused else _clean_item(item))
        if params.max_items is not None and len(selected) >= params.max_items:
            break
    return sorted(selected, key=lambda it: (str(it.get("collection")), str(it.get("id"))))
