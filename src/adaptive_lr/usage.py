"""What a run costs the machine: wall and CPU time, peak memory, GPU memory and utilisation."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB since the last reset (VmHWM on Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class UsageMeter:
    """Measure one run: ``start()``, call ``sample()`` now and then during training, ``stop()``.

    CPU utilisation is process CPU time over wall time (2.0 = two cores busy). Peak RSS is
    the run's own where the OS lets the high-water mark be reset (Linux), else the
    process's. On CUDA: peak allocated GPU memory, and GPU utilisation averaged over the
    samples (needs NVML, the ``nvidia-ml-py`` package; None without it).
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self._sample_gpu = self.cuda
        self._gpu_util: list[float] = []

    def start(self) -> UsageMeter:
        self.rss_is_per_run = _reset_peak_rss()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        return self

    def sample(self) -> None:
        if self._sample_gpu:
            try:
                self._gpu_util.append(float(torch.cuda.utilization(self.device)))
            except Exception:  # no NVML: utilisation stays unknown
                self._sample_gpu = False

    def stop(self) -> dict[str, float | bool | None]:
        wall = time.perf_counter() - self._wall0
        cpu = time.process_time() - self._cpu0
        return {
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "cpu_util": cpu / wall if wall > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
            "rss_is_per_run": self.rss_is_per_run,
            "gpu_peak_mb": torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else None,
            "gpu_util": sum(self._gpu_util) / len(self._gpu_util) if self._gpu_util else None,
        }


def combine_usage(before: dict, after: dict) -> dict:
    """The machine cost of a run done in two parts (before and after a resume)."""
    if not before:
        return after
    out = dict(after)
    out["wall_seconds"] = before["wall_seconds"] + after["wall_seconds"]
    out["cpu_seconds"] = before["cpu_seconds"] + after["cpu_seconds"]
    out["cpu_util"] = out["cpu_seconds"] / out["wall_seconds"] if out["wall_seconds"] > 0 else None
    for k in ("peak_rss_mb", "gpu_peak_mb"):
        values = [v for v in (before.get(k), after.get(k)) if v is not None]
        out[k] = max(values) if values else None
    out["gpu_util"] = after["gpu_util"] if after.get("gpu_util") is not None else before.get("gpu_util")
    return out
