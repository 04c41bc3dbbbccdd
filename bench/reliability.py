"""Fault campaign: inject real faults into ingest, object-store writes, training and shards, and feed ingest a hostile
catalog; write RELIABILITY.md.

    python bench/reliability.py                      # the full campaign (about 10 minutes on 2 cores)
    python bench/reliability.py --ingest-kills 3 --train-kills 2 --s3-trials 2 --damage-trials 4 --out /tmp/R.md

Everything runs on 127.0.0.1: the demo catalog (infra/demo_catalog.py) behind a real STAC server,
a real S3 server (moto) behind a loopback fault proxy (tests/support/faultproxy.py). Every trial is seeded
and bounded in time. "Survived" means the run (after at most one plain rerun of the same command)
ends with exactly the data of an uninterrupted run, or fails with one clear line and is then
completed by a rerun; "data lost" counts samples (or training steps) missing or altered without any
error, warning or counter saying so. The hostile catalog (tests/support/hostile.py) counts, as data lost,
the requests and file opens its refused hrefs caused (seen by a loopback listener that is also GDAL's HTTP
proxy, and by inotify on the secret files).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

KILL = REPO / "tests" / "ingest_kill.py"   # runs ``ofa`` with ingest SIGKILLing itself at a named point
sys.path.insert(0, str(KILL.parent))
from ingest_kill import KILL_POINTS  # noqa: E402


@dataclass
class Row:
    fault: str
    trials: int = 0
    survived: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    return env


def _ofa(args: list[str], env: dict | None = None, timeout: float = 300, kill_at: str | None = None) -> subprocess.CompletedProcess:
    """``ofa ARGS``; with ``kill_at``, SIGKILLed at that point of ingest (``tests/ingest_kill.py``)."""
    run = [str(KILL), kill_at] if kill_at else ["-m", "ofa.pipeline.cli"]
    return subprocess.run([sys.executable, *run, *args], env=env or _env(), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


# ------------------------------------------------------------------ dataset snapshots
def _samples(shards: dict[str, bytes]) -> dict[str, bytes]:
    """sample key -> pixels+meta bytes over all shards."""
    out: dict[str, bytes] = {}
    for data in shards.values():
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar:
                f = tar.extractfile(m)
                key = m.name.split(".", 1)[0]
                out[key] = out.get(key, b"") + (f.read() if f else b"")
    return out


def _local_snapshot(root: Path) -> tuple[dict[str, bytes], dict]:
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = json.loads(files.pop("manifest.json")) if "manifest.json" in files else {}
    manifest.pop("created", None)
    if "stac/collection.json" in files:  # differs from a rebuild's in the manifest checksum and the folder name only
        collection = json.loads(files.pop("stac/collection.json"))
        collection["assets"]["manifest"].pop("file:checksum")
        manifest["_stac_collection"] = {k: v for k, v in collection.items() if k not in ("id", "title")}
    return files, manifest


def _lost(expected: dict[str, bytes], got: dict[str, bytes]) -> int:
    return sum(1 for k, v in expected.items() if got.get(k) != v)


# ------------------------------------------------------------------ ingest
class Catalog:
    def __init__(self, work: Path, stack: contextlib.ExitStack) -> None:
        from ofa.infra.demo_catalog import DEMO_COLLECTIONS, write_demo_catalog
        from ofa.infra.localstack import stac_server

        collections, items = write_demo_catalog(work / "catalog")
        self.collections = DEMO_COLLECTIONS
        self.url = stack.enter_context(stac_server(collections, items))

    def cmd(self, out: str, options: dict | None = None) -> list[str]:
        cmd = ["ingest", "--catalog", self.url, "--allow-local-hrefs", "--out", out, "--chip-size", "128", "--workers", "2",
               "--shard-max-samples", "4", "--no-progress"]
        for c in self.collections:
            cmd += ["--collection", c]
        if options:
            cmd += ["--storage-options", json.dumps(options)]
        return cmd


def ingest_sigkill(cat: Catalog, work: Path, n: int, rng: random.Random, reference: Path, ref_seconds: float) -> Row:
    row = Row("ingest SIGKILLed at a seeded point, then rerun")
    expected_files, expected_manifest = _local_snapshot(reference)
    expected = _samples({k: v for k, v in expected_files.items() if k.endswith(".tar")})
    for i in range(n):
        out = work / f"ingest-kill-{i}"
        if i % 2 == 0:
            point = KILL_POINTS[(i // 2) % len(KILL_POINTS)]
            killed = _ofa(cat.cmd(str(out)), kill_at=point)
            how = f"at {point}"
            ok_kill = killed.returncode == -signal.SIGKILL
        else:
            delay = rng.uniform(0.3, max(0.5, 0.8 * ref_seconds))
            for _ in range(4):                                   # a run that finished first is retried sooner
                shutil.rmtree(out, ignore_errors=True)
                proc = subprocess.Popen([sys.executable, "-m", "ofa.pipeline.cli", *cat.cmd(str(out))], env=_env(), cwd=REPO,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                ok_kill = proc.returncode == -signal.SIGKILL
                if ok_kill:
                    break
                delay /= 2
            how = f"after {delay:.2f} s"
        row.trials += 1
        again = _ofa(cat.cmd(str(out)))
        verify = _ofa(["manifest", "verify", str(out)])
        files, manifest = _local_snapshot(out)
        got = _samples({k: v for k, v in files.items() if k.endswith(".tar")})
        same = files == expected_files and manifest == expected_manifest
        if again.returncode == 0 and verify.returncode == 0 and same:
            row.survived += 1
        else:
            row.notes.append(f"trial {i} ({how}): rerun rc {again.returncode}, verify rc {verify.returncode}, identical {same}")
        row.lost += _lost(expected, got) if again.returncode == 0 else 0
        if not ok_kill:
            row.notes.append(f"trial {i} ({how}): the run ended before the kill")
    row.notes.insert(0, "kill points: " + ", ".join(KILL_POINTS) + "; odd trials: external SIGKILL at a seeded moment; "
                     "check: shards byte-identical (sha256) to an uninterrupted run, same manifest, `ofa manifest verify` OK")
    return row


def _s3_objects(s3, prefix: str) -> dict[str, bytes]:
    import s3fs

    fs = s3fs.S3FileSystem(**s3.storage_options, skip_instance_cache=True)
    return {p.split(prefix, 1)[1].lstrip("/"): fs.cat_file(p) for p in fs.find(prefix)} if fs.exists(prefix) else {}


def s3_faults(cat: Catalog, s3, n: int, rng: random.Random, reference: Path) -> list[Row]:
    from support.faultproxy import FaultPlan, FaultProxy

    expected_files, _ = _local_snapshot(reference)
    expected_shards = {k: v for k, v in expected_files.items() if k.endswith(".tar")}
    expected = _samples(expected_shards)

    def options(endpoint: str) -> dict:
        return {**s3.storage_options, "client_kwargs": {"endpoint_url": endpoint}}

    t0 = time.monotonic()
    flaky = Row("S3 connections reset or stalled by the proxy during ingest")
    for i in range(n):
        mode = ("reset", "stall")[i % 2]
        plan = FaultPlan(mode=mode, probability=0.2, seed=rng.randrange(10**6), max_faults=6,
                         after_bytes=rng.choice([0, 200, 5000]), stall_s=1.5)
        prefix = f"rel/flaky-{i}"
        with FaultProxy(s3.port, plan) as proxy:
            run = _ofa(cat.cmd(f"s3://{prefix}", options(proxy.url)))
            faults = proxy.faults
        objects = _s3_objects(s3, prefix)
        shards = {k: v for k, v in objects.items() if k.endswith(".tar")}
        flaky.trials += 1
        if run.returncode == 0 and shards == expected_shards:
            flaky.survived += 1
        else:
            flaky.notes.append(f"trial {i} ({mode}, {faults} faults): rc {run.returncode}: {run.stderr.strip()[-200:]}")
        flaky.lost += _lost(expected, _samples(shards)) if run.returncode == 0 else 0
        flaky.notes.append(f"trial {i}: {mode}, {faults} faults injected")
    flaky.notes = [n_ for n_ in flaky.notes if "rc" in n_] + [
        "faults per trial: " + ", ".join(n_.split(": ", 1)[1] for n_ in flaky.notes if "rc" not in n_),
        "check: run completes, shards byte-identical to the local reference run (writes retried with backoff by botocore/s3fs)"]

    flaky.seconds, t0 = time.monotonic() - t0, time.monotonic()
    dead = Row("S3 unreachable for a whole run (every connection reset), then back")
    for i in range(max(1, n // 2)):
        prefix = f"rel/dead-{i}"
        with FaultProxy(s3.port, FaultPlan(mode="reset", max_faults=10**6)) as proxy:
            run = _ofa(cat.cmd(f"s3://{prefix}", options(proxy.url)))
        last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
        clear = run.returncode != 0 and last.startswith("ofa ingest: error:") and "Traceback" not in run.stderr
        partial = "manifest.json" in _s3_objects(s3, prefix)
        again = _ofa(cat.cmd(f"s3://{prefix}", options(s3.endpoint_url)))
        shards = {k: v for k, v in _s3_objects(s3, prefix).items() if k.endswith(".tar")}
        dead.trials += 1
        if clear and not partial and again.returncode == 0 and shards == expected_shards:
            dead.survived += 1
        else:
            dead.notes.append(f"trial {i}: clear {clear}, manifest while failing {partial}, rerun rc {again.returncode}")
        dead.lost += _lost(expected, _samples(shards)) if again.returncode == 0 else 0
        if i == 0:
            dead.notes.append(f"the message: `{last[:220]}`")
    dead.notes.append("check: fails with one line naming --out, no manifest appears, the rerun completes identical")

    dead.seconds, t0 = time.monotonic() - t0, time.monotonic()
    restart = Row("S3 server stopped and restarted on the same port mid-ingest")
    from ofa.infra.localstack import s3_server

    for i in range(max(1, n // 2)):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(contextlib.ExitStack())
            srv = first.enter_context(s3_server())
            port = srv.port
            srv.make_bucket("rel")
            url = f"s3://rel/restart-{i}"
            proc = subprocess.Popen([sys.executable, "-m", "ofa.pipeline.cli", *cat.cmd(url, options(srv.endpoint_url))],
                                    env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            import s3fs

            watch = s3fs.S3FileSystem(**srv.storage_options, skip_instance_cache=True)
            want, seen, deadline = rng.randint(1, 6), 0, time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None and seen < want:   # mid-upload: objects landing
                time.sleep(0.05)
                with contextlib.suppress(Exception):
                    watch.invalidate_cache()
                    seen = len(watch.find(url[5:]))
            first.close()                                       # the server goes away (and, being moto, forgets all)
            time.sleep(1.0)
            srv2 = stack.enter_context(s3_server(port=port))
            srv2.make_bucket("rel")
            try:
                _, err = proc.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            verify = _ofa(["manifest", "verify", url, "--storage-options", json.dumps(options(srv2.endpoint_url))])
            first_ok = proc.returncode == 0 and verify.returncode == 0
            last = err.strip().splitlines()[-1] if err.strip() else ""
            clear = proc.returncode != 0 and last.startswith("ofa ingest: error:")
            silent_gap = proc.returncode == 0 and verify.returncode != 0
            again = _ofa(cat.cmd(url, options(srv2.endpoint_url)))
            shards = {k: v for k, v in _s3_objects(srv2, url[5:]).items() if k.endswith(".tar")}
            restart.trials += 1
            if (first_ok or clear) and again.returncode == 0 and shards == expected_shards:
                restart.survived += 1
            else:
                restart.notes.append(f"trial {i}: first run rc {proc.returncode} verify rc {verify.returncode}, "
                                     f"silent gap {silent_gap}, rerun rc {again.returncode}: {last[:160]}")
            restart.lost += _lost(expected, _samples(shards)) if again.returncode == 0 else 0
            restart.notes.append(f"trial {i}: server restarted after {seen} object(s) landed; first run "
                                 f"{'completed' if first_ok else 'failed: ' + last[:160]}")
    restart.notes.append("moto keeps nothing across a restart (a real store keeps its objects), so this is harsher than "
                         "an outage; check: the run completes or fails with one line, and a rerun completes identical")
    restart.seconds = time.monotonic() - t0
    return [flaky, dead, restart]


# ------------------------------------------------------------------ hostile catalog
def hostile_catalog(work: Path, s3) -> tuple[Row, list[str]]:
    """The hostile catalog of ``tests/support/hostile.py`` run as ``ofa ingest --plan`` and ``ofa ingest`` (no
    ``--allow-local-hrefs``), then a control run: the row (item outcomes; data lost = forbidden requests and file
    opens) and the report section (a table per run, the items and their reasons)."""
    from support.hostile import campaign

    row = Row("hostile catalog: crafted hrefs and size bombs (`--plan` and ingest, no `--allow-local-hrefs`)")
    c = campaign(work / "hostile", s3)
    plan, ingest = c.verdicts("plan"), c.verdicts("ingest")
    row.trials = len(plan) + len(ingest) + 1
    row.survived = sum(ok for _, _, ok in plan + ingest)
    row.lost = len(c.forbidden)
    control_sees = bool(c.control.opens) and len(c.control.requests) >= 2
    row.survived += control_sees
    row.notes = [f"{h.item['id']} ({h.what}): {'as it must' if ok else 'WRONG'}: {got}" for h, got, ok in ingest]
    row.notes += [f"--plan {h.item['id']}: {got}" for h, got, ok in plan if not ok]
    row.notes += [f"forbidden access: {a}" for a in c.forbidden]
    row.notes.append(f"control run (--allow-local-hrefs, two allowed http hrefs): the watchers saw {len(c.control.opens)} "
                     f"file opens in the secret folder and {len(c.control.requests)} requests "
                     f"({'; '.join(c.control.requests[:3])}): {'they see what they must' if control_sees else 'BLIND'}")
    good = sum(1 for h, _, ok in ingest if h.expect == "ingested" and ok)
    refused = [(h, ok) for h, _, ok in ingest if h.expect != "ingested"]
    table = [
        "| run | items tried | refused with the right reason | good items read | forbidden requests | forbidden file opens |",
        "|---|---:|---:|---:|---:|---:|",
        f"| `ofa ingest --plan` | {len(plan)} | {sum(ok for h, _, ok in plan if h.expect != 'ingested')} of "
        f"{len(refused)} | {sum(ok for h, _, ok in plan if h.expect == 'ingested')} planned | {len(c.plan.requests)} "
        f"| {len(c.plan.opens)} |",
        f"| `ofa ingest` | {len(ingest)} | {sum(ok for _, ok in refused)} of {len(refused)} | {good} of 2 | "
        f"{len(c.ingest.requests)} | {len(c.ingest.opens)} |",
        f"| control: `--allow-local-hrefs` + 2 allowed http items | {len(c.control.got)} | - | - | "
        f"{len(c.control.requests)} seen | {len(c.control.opens)} seen |",
    ]
    return row, table


# ------------------------------------------------------------------ training
def train_sigkill(work: Path, n: int, rng: random.Random, steps: int = 6) -> Row:
    sys.path.insert(0, str(REPO / "tests"))
    from pipeline_fixtures import write_dataset

    from ofa.pipeline.checkpoint import latest_checkpoint

    row = Row("training SIGKILLed while writing a checkpoint, then `--resume auto`")
    data = work / "train-data"
    if not data.exists():
        write_dataset(str(data), {"sentinel-2": (2, 6), "naip": (1, 6)}, size=40, seed=3)

    def cmd(out: Path) -> list[str]:
        return ["train", "--data", str(data), "--out", str(out), "--steps", str(steps), "--save-every", "1", "--size",
                "tiny", "--batch-size", "4", "--img-size", "32", "--seed", "0", "--cpu", "--resume", "auto",
                "--no-tensorboard"]

    def losses(out: Path) -> dict[int, float]:
        recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
        return {r["step"]: r.get("loss") for r in recs}

    ref = work / "train-ref"
    done = _ofa(cmd(ref))
    if done.returncode != 0:
        row.notes.append(f"reference run failed: {done.stderr[-300:]}")
        return row
    expected = losses(ref)
    during = 0
    for i in range(n):
        out = work / f"train-kill-{i}"
        step = rng.randrange(2, steps)
        tmp = out / "checkpoints" / f".tmp-step-{step:08d}"
        final = out / "checkpoints" / f"step-{step:08d}"
        proc = subprocess.Popen([sys.executable, "-m", "ofa.pipeline.cli", *cmd(out)], env=_env(), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline, where = time.monotonic() + 180, "not reached"
        while time.monotonic() < deadline and proc.poll() is None:
            if tmp.exists() or final.exists():
                where = "during" if not final.exists() else "after"
                break
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        during += where == "during"
        found = latest_checkpoint(str(out))
        picked_ok = found is not None and found[0] in (step - 1, step) and ".tmp-" not in found[1]
        again = _ofa(cmd(out))
        got = losses(out) if again.returncode == 0 else {}
        same = sorted(got) == sorted(expected) and all(
            abs(got[s] - expected[s]) <= 1e-4 * max(1.0, abs(expected[s])) for s in expected)
        row.trials += 1
        if picked_ok and again.returncode == 0 and same:
            row.survived += 1
        else:
            row.notes.append(f"trial {i} (step {step}, killed {where}): picked {found}, rerun rc {again.returncode}, "
                             f"same losses {same}")
        row.lost += sum(1 for s in expected if s not in got or got[s] is None) if again.returncode == 0 else 0
    row.notes.insert(0, f"{during} of {n} kills landed while the checkpoint folder was being written"
                     f"{' (the rest just after it was renamed)' if during < n else ''}; check: `--resume auto` picks the last complete checkpoint (step N-1 or N, never a "
                     f"partial one), the resumed run's loss at every one of {steps} steps equals the uninterrupted run's "
                     "(rel. 1e-4); data lost counts missing steps")
    return row


# ------------------------------------------------------------------ shard damage
def shard_damage(reference: Path, work: Path, n: int, rng: random.Random) -> Row:
    from ofa.ingest.dataset.manifest import verify_dataset
    from ofa.pipeline.data import Counter, decode, iter_shard, read_streams

    row = Row("bit flips / truncation in a shard")
    manifest = json.loads((reference / "manifest.json").read_text())
    silent_corrupt = 0
    for i in range(n):
        out = work / f"damage-{i}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(reference, out)
        shard = rng.choice(manifest["shards"])
        path = out / shard["path"]
        data = bytearray(path.read_bytes())
        if i % 2 == 0:
            flips = rng.randint(1, 8)
            for _ in range(flips):
                pos = rng.randrange(len(data) - 1024)       # not in the trailing zero blocks
                data[pos] ^= 1 << rng.randrange(8)
            what = f"{flips} bit flips"
        else:
            cut = rng.randrange(512, len(data) - 1024)
            data = data[:cut]
            what = f"truncated at {cut} of {len(path.read_bytes())} bytes"
        path.write_bytes(bytes(data))
        ok, problems = verify_dataset(str(out))
        named = not ok and len(problems) == 1 and shard["path"] in problems[0]
        streams = {s.sensor: s for s in read_streams([str(out)])}
        counter, got = Counter(), {}
        for s in manifest["shards"]:
            for sample in iter_shard(str(out / s["path"]), None, counter):
                try:
                    decode(sample, streams[s["sensor"]])
                except Exception as exc:  # noqa: BLE001 - what the loader does with a bad sample
                    counter.bad(f"sample {sample.get('__key__')}", exc)
                    continue
                got[sample["__key__"]] = sample["pixels.npy"] + sample["meta.json"]
        ref_samples = _samples({p["path"]: (reference / p["path"]).read_bytes() for p in manifest["shards"]})
        missing = [k for k in ref_samples if k not in got]
        altered = [k for k in got if k in ref_samples and got[k] != ref_samples[k]]
        row.trials += 1
        silent_missing = len(missing) if counter.skipped == 0 else 0
        row.lost += silent_missing + len(altered)
        silent_corrupt += len(altered)
        if named and not silent_missing:
            row.survived += 1
        else:
            row.notes.append(f"trial {i} ({what}): verify named it {named}, loader skipped {counter.skipped}, "
                             f"missing {len(missing)}, altered {len(altered)}")
    row.notes.insert(0, "check (survived): `ofa manifest verify` names exactly the damaged shard, and the loader keeps "
                     "going and counts what it skips; data lost = samples missing without a count plus samples the "
                     "loader yielded with altered bytes")
    if silent_corrupt:
        row.notes.append(f"{silent_corrupt} sample(s) with flipped bits inside their pixel data still decoded and would be "
                         "trained on: the loader has no per-sample checksum; `ofa manifest verify` (shard sha256) names "
                         "those shards, so run it before training on data that crossed an unreliable link")
    return row


# ------------------------------------------------------------------ report
HOSTILE_TEXT = (
    "The catalog (`tests/support/hostile.py`) is served from a real STAC API on 127.0.0.1 and ingested as a user would, "
    "without `--allow-local-hrefs`: asset hrefs naming `/vsicurl/` (to a loopback port), `/vsizip/`, `/vsis3/`, a local "
    "4-band GeoTIFF by path and by `file://`, the metadata address 169.254.169.254 (also as one decimal number), "
    "`fd00:ec2::254`, `metadata.google.internal`, a GDAL `GTIFF_DIR:` string, local SAR calibration annotations (S3 "
    "measurements), a Zarr store on local disk and one behind `/vsicurl/`; size bombs (a GeoTIFF and a Zarr array "
    "declaring 10^6 x 10^6 px, a GeoTIFF with one 20000 px tile, a Zarr chunk that decompresses to 16 MB, items of 5 MB "
    "and nested 100 deep); and two good items (`s3://` and plain `http://` on the local S3 server). Forbidden accesses "
    "are counted by a TCP listener on a loopback port, which the `/vsicurl/` hrefs name and which the ingest uses as "
    "GDAL's HTTP proxy (`GDAL_HTTP_PROXY`, `NO_PROXY=127.0.0.1`), so a request GDAL would send to any other host "
    "arrives there, and by inotify (`IN_OPEN`) on the folder of the secret files: any open by any process is an "
    "event. The control run proves both see what they must: with `--allow-local-hrefs` the local files are opened, "
    "and an allowed `http://` href to the listener and one to 203.0.113.7 (through the proxy) are requested.")


def write_report(rows: list[Row], path: Path, command: str, seconds: float, hostile: list[str] | None = None) -> None:
    lines = [
        "# Reliability under faults",
        "",
        f"Produced by `{command}` on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
        f"({os.cpu_count()} CPUs, {seconds / 60:.1f} min). Everything ran on 127.0.0.1 (real STAC and S3 servers from "
        "`infra/localstack.py`, the fault proxy `tests/support/faultproxy.py`); all trials are seeded.",
        "",
        "| fault | trials | survived | data lost |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.fault} | {r.trials} | {r.survived} | {r.lost} |")
    lines += ["", "*Survived*: the same command rerun once ends with exactly the data of an uninterrupted run "
              "(or the run fails with one clear line and the rerun completes). *Data lost*: samples (training: steps) "
              "missing or altered without any error, warning or counter saying so.", ""]
    for r in rows:
        lines.append(f"## {r.fault}  ({r.seconds:.0f} s)")
        lines.append("")
        if hostile and r.fault.startswith("hostile catalog"):
            lines += [HOSTILE_TEXT, "", *hostile, "", "*Data lost* in the table above counts, for this row, the "
                      "forbidden requests and file opens; a trial is one item in one run, plus the control run.", ""]
        lines += [f"- {n}" for n in r.notes] or ["- no notes"]
        lines.append("")
    lines += [
        "## Bad input and secrets (tests, not trials)",
        "",
        "- `tests/test_security_stac_fuzz.py`: hypothesis-fuzzed STAC items (mutated real items, arbitrary JSON) are "
        "planned or refused with one `ItemError` line; items without geometry; assets of unknown media type.",
        "- `tests/test_security_tar.py`: shard members named `../`, absolute, symlinks, hardlinks, a header claiming 8 GiB; "
        "a manifest of an unknown format version.",
        "- `tests/test_security_pickles.py`: pickle payloads in `model.safetensors`, `train_state.pt` and GEO-Bench "
        "`task_specs.pkl` are refused and never run.",
        "- `tests/test_security_secrets.py`: planted S3 keys, signed-URL tokens (in hrefs and from a signing hook) and a "
        "catalog password are grepped for in every ingest/verify/show output, every dataset object, and a training run's "
        "checkpoints and logs.",
        "- `tests/test_security_hrefs.py`: the hostile catalog above, as a test (`--plan`, ingest, control run), and the "
        "href policy and size limits rule by rule: every spelling of the metadata address, `/vsi` anywhere, GDAL "
        "connection strings, local paths from a remote catalog or outside a catalog's folder on disk (symlinks "
        "included), host patterns, the signing hook never seeing a refused href, zstd/gzip/zlib/blosc chunks "
        "decompressing past their declared size, a STAC response over `--max-stac-bytes`.",
        "- `tests/test_security_cog.py`: COGs whose dtype/nodata disagree with the item (float32 with NaN, int16 with "
        "-9999 among uint16 bands) do not break ingest or the loader; a file nodata that disagrees with the item's "
        "`raster:bands` nodata gets one warning line (the item's value is used).",
        "- `tests/test_reliability_s3.py`, `tests/test_reliability_train.py`, `tests/test_reliability_damage.py`, "
        "`tests/test_ingest_resume.py`: fast seeded subsets of the trials above, run in CI.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ingest-kills", type=int, default=10, help="SIGKILL trials of ingest (default: %(default)s)")
    parser.add_argument("--s3-trials", type=int, default=4, help="flaky-proxy ingest trials; half as many outage and "
                        "restart trials (default: %(default)s)")
    parser.add_argument("--train-kills", type=int, default=10, help="SIGKILL trials during checkpoint writes (default: %(default)s)")
    parser.add_argument("--damage-trials", type=int, default=10, help="shard damage trials (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "RELIABILITY.md"), help="report path (default: RELIABILITY.md)")
    parser.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from ofa.infra.localstack import s3_server

    started = time.monotonic()
    work = Path(args.work or tempfile.mkdtemp(prefix="ofa-reliability-"))
    rows: list[Row] = []
    steps = tqdm(total=5, desc="fault campaign", unit="part")
    hostile: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            cat = Catalog(work, stack)
            reference = work / "reference"
            t = time.monotonic()
            ref = _ofa(cat.cmd(str(reference)))
            if ref.returncode != 0:
                print(ref.stderr, file=sys.stderr)
                return 1
            ref_seconds = time.monotonic() - t
            t = time.monotonic()
            rows.append(ingest_sigkill(cat, work, args.ingest_kills, random.Random(args.seed), reference, ref_seconds))
            rows[-1].seconds = time.monotonic() - t
            steps.update()
            s3 = stack.enter_context(s3_server())
            s3.make_bucket("rel")
            rows += s3_faults(cat, s3, args.s3_trials, random.Random(args.seed + 1), reference)
            steps.update()
            t = time.monotonic()
            row, hostile = hostile_catalog(work, s3)
            rows.append(row)
            rows[-1].seconds = time.monotonic() - t
            steps.update()
            t = time.monotonic()
            rows.append(train_sigkill(work, args.train_kills, random.Random(args.seed + 2)))
            rows[-1].seconds = time.monotonic() - t
            steps.update()
            t = time.monotonic()
            rows.append(shard_damage(reference, work, args.damage_trials, random.Random(args.seed + 3)))
            rows[-1].seconds = time.monotonic() - t
            steps.update()
    finally:
        steps.close()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    command = "python bench/reliability.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_report(rows, Path(args.out), command.strip(), time.monotonic() - started, hostile)
    for r in rows:
        print(f"{r.fault:75s} {r.trials:3d} trials {r.survived:3d} survived {r.lost:3d} lost")
    print(f"wrote {args.out}")
    return 0 if all(r.survived == r.trials and r.lost == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
