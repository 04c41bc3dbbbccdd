"""Shared test fixtures. The helper modules beside the tests (``ingest_fixtures``, ``pipeline_fixtures``,
``geobench_fixtures``, ``ingest_kill``) are imported by name: this folder is put on ``sys.path`` here,
once, for every test module (and for any import mode)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


class Catalog(NamedTuple):
    """A STAC API on 127.0.0.1 serving the real fixture items over local COGs."""

    url: str
    items: list[dict]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Iterator[Catalog]:
    """The fixture items (``ingest_fixtures.localized_items``) served by ``rustac serve``; one per module."""
    from ingest_fixtures import collections_for, localized_items

    from ofa.infra.localstack import stac_server

    items = localized_items(tmp_path_factory.mktemp("catalog"))
    with stac_server(collections_for(items), items) as url:
        yield Catalog(url, items)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real-data folder (``real/``, ``stac/``, ``raster/``) named by ``OFA_REAL_DATA``; tests that
    need it carry the ``real`` marker and are skipped, with the reason, when it is not set."""
    from real_data import real_data_root

    return real_data_root()


@pytest.fixture(scope="module")
def geobench_root(tmp_path_factory) -> Path:
    """A toy GEO-Bench tree (``geobench_fixtures.write_toy_geobench``): classification and segmentation tasks."""
    from geobench_fixtures import write_toy_geobench

    return write_toy_geobench(tmp_path_factory.mktemp("geobench"))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread: tiny tensors gain nothing from threads, and lose a lot on a busy shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
