"""Malformed STAC JSON (fuzzed with hypothesis), items without geometry, assets of unknown media type:
each item is planned or refused with one ``ItemError`` line; nothing else is raised."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_fixtures import REAL_ITEMS, load_item

from ofa.ingest.hrefs import LOCAL_FILES
from ofa.ingest.items import ItemError, plan_item

BASES = [load_item(c, s) for c, s in REAL_ITEMS]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                      st.text(max_size=8))
json_any = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                          st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                        max_leaves=8)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _plan_or_refuse(item) -> None:
    """The contract: an ItemPlan or an ItemError with a one-line message."""
    try:
        plan_item(item)
    except ItemError as exc:
        assert str(exc) and "\n" not in str(exc), repr(exc)


def _paths(doc, prefix=()):
    """Every (path) inside a JSON document, for picking where to mutate."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


@FUZZ
@given(base=st.sampled_from(range(len(BASES))), pick=st.integers(0, 10**6), value=json_any,
       delete=st.booleans())
def test_mutated_real_items_are_planned_or_refused(base, pick, value, delete):
    item = copy.deepcopy(BASES[base])
    paths = [p for p in _paths(item) if p][:4000]
    path = paths[pick % len(paths)]
    parent = item
    for part in path[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _plan_or_refuse(item)


@FUZZ
@given(doc=json_any)
def test_arbitrary_json_is_refused_cleanly(doc):
    _plan_or_refuse(doc)


@FUZZ
@given(text=st.text(max_size=200))
def test_malformed_json_text_never_reaches_the_planner_unnoticed(text):
    try:
        doc = json.loads(text)
    except ValueError:
        return                              # the STAC client refuses it before us
    _plan_or_refuse(doc)


def test_item_without_geometry_is_planned():
    item = copy.deepcopy(BASES[1])
    item["geometry"] = None
    item.pop("bbox", None)
    plan = plan_item(item)
    assert plan.geometry is None and plan.channels


def test_asset_with_unknown_media_type_is_refused_at_read(tmp_path):
    """A band asset whose href is not a raster (unknown media type) skips the item with one line."""
    from ofa.ingest.chips import ChipOptions, process_item

    item = copy.deepcopy(BASES[5])                    # NAIP: one 'image' asset
    blob = tmp_path / "image.xyz"
    blob.write_bytes(b"\x00not a raster at all\x00" * 100)
    item["assets"]["image"].update(href=str(blob), type="application/x-unknown-thing")
    plan = plan_item(item, policy=LOCAL_FILES)
    with pytest.raises(ItemError) as info:
        process_item(plan, ChipOptions(64))
    message = str(info.value)
    assert "image" in message and "\n" not in message, message
