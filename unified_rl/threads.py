"""CPU threads that fit the machine as it is shared: how many cores this process may really use.

``os.cpu_count()`` counts the machine's cores, not the ones a container or a CPU affinity mask
grants; a process that starts more compute threads than it has cores makes them wait on each
other at every OpenMP barrier. The command-line app caps torch's threads at the cores it may use
(:func:`fit_threads`, once per run); with ``--adapt-threads`` the Trainer re-fits them before each
step to the cores other processes leave free (:func:`adapt_threads`): OpenMP threads that wait at a
barrier for a core that is busy elsewhere make a step cost several times its fair share of a shared
machine, while one thread per free core keeps it near its share (benchmarks/under_load.py,
docs/reliability.md) -- at the price of bitwise reproducibility. ``OMP_NUM_THREADS`` fixes the count.
"""

import functools
import math
import os


@functools.cache
def available_cpus() -> int:
    """Cores this process may use: its CPU affinity mask, capped by a cgroup v2/v1 CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for path in ("/sys/fs/cgroup/cpu.max",):
        try:
            quota, period = open(path).read().split()[:2]
            if quota != "max":
                n = min(n, max(1, math.floor(int(quota) / int(period))))
        except (OSError, ValueError):
            pass
    try:
        quota, period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read()), int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        if quota > 0:
            n = min(n, max(1, quota // period))
    except (OSError, ValueError):
        pass
    return max(1, n)


def fit_threads() -> int:
    """At most :func:`available_cpus` torch threads (unless ``OMP_NUM_THREADS`` chose); returns the count."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > available_cpus():
        torch.set_num_threads(available_cpus())
    return torch.get_num_threads()


def _running_here() -> int:
    """Threads of this process that are runnable right now (our own OpenMP workers may still spin)."""
    running = 0
    for task in os.listdir("/proc/self/task"):
        try:
            state = open(f"/proc/self/task/{task}/stat").read().rsplit(") ", 1)[1][:1]
        except (OSError, IndexError):
            continue
        running += state == "R"
    return max(running, 1)


def _others_once() -> int:
    with open("/proc/stat") as f:
        total = next(int(line.split()[1]) for line in f if line.startswith("procs_running"))
    return max(0, total - _running_here())


def others_running(samples: int = 3, gap: float = 5e-4) -> int:
    """Runnable tasks of other processes on this machine (Linux ``procs_running``; 0 if unknown): the
    least of a few readings ``gap`` seconds apart, so a passing process or one of our own OpenMP
    threads going to sleep between two reads is not taken for load."""
    import time

    try:
        least = _others_once()
        for _ in range(samples - 1):
            if not least:
                break
            time.sleep(gap)
            least = min(least, _others_once())
        return least
    except (OSError, StopIteration, ValueError):
        return 0


def per_step() -> bool:
    """Whether the command-line app refits the threads before every step (``--adapt-threads``, or
    ``UNIFIED_RL_ADAPT_THREADS=1``): off by default, since the count then follows the load and a
    different count rounds differently."""
    return os.environ.get("UNIFIED_RL_ADAPT_THREADS") == "1"


_previous = [0]  # other running tasks seen before the previous step


def adapt_threads() -> int:
    """Torch threads for the next step: every core this process may use on an idle machine; beside
    other runnable tasks seen before this step and the one before, the cores they leave free (at
    least one). Returns the count."""
    import torch

    if "OMP_NUM_THREADS" in os.environ or os.environ.get("UNIFIED_RL_ADAPT_THREADS") == "0":
        return torch.get_num_threads()
    now = others_running()
    others, _previous[0] = min(now, _previous[0]), now  # load must last two steps: brief system tasks are not load
    n = max(1, available_cpus() - others)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n
