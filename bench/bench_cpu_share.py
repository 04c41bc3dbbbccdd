"""Benchmark: ``ofa demo`` on CPUs it shares with other work, against the build before the thread work.

``ofa demo`` runs from scratch in a temporary folder, built two ways: this checkout ("new") and a baseline
("old": ``--baseline REF``, the files of a git commit unpacked with ``git archive`` and imported in place
of this checkout's, same virtual environment; or ``--baseline spin``: this checkout with
``GOMP_SPINCOUNT=300000``, libgomp's own spinning when no wait policy is set, i.e. today's waiting with
the new thread counts). Each build runs quiet (nothing of ours beside it) and loaded (``--busy``
processes that only spin, ``while :; do :; done``), interleaved, ``--repeat`` rounds; a run past
``--timeout`` is stopped and counts as at least that long. OMP_NUM_THREADS, OMP_WAIT_POLICY and
GOMP_SPINCOUNT are removed from the runs' environment.

Per run it prints the wall and CPU seconds and the load average before it; then the ratios (medians):
new loaded / new quiet (goal <= 3x), new quiet / old quiet (goal <= 1.0x), old loaded / new loaded. Every
finished run must give the same shards and losses (sha256 of each shard, every logged loss), checked.

    python bench/bench_cpu_share.py                      # baseline 7a19066, 2 busy loops, one round
    python bench/bench_cpu_share.py --baseline spin --repeat 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "pipeline", "model", "infra")  # ofa.<name> -> <name>/ (pyproject's package-dir)
#: the last commit before the CPU thread work (issue 22, part 2)
DEFAULT_BASELINE = "7a19066"
LAUNCH = "import sys; from ofa.pipeline.cli import main; sys.exit(main())"
OMP_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def shim(work: Path, name: str, source: Path) -> Path:
    """A folder to put first on PYTHONPATH so that ``ofa.*`` imports from ``source``'s package folders."""
    root = work / f"shim-{name}" / "ofa"
    root.mkdir(parents=True)
    for package in PACKAGES:
        (root / package).symlink_to(source / package, target_is_directory=True)
    return root.parent


def unpack(ref: str, work: Path) -> Path:
    """The package folders of commit ``ref``, unpacked under ``work`` (the repository is not touched)."""
    dest = work / "baseline"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, *PACKAGES], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def fingerprint(out: Path) -> str:
    """sha256 over the demo's shards and every logged loss (what must not change)."""
    h = hashlib.sha256()
    for shard in sorted((out / "dataset" / "shards").rglob("*.tar")):
        h.update(shard.name.encode() + hashlib.sha256(shard.read_bytes()).digest())
    for line in (out / "train" / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        h.update(json.dumps([rec.get("step"), rec.get("loss")]).encode())
    return h.hexdigest()


def run_demo(build: dict, out: Path, timeout: float, steps: int | None) -> dict:
    """One ``ofa demo`` in ``out``: wall and CPU seconds (its process tree), or ``timed_out``."""
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARIABLES}
    env.update(build["env"])
    cmd = [sys.executable, "-c", LAUNCH, "demo", "--out", str(out), "--no-progress", *(["--steps", str(steps)] if steps else [])]
    load = os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "load_before": round(load, 2),
              "timed_out": wall >= timeout and proc.returncode != 0}
    if not result["timed_out"]:
        if proc.returncode != 0:
            raise RuntimeError(f"{build['name']} demo failed ({proc.returncode}): {stderr.decode()[-2000:]}")
        result["fingerprint"] = fingerprint(out)
    return result


def busy(n: int) -> list[subprocess.Popen]:
    """``n`` processes that only spin, as another user's CPU-bound jobs would."""
    return [subprocess.Popen(["bash", "-c", "while :; do :; done"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def builds(args: argparse.Namespace, work: Path) -> list[dict]:
    """The old and the new build: a name and the environment that selects its code."""
    new = {"name": "new", "env": {"PYTHONPATH": str(shim(work, "new", REPO))}}
    if args.baseline == "spin":
        old = {"name": "old", "env": {**new["env"], "GOMP_SPINCOUNT": "300000"}}
    else:
        old = {"name": "old", "env": {"PYTHONPATH": str(shim(work, "old", unpack(args.baseline, work)))}}
    return [old, new]


def summarise(rows: list[dict], args: argparse.Namespace) -> str:
    """The last line: ratios of the medians. A timed-out run counts as ``--timeout`` seconds, so a ratio over
    one is a bound (``>=`` when it is the numerator, ``<=`` when the denominator)."""
    def median(build: str, loaded: bool) -> tuple[float, bool]:
        picked = [r for r in rows if r["build"] == build and r["loaded"] == loaded]
        return statistics.median(r["wall_s"] for r in picked), any(r["timed_out"] for r in picked)

    def ratio(top: tuple[float, bool], bottom: tuple[float, bool], digits: int = 2) -> str:
        bound = {(True, False): ">=", (False, True): "<=", (True, True): "~"}.get((top[1], bottom[1]), "")
        return f"{bound}{top[0] / bottom[0]:.{digits}f}x"

    def secs(m: tuple[float, bool]) -> str:
        return f"{'>=' if m[1] else ''}{m[0]:.1f} s"

    oq, nq, ol, nl = median("old", False), median("new", False), median("old", True), median("new", True)
    return (f"{args.busy} busy loops: new loaded/quiet {ratio(nl, nq)} (goal <= 3x); quiet new/old {ratio(nq, oq)} "
            f"(goal <= 1.0x); loaded old/new {ratio(ol, nl, 1)}; medians quiet / loaded: old {secs(oq)} / {secs(ol)}, "
            f"new {secs(nq)} / {secs(nl)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git commit of the old build, or 'spin' (default: %(default)s)")
    parser.add_argument("--busy", type=int, default=2, help="spinning processes beside the loaded runs (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the four runs (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="demo training steps (default: the demo's own, 300)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a run is stopped (default: %(default)s)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ofa-bench-cpu-share-"))
    rows: list[dict] = []
    print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} in this process's affinity; baseline {args.baseline}",
          flush=True)
    try:
        old, new = builds(args, work)
        for rnd in range(args.repeat):
            for build, loaded in ((old, False), (new, False), (new, True), (old, True)):
                loops = busy(args.busy) if loaded else []
                try:
                    time.sleep(1.0 if loaded else 0.0)
                    result = run_demo(build, work / f"{build['name']}-{rnd}-{'loaded' if loaded else 'quiet'}", args.timeout,
                                      args.steps)
                finally:
                    stop(loops)
                rows.append({"build": build["name"], "loaded": loaded, **result})
                print(f"{build['name']} {'loaded' if loaded else 'quiet '}: {'>=' if result['timed_out'] else ''}"
                      f"{result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} CPU-s, load average {result['load_before']:.2f} "
                      f"before", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    prints = {r["fingerprint"] for r in rows if "fingerprint" in r}
    print(json.dumps({"baseline": args.baseline, "busy": args.busy, "rows": rows}, indent=1))
    print(f"same shards and losses in every finished run: {'yes' if len(prints) == 1 else 'NO'}")
    print(summarise(rows, args))
    return 0 if len(prints) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
