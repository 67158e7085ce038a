"""How many CPU threads torch uses: the cores this process may actually run on.

torch's default intra-op thread count is the machine's core count. In a container, a SLURM job or
a process pinned to a few cores that is more threads than cores, and torch's threads then wait
for each other (a quick mapping training ran 5-10x slower with another job on the same two
cores). :func:`available_cpus` counts the cores this process may use: the CPU affinity mask, the
cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``) and SLURM's ``SLURM_CPUS_PER_TASK``,
whichever is smallest. ``geodl run`` and ``geodl stage`` set torch's threads to that number,
unless ``experiment.threads`` says otherwise or ``OMP_NUM_THREADS`` is set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit", "choose_threads", "restore_threads", "set_threads"]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _quota(quota: str, period: str) -> float | None:
    """CPUs allowed by a quota and a period in microseconds (``max`` or ``-1``: no limit)."""
    if quota in ("max", "-1") or not quota or not period:
        return None
    try:
        q, p = float(quota), float(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup", proc: str | Path = "/proc/self/cgroup"):
    """The cgroup's CPU quota in CPUs (a float, e.g. 2.0 or 1.5), or None when there is none.

    Reads cgroup v2 ``cpu.max`` ("QUOTA PERIOD") in this process's own cgroup and at the root,
    then cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; the smallest limit found wins.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "cpu.max").write_text("150000 100000")
    >>> cgroup_cpu_limit(root, root / "none")
    1.5
    """
    root = Path(root)
    dirs = [root]
    own = _read(Path(proc)) or ""
    for line in own.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] == "0" and parts[2].strip("/"):  # v2: "0::/path"
            dirs.insert(0, root / parts[2].strip("/"))
    limits = []
    for d in dirs:
        text = _read(d / "cpu.max")
        if text:
            fields = text.split()
            limits.append(_quota(fields[0], fields[1] if len(fields) > 1 else "100000"))
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        quota, period = _read(v1 / "cpu.cfs_quota_us"), _read(v1 / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            limits.append(_quota(quota, period))
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def available_cpus(
    environ: Mapping[str, str] | None = None,
    *,
    root: str | Path = "/sys/fs/cgroup",
    proc: str | Path = "/proc/self/cgroup",
) -> int:
    """Cores this process may run on: the smallest of its CPU affinity, its cgroup quota
    (rounded up) and ``SLURM_CPUS_PER_TASK``; at least 1."""
    environ = os.environ if environ is None else environ
    try:
        counts = [len(os.sched_getaffinity(0))]
    except (AttributeError, OSError):  # not Linux
        counts = [os.cpu_count() or 1]
    quota = cgroup_cpu_limit(root, proc)
    if quota is not None:
        counts.append(math.ceil(quota))
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        counts.append(int(slurm))
    return max(1, min(counts))


def choose_threads(
    configured: int | None, environ: Mapping[str, str] | None = None, **where
) -> tuple[int | None, str]:
    """``(threads, why)``: the configured count, else None (leave torch alone) when
    ``OMP_NUM_THREADS`` is set, else :func:`available_cpus`."""
    environ = os.environ if environ is None else environ
    if configured is not None:
        return configured, "experiment.threads"
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None, "OMP_NUM_THREADS"
    return available_cpus(environ, **where), "available cores"


def set_threads(configured: int | None = None) -> dict[str, int | str]:
    """Set torch's intra-op threads as :func:`choose_threads` says; returns what the run
    manifest records (``torch_threads``, ``threads_from``, ``cpus_available``) and the count
    before, for :func:`restore_threads`."""
    import torch

    before = torch.get_num_threads()
    n, why = choose_threads(configured)
    if n is not None and n != before:
        torch.set_num_threads(n)
    return {
        "torch_threads": torch.get_num_threads(),
        "threads_from": why,
        "cpus_available": available_cpus(),
        "threads_before": before,
    }


def restore_threads(record: dict[str, int | str]) -> None:
    """Undo :func:`set_threads` (a run inside a notebook leaves torch as it found it)."""
    import torch

    before = int(record["threads_before"])
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
