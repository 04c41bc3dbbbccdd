"""Sentinel-1 polarisations: VV/VH scenes and HH/HV scenes both fill the two sentinel-1 channels
(co-polarisation, cross-polarisation); a single-polarisation scene carries the cross-polarisation
zero-filled and invalid (``band_valid``)."""
from __future__ import annotations

import copy

import pytest

from ingest_fixtures import load_item

from ofa.ingest.items import ItemError, plan_item

S1 = ("sentinel-1-grd", "S1A_IW_GRDH_1SSH_20250731T135637_20250731T135702_060328_077F7E")


def _with_pols(item: dict, pols: list[str]) -> dict:
    """The real HH item with its measurement asset repeated under each of ``pols``."""
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
    plan = plan_item(_with_pols(load_item(*S1), pols))
    assert plan.sensor == "sentinel-1"
    assert [c.name for c in plan.channels] == ["VV", "VH"]
    assert [c.asset for c in plan.channels] == pols
    assert [c.href.rsplit("/", 1)[-1] for c in plan.channels] == [f"iw-{p}.tiff" for p in pols]
    assert all(c.nodata == 0 and c.wavelength == pytest.approx(5.405) for c in plan.channels)


def test_vv_wins_over_hh_and_single_pol_keeps_two_channels():
    plan = plan_item(_with_pols(load_item(*S1), ["hh", "hv", "vv", "vh"]))
    assert [c.asset for c in plan.channels] == ["vv", "vh"]
    single = plan_item(load_item(*S1))
    assert [(c.name, c.asset, c.valid) for c in single.channels] == [("VV", "hh", True), ("VH", "", False)]
    assert plan_item(load_item(*S1), bands=["VV"]).channels == single.channels   # --bands uses the same rule
    item = load_item(*S1)
    del item["assets"]["hh"]
    with pytest.raises(ItemError, match=r"VV .*tried vv, VV, hh, HH"):
        plan_item(item)
