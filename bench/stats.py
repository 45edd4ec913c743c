"""Statistics for noisy machines: medians and percentiles of many runs, never a single timing."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any


def median(values: Sequence[float]) -> float:
    """The median (0.0 for no values)."""
    return statistics.median(values) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank: an observed value, so p99 of 1000 runs is the 990th."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def summary(values_ms: Sequence[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds, rounded for the report, with the sample count."""
    return {"p50": round(percentile(values_ms, 50), 3), "p99": round(percentile(values_ms, 99), 3), "n": len(values_ms)}


def ms(nanoseconds: float) -> float:
    """Nanoseconds to milliseconds."""
    return nanoseconds / 1e6


def interleave(items: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Call every item once per round, in a shuffled order, so drift on a noisy machine hits all alike."""
    samples: dict[str, list[Any]] = {key: [] for key in items}
    order = list(items)
    shuffle = random.Random(6).shuffle  # noqa: S311 - seeded on purpose: the same orders every run
    for _ in range(rounds):
        shuffle(order)
        for key in order:
            samples[key].append(items[key]())
    return samples
