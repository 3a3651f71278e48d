"""Describe the machine a benchmark ran on."""

import os
import platform

import torch

from unified_rl.apps.machine_record import cpu_model


def machine() -> str:
    cpu = cpu_model()
    dev = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads){dev}, Python {platform.python_version()}"


def peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_kib(field: str = "VmHWM") -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
