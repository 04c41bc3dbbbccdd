"""CPU threads for the commands that compute with torch (``ofa demo``, ``train``, ``embed``, ``eval``).

One budget for the process: ``OMP_NUM_THREADS`` when it is set (an explicit choice always wins), else
``--threads``, else the CPUs this process may run on (its affinity mask, and the cgroup's CPU quota when
there is one). Torch's intra-op pool gets the budget (with neither set: torch's own choice, which already
follows the affinity mask, capped by the quota; so the same arithmetic and the same bits as before), the
inter-op pool one thread (these commands run no inter-op parallel work), and the demo's Dask ingest one
worker per CPU of the budget.

OpenMP's waiting threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, unless the environment
chooses a policy): torch's intra-op threads meet at a barrier after every parallel op, and with other
processes on the cores a thread spinning there (libgomp's default: up to 300,000 rounds) burns the time
slice its peer needs to reach it. On the 2-core dev machine at load average 12, 60 demo training steps
took 300-470 s spinning and 31-35 s waiting passively (bench/bench_cpu_share.py runs the whole demo).
libgomp reads the policy once, when torch loads it, so ``use_cpu_threads`` must run before the first
``import torch``.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ofa.threads")

#: the environment variables through which a user picks OpenMP's waiting behaviour (then left alone)
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


@dataclass(frozen=True)
class CpuThreads:
    """What ``use_cpu_threads`` chose."""

    budget: int    # CPUs the process may use
    source: str    # where the budget came from: OMP_NUM_THREADS, --threads or affinity
    intra_op: int  # torch.get_num_threads()
    inter_op: int  # torch.get_num_interop_threads()


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
    if not loaded and not any(v in os.environ for v in WAIT_VARIABLES):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
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
    chosen = CpuThreads(budget, source, torch.get_num_threads(), torch.get_num_interop_threads())
    log.debug("CPU threads: %s", chosen)
    return chosen
