"""Read plans for STAC items whose data is in Zarr: ESA EOPF products (the whole product as one
asset, or assets pointing at groups and arrays inside it) and generic Zarr datacubes.

A channel's href is ``{store root}#{array path}|{array path}|...``: the store (a folder, ``s3://``
or ``https://`` URL) and the arrays inside it that may hold the band, most specific first; the
reader opens the first one that exists. The candidates come from the item (an asset that points
at the band's array, a datacube's ``cube:dimensions``/``cube:variables``) and from the sensor
registry (``BandSpec.zarr``: the EOPF layout; band names and asset keys as variable names).
"""
from __future__ import annotations

from dataclasses import dataclass

from ofa.ingest.plans import ChannelPlan, ItemError, baseline_offset, clean_href
from ofa.ingest.sensors import BandSpec, BaselineOffset, CloudMask

#: asset media types of Zarr stores (the EOPF STAC items use the first)
ZARR_TYPES = ("application/vnd+zarr", "application/vnd.zarr", "application/x-zarr")


@dataclass(frozen=True)
class ZarrAsset:
    """A Zarr asset of an item: its key, the store root and the path inside the store it points at."""

    key: str
    root: str
    path: str
    meta: dict


@dataclass(frozen=True)
class _Pick:
    asset: ZarrAsset
    path: str
    index: int


def is_zarr_asset(asset: object) -> bool:
    """True for an asset typed as Zarr or whose href names a ``*.zarr`` store."""
    if not isinstance(asset, dict) or not asset.get("href"):
        return False
    media = str(asset.get("type") or "").split(";")[0].strip().lower()
    return media in ZARR_TYPES or any(s.endswith(".zarr") for s in clean_href(str(asset["href"])).split("/"))


def split_store(href: str) -> tuple[str, str]:
    """(store root, path inside it) of a clean href: the root ends at the last ``*.zarr`` path
    segment; without one the whole href is the root."""
    parts = href.rstrip("/").split("/")
    ends = [i for i, s in enumerate(parts) if s.endswith(".zarr")]
    if not ends:
        return href.rstrip("/"), ""
    return "/".join(parts[:ends[-1] + 1]), "/".join(parts[ends[-1] + 1:])


def zarr_assets(assets: dict, bands: tuple[BandSpec, ...]) -> list[ZarrAsset] | None:
    """The item's Zarr assets, or None when the item is read as GeoTIFFs (no Zarr asset, or a
    registry key of a wanted band names a non-Zarr asset)."""
    if any(k in assets and not is_zarr_asset(assets[k]) for b in bands for k in b.keys):
        return None
    out = [ZarrAsset(k, *split_store(clean_href(str(a["href"]))), a) for k, a in assets.items() if is_zarr_asset(a)]
    return out or None


def _entries(asset: dict) -> list[dict]:
    entries = asset.get("bands") or asset.get("eo:bands") or []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _names(band: BandSpec | CloudMask) -> list[str]:
    """Names a band's variable may have in a datacube: band name, common name, asset keys, EOPF array names."""
    names = [getattr(band, "name", None), getattr(band, "common_name", None), *band.keys,
             *(p.rsplit("/", 1)[-1] for p in band.zarr)]
    return list(dict.fromkeys(n for n in names if n))


def _matches(key: str, names: list[str]) -> bool:
    # EOPF asset keys carry the resolution: B02_10m, SCL_20m
    return any(key == n or key.startswith(f"{n}_") for n in names)


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _cube_pick(za: ZarrAsset, names: list[str]) -> _Pick | None:
    """The variable holding a band (one of ``names``) along a datacube's ``bands`` dimension, and its
    position there, from the asset's ``cube:dimensions``/``cube:variables``."""
    dims = za.meta.get("cube:dimensions") or {}
    variables = za.meta.get("cube:variables") or {}
    for dim, spec in dims.items() if isinstance(dims, dict) else ():
        values = spec.get("values") if isinstance(spec, dict) and spec.get("type") == "bands" else None
        hit = next((i for i, v in enumerate(values or []) if v in names), None)
        var = next((v for v, s in variables.items() if isinstance(s, dict) and dim in (s.get("dimensions") or [])
                    and s.get("type", "data") == "data"), None)
        if hit is not None and var:
            return _Pick(za, _join(za.path, var), hit + 1)
    return None


