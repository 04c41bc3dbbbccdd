"""Planted secrets never leave: S3 credentials (storage options and environment), signed-URL tokens
in STAC hrefs and in what a signing hook returns, a password in the catalog URL. Every output is
grepped for them: stdout/stderr of ingest (a good run and a failing one), ``ofa manifest show`` /
``verify``, every object of the dataset (manifest, shards), and a training run's checkpoints and logs."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest_fixtures import collections_for, localized_items

from support.faultproxy import FaultPlan, FaultProxy
from ofa.infra.localstack import free_port, s3_server, stac_server

pytestmark = pytest.mark.timeout(240)

SECRET_KEY = "PLANTEDsecretKEY0123456789abcdefXYZ"
ACCESS_KEY = "AKIAPLANTEDACCESS01"
SIG = "PLANTEDsigTOKEN42"
HOOK_SIG = "PLANTEDhookTOKEN77"
PASSWORD = "PLANTEDpassw0rd"
PLANTED = (SECRET_KEY, ACCESS_KEY, SIG, HOOK_SIG, PASSWORD)


def sign_planted(href: str) -> str:
    """A signing hook that adds a token; for the probe item it points at a 404 so errors quote the URL."""
    if "GONE" in href:   # GDAL quotes a missing file's name in its error: with the token, if nobody strips it
        return f"/nonexistent/ofa/GONE/image.tif?se=2030&sig={HOOK_SIG}"
    if "BROKEN" in href:
        return f"http://127.0.0.1:{os.environ['OFA_TEST_STAC_PORT']}/BROKEN/image.tif?se=2030&sig={HOOK_SIG}"
    return href


def _leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in PLANTED if s.encode() in data]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    items = [copy.deepcopy(it) for it in localized_items(root) if it["collection"] == "naip"]
    for item in items:
        for asset in item["assets"].values():
            asset["href"] = asset["href"].replace("SECRET-TOKEN", SIG)
    probe = copy.deepcopy(items[0])
    probe["id"] = "LEAK_probe"
    probe["assets"]["image"]["href"] = f"https://blob.invalid/BROKEN/image.tif?sv=2024&sig={SIG}"
    items.append(probe)
    gone = copy.deepcopy(probe)
    gone["id"] = "LEAK_probe_gone"
    gone["assets"]["image"]["href"] = f"https://blob.invalid/GONE/image.tif?sv=2024&sig={SIG}"
    items.append(gone)
    port = free_port()
    with s3_server() as s3, stac_server(collections_for(items), items, port=port) as url:
        s3.make_bucket("sec")
        yield s3, url.replace("http://", f"http://reader:{PASSWORD}@"), port


def _options(s3, endpoint: str | None = None) -> dict:
    return {"key": ACCESS_KEY, "secret": SECRET_KEY, "client_kwargs": {"endpoint_url": endpoint or s3.endpoint_url}}


def _env(s3, port: int) -> dict[str, str]:
    return {**os.environ, **s3.env, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "OFA_TEST_STAC_PORT": str(port), "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}


def _ofa(args: list[str], env: dict, kill_at: str | None = None) -> subprocess.CompletedProcess:
    """``ofa ARGS``; with ``kill_at``, SIGKILLed at that point of ingest (``ingest_kill.py``)."""
    run = [str(Path(__file__).parent / "ingest_kill.py"), kill_at] if kill_at else ["-m", "ofa.pipeline.cli"]
    return subprocess.run([sys.executable, *run, *args], env=env, capture_output=True, text=True, timeout=180)


def test_no_secret_in_ingest_outputs(setup, tmp_path):
    import s3fs

    s3, catalog, port = setup
    env = _env(s3, port)
    opts = json.dumps(_options(s3))
    run = _ofa(["ingest", "--catalog", catalog, "--allow-local-hrefs", "--collection", "naip", "--out", "s3://sec/ds", "--chip-size", "80",
                "--workers", "2", "--storage-options", opts, "--sign-href", "test_security_secrets:sign_planted"], env)
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = {"ingest stdout": run.stdout, "ingest stderr": run.stderr}
    for cmd in (["manifest", "show", "s3://sec/ds", "--json"], ["manifest", "verify", "s3://sec/ds"]):
        done = _ofa([*cmd, "--storage-options", opts], env)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[" ".join(cmd[:2])] = done.stdout + done.stderr
    fs = s3fs.S3FileSystem(**_options(s3))
    objects = {p: fs.cat_file(p) for p in fs.find("sec/ds")}
    manifest = json.loads(objects["sec/ds/manifest.json"])
    # the probe item failed to open through the hook's signed URL, and its reason is recorded
    probe = [s for s in manifest["skipped"] if s["item_id"] == "LEAK_probe"]
    assert probe and "BROKEN" in probe[0]["reason"], manifest["skipped"]
    gone = [s for s in manifest["skipped"] if s["item_id"] == "LEAK_probe_gone"]
    assert gone and "No such file" in gone[0]["reason"], manifest["skipped"]
    assert "LEAK_probe" in run.stderr
    assert manifest["shards"] and any(p.endswith(".tar") for p in objects)
    leaks = {name: _leaks(text) for name, text in {**outputs, **objects}.items()}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}


def test_no_secret_in_a_failing_run(setup):
    s3, catalog, port = setup
    with FaultProxy(s3.port, FaultPlan(mode="reset", max_faults=10**6)) as proxy:
        run = _ofa(["ingest", "--catalog", catalog, "--allow-local-hrefs", "--collection", "naip", "--out", "s3://sec/dead", "--chip-size", "80",
                    "--workers", "1", "--no-progress", "--storage-options", json.dumps(_options(s3, proxy.url))],
                   _env(s3, port))
    assert run.returncode != 0 and "s3://sec/dead" in run.stderr
    assert not _leaks(run.stdout + run.stderr), run.stderr[-2000:]


def test_no_secret_in_training_outputs(setup, tmp_path, caplog):
    import logging

    from ofa.pipeline.trainer import TrainConfig, train

    s3, _, _ = setup
    caplog.set_level(logging.INFO)                  # everything at INFO, and the project's own loggers at DEBUG
    caplog.set_level(logging.DEBUG, logger="ofa")   # (botocore's own DEBUG log quotes the access key id of
    caplog.set_level(logging.DEBUG, logger="pipeline")  # each signed request: a third-party debug switch)
    out = tmp_path / "train"
    data = "s3://sec/ds"
    import s3fs

    if not s3fs.S3FileSystem(**_options(s3)).exists("sec/ds/manifest.json"):
        pytest.fail("needs the dataset of test_no_secret_in_ingest_outputs (run the module in order)")
    summary = train(TrainConfig(data=[data], out=str(out), steps=2, save_every=2, size="tiny", batch_size=2, img_size=32,
                                seed=0, cpu=True, tensorboard=False, storage_options=_options(s3)))
    assert summary["checkpoint"]
    files = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any(name.endswith("model.safetensors") for name in files)
    leaks = {name: _leaks(data) for name, data in files.items()}
    leaks["logs"] = _leaks(caplog.text + json.dumps(summary))
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}


def test_no_secret_in_what_a_killed_run_leaves(setup, tmp_path):
    """A run killed mid-way leaves its staging files (search record, per-item tars) in the dataset folder."""
    s3, catalog, port = setup
    out = tmp_path / "killed"
    run = _ofa(["ingest", "--catalog", catalog, "--allow-local-hrefs", "--collection", "naip", "--out", str(out), "--chip-size", "80",
                "--workers", "1", "--sign-href", "test_security_secrets:sign_planted"], _env(s3, port), kill_at="tasks")
    assert run.returncode < 0, run.stderr[-2000:]                     # SIGKILLed
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any("_search" in name for name in files), sorted(files)
    leaks = {name: _leaks(data) for name, data in {**files, "stderr": run.stderr.encode()}.items()}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}
