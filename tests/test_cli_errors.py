"""Every command that touches an ``s3://`` URL without credentials ends in one line naming the URL and a fix,
with the storage exit code; ``--debug`` adds the traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ofa.pipeline.errors import EXIT_STORAGE

from geobench_fixtures import write_toy_geobench
from pipeline_fixtures import write_dataset


@pytest.fixture(scope="module")
def endpoint():
    from ofa.infra.localstack import s3_server

    with s3_server() as s3:
        s3.make_bucket("data")
        yield s3.endpoint_url


def no_credentials_env(endpoint: str) -> dict[str, str]:
    """The environment of a machine with no AWS credentials anywhere (the endpoint is the local S3 server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               AWS_CONFIG_FILE="/nonexistent", OMP_NUM_THREADS="1")
    return env


@pytest.fixture()
def no_credentials(endpoint, monkeypatch):
    import s3fs

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in no_credentials_env(endpoint).items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("local")
    write_dataset(str(root / "ds"), {"naip": (1, 4)}, size=32)
    return {"ds": str(root / "ds"), "geobench": str(write_toy_geobench(root / "geobench")), "out": str(root / "out")}


COMMANDS = {
    "manifest show": ["manifest", "show", "s3://data/ds"],
    "manifest verify": ["manifest", "verify", "s3://data/ds"],
    "train --data": ["train", "--data", "s3://data/ds", "--out", "{out}/a", "--cpu", "--size", "tiny"],
    "train --out": ["train", "--data", "{ds}", "--out", "s3://data/run", "--cpu", "--size", "tiny"],
    "eval": ["eval", "geobench", "--root", "{geobench}", "--checkpoint", "s3://data/ckpt", "--out", "{out}/e"],
    "model info": ["model", "info", "--checkpoint", "s3://data/ckpt"],
    "model export": ["model", "export", "--checkpoint", "s3://data/ckpt", "--format", "hf", "--out", "{out}/hf"],
    "ingest --from-manifest": ["ingest", "--from-manifest", "s3://data/ds/manifest.json", "--out", "{out}/i"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_credentials_is_one_line(name, no_credentials, local, capsys):
    from ofa.pipeline.cli import main

    argv = [a.format(**local) for a in COMMANDS[name]]
    url = next(a for a in argv if a.startswith("s3://"))
    assert main(argv) == EXIT_STORAGE
    err = capsys.readouterr().err.strip().splitlines()
    line = err[-1]
    assert line.startswith(f"ofa {' '.join(argv[:2]) if argv[0] in ('manifest', 'model', 'eval') else argv[0]}: error: ")
    assert url in line and "no credentials found" in line and "AWS_ACCESS_KEY_ID" in line, line
    assert not any("Traceback" in x for x in err)


def test_no_traceback_unless_debug(endpoint):
    env = no_credentials_env(endpoint)
    cmd = [sys.executable, "-m", "ofa.pipeline.cli", "manifest", "show", "s3://data/ds"]
    plain = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == EXIT_STORAGE and plain.stdout == ""
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()]  # one line
    assert plain.stderr.startswith("ofa manifest show: error: s3://data/ds: no credentials found (NoCredentialsError)")
    debug = subprocess.run([*cmd, "--debug"], env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode == EXIT_STORAGE and "Traceback" in debug.stderr and "NoCredentialsError" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()
