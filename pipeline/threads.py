"""CPU threads for the commands that compute with torch (``ofa demo``, ``train``, ``embed``, ``eval``).

One budget for the process: ``OMP_NUM_THREADS`` when it is set (an explicit choice always wins), else
``--threads``, else the CPUs this process may run on (its affinity mask, and the cgroup's CPU quota when
there is one). Torch's intra-op pool gets the budget (with neither set: torch's own choice, which already
follows the affinity mask, capped by the quota; so the same arithmetic and the same bits as before), the
inter-op pool one thread (these commands run no inter-op parallel work), and the demo's Dask ingest one
worker per CPU of the budget.

How OpenMP's threads wait depends on whether the CPUs are shared (unless the environment chooses a policy:
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``). Torch's intra-op threads meet at a barrier after every parallel
op. With other processes running on the cores, a thread spinning there (libgomp's default: up to 300,000
rounds) burns the time slice its peer needs to reach it, so when other work already holds the CPUs this
process may use, waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``): on the 2-core dev machine beside two
busy loops the demo took 122 s spinning and 46-72 s sleeping. On idle CPUs sleeping costs a futex wake-up
per op (the demo's 300 training steps: 41 s instead of 28 s), so there libgomp's default stays. The CPUs
are sampled once, for 0.1 s, at start: work that starts later meets a spinning run (set
``OMP_WAIT_POLICY=PASSIVE`` on machines known to be shared). libgomp reads the policy once, when torch
loads it, so ``use_cpu_threads`` must run before the first ``import torch``.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ofa.threads")

#: the environment variables through which a user picks OpenMP's waiting behaviour (then left alone)
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuThreads:
    """What ``use_cpu_threads`` chose."""

    budget: int    # CPUs the process may use
    source: str    # where the budget came from: OMP_NUM_THREADS, --threads or affinity
    intra_op: int  # torch.get_num_threads()
    inter_op: int  # torch.get_num_interop_threads()
    wait: str      # how OpenMP's threads wait, and why


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if value > 0 else None


def cgroup_quota(path: Path = CGROUP_CPU_MAX, v1: Path = CGROUP_V1_CPU) -> int | None:
    """CPUs the cgroup's quota allows, rounded up (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``); None without one."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = ((v1 / f"cpu.cfs_{name}_us").read_text().strip() for name in ("quota", "period"))
        except OSError:
            return None
    if not _positive_int(period) or not _positive_int(quota):  # "max" (v2) or -1 (v1): no quota
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup's CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_quota()
    return min(cpus, quota) if quota else cpus


def cpu_times(path: Path = PROC_STAT) -> dict[int, tuple[int, int]]:
    """Per CPU, ``(busy, total)`` clock ticks since boot from ``/proc/stat``; empty where it cannot be read."""
    times = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return times
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and len(fields) >= 5:
            ticks = [int(x) for x in fields[:8]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            times[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return times


def busy_cpus(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpus: set[int]) -> float:
    """CPUs' worth of work that ran on ``cpus`` between two ``cpu_times`` samples."""
    busy = 0.0
    for cpu in cpus & before.keys() & after.keys():
        ticks = after[cpu][1] - before[cpu][1]
        if ticks > 0:
            busy += (after[cpu][0] - before[cpu][0]) / ticks
    return busy


def others_hold_cpus(budget: int, sample_s: float = 0.1) -> bool:
    """Whether other work leaves fewer idle CPUs, of those this process may use, than ``budget`` threads need
    (half a CPU of slack). Sampled while this process sleeps, so its own work does not count."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no /proc/stat either
        return False
    before = cpu_times()
    if not before:
        return False
    time.sleep(sample_s)
    idle = len(cpus) - busy_cpus(before, cpu_times(), cpus)
    return idle < min(budget, len(cpus)) - 0.5


def _wait_policy(budget: int) -> str:
    """Set OpenMP's wait policy for the torch about to load; say which and why."""
    chosen = [f"{v}={os.environ[v]}" for v in WAIT_VARIABLES if v in os.environ]
    if chosen:
        return f"{', '.join(chosen)} (environment)"
    if budget > 1 and others_hold_cpus(budget):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "passive (other work holds the CPUs)"
    return "spin, then sleep (libgomp's default: the CPUs are idle)"


def cpu_budget(threads: int | None = None) -> tuple[int, str]:
    """``(CPUs, where that came from)``: OMP_NUM_THREADS, else ``threads`` (``--threads``), else the machine."""
    env = _positive_int(os.environ.get("OMP_NUM_THREADS"))
    if env:
        return env, "OMP_NUM_THREADS"
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads {threads}: must be >= 1")
        return threads, "--threads"
    return available_cpus(), "affinity"


def use_cpu_threads(threads: int | None = None) -> CpuThreads:
    """Set OpenMP's wait policy (before torch loads) and torch's thread pools from the budget; call it first
    thing in a command. In a process that loaded torch before (a notebook, a test), the host's settings
    stay, unless ``threads`` asks for a count."""
    budget, source = cpu_budget(threads)
    loaded = "torch" in sys.modules
    wait = _wait_policy(budget) if not loaded else "as the host process loaded torch"
    import torch

    if not loaded or source == "--threads":
        # with no explicit count, torch's own choice (which follows the affinity mask) capped by the quota
        intra = budget if source != "affinity" else max(1, min(budget, torch.get_num_threads()))
        if torch.get_num_threads() != intra:
            torch.set_num_threads(intra)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # the pool exists already (torch was used before in this process)
            pass
    chosen = CpuThreads(budget, source, torch.get_num_threads(), torch.get_num_interop_threads(), wait)
    log.debug("CPU threads: %s", chosen)
    return chosen