def _picks(band: BandSpec | CloudMask, zassets: list[ZarrAsset], native_gsd: float | None) -> list[_Pick]:
    """Candidate arrays for a band or mask, most specific first."""
    names = _names(band)
    index = getattr(band, "index", 1)
    if isinstance(band, BandSpec):
        cube = next((p for za in zassets if (p := _cube_pick(za, names))), None)
        if cube:
            return [cube]
    arrays = [za for za in zassets if za.path and za.path.rsplit("/", 1)[-1] in names]   # assets at the band's array
    native = [za for za in arrays if native_gsd is None or za.meta.get("gsd") in (None, native_gsd)]
    picks = [_Pick(za, za.path, 1) for za in native]
    for root in dict.fromkeys(za.root for za in zassets):   # the registry's layout (EOPF) in each store
        owner = next((za for za in zassets if za.root == root and not za.path), None) or \
            next(za for za in zassets if za.root == root)
        picks += [_Pick(owner, path, 1) for path in band.zarr]
    for za in zassets:   # store roots, datacubes, groups for the band: variables named after it
        variables = za.meta.get("cube:variables")
        listed = _matches(za.key, names) or any(e.get("name") in names for e in _entries(za.meta))
        if za in arrays or (za.path and variables is None and not listed):
            continue
        for name in names:
            if not isinstance(variables, dict) or name in variables:
                picks.append(_Pick(za, _join(za.path, name), index))
    picks += [_Pick(za, za.path, 1) for za in arrays if za not in native]
    if not picks:
        return []
    first = picks[0]
    same = [p for p in picks if p.asset.root == first.asset.root and p.index == first.index]
    return [p for i, p in enumerate(same) if p.path not in {q.path for q in same[:i]}]


def zarr_href(picks: list[_Pick]) -> str:
    """The href a reader resolves: the store root and the candidate array paths."""
    return f"{picks[0].asset.root}#" + "|".join(p.path for p in picks)


def _band_entry(band: BandSpec, zassets: list[ZarrAsset]) -> dict:
    names = _names(band)
    for za in zassets:
        for e in _entries(za.meta):
            if e.get("name") in names or e.get("common_name") in names or e.get("eo:common_name") == band.common_name:
                return e
    return {}


def zarr_channel(band: BandSpec, props: dict, rule: BaselineOffset | None, zassets: list[ZarrAsset]) -> ChannelPlan:
    """Where ``band`` is read from in a Zarr item. Scale, offset and nodata are the item's or the
    registry's here (the offset by the baseline rule, as for COGs); the reader replaces them with the
    array's CF encoding where it has one."""
    picks = _picks(band, zassets, band.gsd)
    if not picks:
        raise ItemError(f"no Zarr array for band {band.name} (assets: {', '.join(za.key for za in zassets)})")
    own = picks[0].path == picks[0].asset.path and bool(picks[0].path)   # an asset at this band's array
    asset = picks[0].asset.meta if own else {}
    entry = _band_entry(band, zassets)
    raster = dict((asset.get("raster:bands") or [{}])[0])
    raster.setdefault("scale", asset.get("raster:scale", band.scale))   # STAC 1.1 asset-level fields
    if asset.get("raster:offset") is not None:
        raster.setdefault("offset", asset["raster:offset"])
    scale = float(1.0 if raster["scale"] is None else raster["scale"])
    nodata = raster.get("nodata", asset.get("nodata", band.nodata))
    return ChannelPlan(
        name=band.name, asset=picks[0].asset.key, href=zarr_href(picks), index=picks[0].index,
        wavelength=float(entry.get("eo:center_wavelength") or entry.get("center_wavelength") or band.wavelength),
        gsd=float(asset.get("gsd") or band.gsd), scale=scale, offset=baseline_offset(rule, props, raster, scale, band.offset),
        nodata=None if nodata is None else float(nodata),
    )


def zarr_mask(mask: CloudMask | None, zassets: list[ZarrAsset]) -> tuple[str | None, str | None]:
    """(asset key, href) of the cloud mask in a Zarr item; (None, None) without a mask rule."""
    if mask is None:
        return None, None
    picks = _picks(mask, zassets, None)
    if not picks:
        return None, None
    return picks[0].asset.key, zarr_href(picks)


@dataclass(frozen=True)
class ZarrBands:
    """Where an item's bands and cloud mask are in its Zarr assets (the planner's ``BandLocator`` for Zarr)."""

    zassets: list[ZarrAsset]

    def channel(self, band: BandSpec, props: dict, rule: BaselineOffset | None) -> ChannelPlan:
        return zarr_channel(band, props, rule, self.zassets)

    def mask(self, mask: CloudMask | None) -> tuple[str | None, str | None]:
        return zarr_mask(mask, self.zassets)


def zarr_bands(assets: dict, bands: tuple[BandSpec, ...]) -> ZarrBands | None:
    """The item's bands located in its Zarr assets; None when it is read as GeoTIFFs (``zarr_assets``)."""
    zassets = zarr_assets(assets, bands)
    return ZarrBands(zassets) if zassets else None
