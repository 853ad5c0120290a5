"""What every benchmark shares: the result format of ../shared/BENCHMARKS.md and timing helpers."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def machine() -> dict[str, Any]:
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "gpu": gpu}


def report(benchmark: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"benchmark": benchmark, "machine": machine(), "results": results}


def significant(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant digits: a fixed number of decimals would leave a 0.09 ms
    figure two digits, and its ratio could then not be checked against the printed figures."""
    return float(f"{value:.{digits}g}")


def result(
    name: str,
    value: float,
    unit: str,
    better: str,
    peer_name: str,
    peer_value: float,
    params: dict[str, Any],
    target: float | None = None,
) -> dict[str, Any]:
    """One entry; ``ratio`` is ours / peer, as the convention says, whichever way is better. The ratio and the
    target's verdict are worked out from the figures as printed, so that a reader who divides them gets the
    same ratio (from the unrounded ones it could differ in the last digit)."""
    ours, theirs = significant(value), significant(peer_value)
    out: dict[str, Any] = {
        "name": name,
        "value": ours,
        "unit": unit,
        "better": better,
        "peer": {"name": peer_name, "value": theirs},
        "ratio": round(ours / theirs, 4) if theirs else None,
        "params": params,
    }
    if target is not None:
        out["target"] = target
        out["meets_target"] = ours <= target if better == "lower" else ours >= target
    return out


def latencies_ms(call: Callable[[Any], Any], inputs: list[Any]) -> np.ndarray:
    """Wall time of ``call(x)`` for each input, in milliseconds."""
    out = np.empty(len(inputs))
    for i, x in enumerate(inputs):
        start = time.perf_counter()
        call(x)
        out[i] = (time.perf_counter() - start) * 1000
    return out


def p99(values: np.ndarray) -> float:
    return float(np.percentile(values, 99))
