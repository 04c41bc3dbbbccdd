"""``pipeline.threads``: one CPU budget (OMP_NUM_THREADS > --threads > affinity and cgroup quota) for torch's
pools, and OpenMP's passive waiting, when other work holds the CPUs, set before torch loads libgomp (checked in
libgomp's own report of its settings, ``OMP_DISPLAY_ENV=VERBOSE``)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from ofa.pipeline.threads import busy_cpus, cgroup_quota, cpu_budget, cpu_times

REPO_ENV = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}


def fresh(code: str, prefix: list[str] | None = None, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter (torch not loaded yet), with ``env`` added to a clean OpenMP environment."""
    proc = subprocess.run([*(prefix or []), sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**REPO_ENV, "OMP_DISPLAY_ENV": "VERBOSE", **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


CHOSEN = ("import json, dataclasses, sys\nfrom ofa.pipeline.threads import use_cpu_threads\n"
          "t = use_cpu_threads({threads})\nprint(json.dumps(dataclasses.asdict(t)))")


def chosen(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_budget_order(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_budget()[1] == "affinity" and cpu_budget()[0] == len(os.sched_getaffinity(0))
    assert cpu_budget(3) == (3, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_budget(3) == (1, "OMP_NUM_THREADS")         # an explicit OMP_NUM_THREADS always wins
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")
    assert cpu_budget(3) == (3, "--threads")               # one it cannot read does not count
    with pytest.raises(ValueError, match="--threads 0"):
        cpu_budget(0)


@pytest.mark.parametrize("text,cpus", [("max 100000", None), ("150000 100000", 2), ("50000 100000", 1),
                                       ("400000 100000\n", 4), ("garbage", None)])
def test_cgroup_quota(tmp_path, text, cpus):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert cgroup_quota(path, tmp_path / "no-v1") == cpus
    assert cgroup_quota(tmp_path / "missing", tmp_path / "no-v1") is None


@pytest.mark.parametrize("quota,cpus", [("-1", None), ("250000", 3), ("100000", 1)])
def test_cgroup_v1_quota(tmp_path, quota, cpus):
    (tmp_path / "cpu.cfs_quota_us").write_text(quota + "\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path / "no-cpu.max", tmp_path) == cpus


def test_busy_cpus_from_two_samples_of_proc_stat(tmp_path):
    def sample(name: str, *cpus: tuple[int, int]) -> dict:
        lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]  # the machine's total line is not a CPU
        lines += [f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0" for i, (busy, idle) in enumerate(cpus)]
        (tmp_path / name).write_text("\n".join(lines + ["intr 1 2 3"]) + "\n")
        return cpu_times(tmp_path / name)

    before = sample("a", (100, 100), (100, 100), (0, 0))
    after = sample("b", (110, 100), (105, 105), (10, 0))    # cpu0 all busy, cpu1 half, cpu2 all busy
    assert before[0] == (100, 200) and set(before) == {0, 1, 2}
    assert busy_cpus(before, after, {0, 1}) == pytest.approx(1.5)
    assert busy_cpus(before, after, {0, 1, 2, 7}) == pytest.approx(2.5)   # a CPU not sampled counts nothing
    assert cpu_times(tmp_path / "missing") == {}


def test_libgomp_waits_passively_when_other_work_holds_the_cpus():
    before = fresh("import torch\nprint(torch.get_num_threads())")
    assert "GOMP_SPINCOUNT = '300000'" in before.stderr   # torch's default: spin before sleeping
    loops = [subprocess.Popen(["bash", "-c", "while :; do :; done"]) for _ in os.sched_getaffinity(0)]
    try:
        time.sleep(0.5)
        after = fresh(CHOSEN.format(threads=None))
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert "GOMP_SPINCOUNT = '0'" in after.stderr          # what the helper set reached libgomp
    got = chosen(after)
    assert got["wait"].startswith("passive") and got["source"] == "affinity"
    assert got["intra_op"] == int(before.stdout.split()[-1])  # torch's own count
    assert got["inter_op"] == 1


def test_a_wait_policy_in_the_environment_is_kept():
    proc = fresh(CHOSEN.format(threads=None), OMP_WAIT_POLICY="ACTIVE")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in proc.stderr
    assert chosen(proc)["wait"] == "OMP_WAIT_POLICY=ACTIVE (environment)"


@pytest.mark.skipif(not shutil.which("taskset"), reason="needs taskset (util-linux)")
def test_affinity_threads_option_and_omp_num_threads():
    one_cpu = sorted(os.sched_getaffinity(0))[:1]
    pinned = fresh(CHOSEN.format(threads=None), prefix=["taskset", "-c", str(one_cpu[0])])
    assert chosen(pinned)["budget"] == 1 and chosen(pinned)["intra_op"] == 1
    assert chosen(fresh(CHOSEN.format(threads=3)))["intra_op"] == 3
    explicit = chosen(fresh(CHOSEN.format(threads=3), OMP_NUM_THREADS="1"))
    assert explicit["source"] == "OMP_NUM_THREADS" and explicit["intra_op"] == 1


def test_a_host_that_loaded_torch_keeps_its_pools_unless_threads_are_asked_for():
    code = ("import json, torch\ntorch.set_num_threads(1)\nfrom ofa.pipeline.threads import use_cpu_threads\n"
            "a = use_cpu_threads().intra_op\nb = use_cpu_threads(2).intra_op\nprint(json.dumps([a, b]))")
    assert json.loads(fresh(code).stdout.strip().splitlines()[-1]) == [1, 2]
