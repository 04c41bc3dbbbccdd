"""Sentinel-1 polarisations: VV/VH scenes and HH/HV scenes both fill the two sentinel-1 channels
(co-polarisation, cross-polarisation); a single-polarisation scene carries the cross-polarisation
zero-filled and invalid (``band_valid``)."""
from __future__ import annotations

import copy

import pytest

from ingest_fixtures import load_item

from ofa.ingest.items import ItemError, plan_item

#: the Earth Search form of a dual-pol IW GRDH product (tests/data/SOURCES.md)
S1 = ("sentinel-1-grd", "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993")


def _single(pol: str) -> dict:
    """The product as a single-polarisation scene: only its VV measurement, under the key ``pol`` (no
    calibration annotations linked: the values stay amplitude digital numbers)."""
    item = load_item(*S1)
    for key in [k for k in item["assets"] if k.startswith("schema-")]:
        del item["assets"][key]
    template = item["assets"].pop("vv")
    item["assets"].pop("vh")
    template["href"] = template["href"].replace("iw-vv", f"iw-{pol}")
    item["assets"][pol] = template
    item["properties"]["sar:polarizations"] = [pol.upper()]
    return item


def _with_pols(item: dict, pols: list[str]) -> dict:
    """An HH-only item with its measurement asset repeated under each of ``pols``."""
    item = copy.deepcopy(item)
    template = item["assets"].pop("hh")
    for pol in pols:
        asset = copy.deepcopy(template)
        asset["href"] = template["href"].replace("iw-hh", f"iw-{pol}")
        asset["title"] = f"{pol.upper()} Data"
        item["assets"][pol] = asset
    return item


@pytest.mark.parametrize("pols", [["vv", "vh"], ["hh", "hv"]])
def test_dual_pol_scenes_fill_both_channels(pols):
    plan = plan_item(_with_pols(_single("hh"), pols))
    assert plan.sensor == "sentinel-1"
    assert [c.name for c in plan.channels] == ["VV", "VH"]
    assert [c.asset for c in plan.channels] == pols
    assert [c.href.rsplit("/", 1)[-1] for c in plan.channels] == [f"iw-{p}.tiff" for p in pols]
    assert all(c.nodata == 0 and c.wavelength == pytest.approx(5.405) for c in plan.channels)


def test_vv_wins_over_hh_and_single_pol_keeps_two_channels():
    plan = plan_item(_with_pols(_single("hh"), ["hh", "hv", "vv", "vh"]))
    assert [c.asset for c in plan.channels] == ["vv", "vh"]
    single = plan_item(_single("hh"))
    assert [(c.name, c.asset, c.valid) for c in single.channels] == [("VV", "hh", True), ("VH", "", False)]
    assert plan_item(_single("hh"), bands=["VV"]).channels == single.channels   # --bands uses the same rule
    item = _single("hh")
    del item["assets"]["hh"]
    with pytest.raises(ItemError, match=r"no band of sensor sentinel-1 .*tried vv, VV, hh, HH, vh, VH, hv, HV"):
        plan_item(item)


@pytest.mark.parametrize("pol", ["vh", "hv"])
def test_cross_pol_only_scenes_are_symmetric(pol):
    """A VH-only (or HV-only) scene, such as a stripmap product distributed with one polarisation, keeps the
    co-polarisation channel zero-filled and invalid, as a VV-only scene keeps the cross-polarisation."""
    plan = plan_item(_single(pol))
    assert [(c.name, c.asset, c.valid) for c in plan.channels] == [("VV", "", False), ("VH", pol, True)]
    assert plan.channels[1].href.endswith(f"iw-{pol}.tiff") and plan.quantity == "amplitude_dn"
    # --bands VV on a VH-only scene leaves nothing to read: refused with the reason
    with pytest.raises(ItemError, match="no band of sensor sentinel-1"):
        plan_item(_single(pol), bands=["VV"])
