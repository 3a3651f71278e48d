"""Peak-memory measurement: CUDA's allocator stats on a GPU, the kernel's peak RSS (Linux) on CPU."""

import torch


def reset_peak(device: "torch.device | str" = "cpu") -> int:
    """Reset the peak counter; returns the current usage in bytes (the baseline)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def peak(device: "torch.device | str" = "cpu") -> int:
    """Peak usage in bytes since the last :func:`reset_peak`."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
