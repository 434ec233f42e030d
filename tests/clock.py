"""What the tests leave out when they compare two runs' records: figures of the machine's clock and load."""

from __future__ import annotations

from typing import Any

# substrings of the keys of such figures: seconds, rates, CPU and memory use, and what is derived from them
CLOCK = ("seconds", "per_s", "cpu_util", "rss", "elapsed", "share", "cost", "relative_to_fixed", "gpu_", "usage")


def without_clock(value: Any) -> Any:
    """``value`` (a record read from JSON: dicts, lists, numbers) without the keys of :data:`CLOCK`, at any depth."""
    if isinstance(value, dict):
        return {k: without_clock(v) for k, v in value.items() if not any(c in k for c in CLOCK)}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value
