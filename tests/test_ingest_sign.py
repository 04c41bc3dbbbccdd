"""The href-signing hook: called with clean hrefs, used only to open files, never recorded."""
from __future__ import annotations


import pytest

import ingest_fixtures
from ingest_fixtures import collections_for, localized_items, signed_items

from ofa.infra.localstack import stac_server
from ofa.ingest.job import IngestConfig, IngestError, run_ingest


def test_sign_href_hook(tmp_path, monkeypatch):
    root = tmp_path / "catalog"
    items = signed_items([it for it in localized_items(root) if it["collection"] == "naip"], root)
    monkeypatch.setenv("OFA_TEST_SIGN_ROOT", str(root))
    ingest_fixtures.SIGN_CALLS.clear()
    with stac_server(collections_for(items), items) as url:
        def cfg(out: str, hook):
            return IngestConfig(catalog=url, allow_local_hrefs=True, collections=["naip"], out=str(tmp_path / out), chip_size=80, workers=1,
                                progress=False, sign_href=hook)

        unsigned = run_ingest(cfg("unsigned", None))
        assert len(unsigned["skipped"]) == 2 and not unsigned["shards"]
        signed = run_ingest(cfg("signed", "ingest_fixtures:sign_local"))
        assert not signed["skipped"] and signed["counts"]["kept"] > 0
        with pytest.raises(IngestError, match="no_such_hook"):
            run_ingest(cfg("bad", "ingest_fixtures:no_such_hook"))
    assert ingest_fixtures.SIGN_CALLS and all(h.startswith(ingest_fixtures.SIGNED_PREFIX) and "?" not in h
                                              for h in ingest_fixtures.SIGN_CALLS)
    for path in (tmp_path / "signed").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"SECRET-TOKEN" not in data and str(root).encode() not in data, path
