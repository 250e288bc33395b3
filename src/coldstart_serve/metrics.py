"""Prometheus text exposition (format 0.0.4) of request counts, latency histograms and index sizes.

Written here rather than with prometheus-client: a counter, a histogram and two gauges are a few lines, and
the service keeps one dependency fewer.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Callable

#: Latency buckets in seconds: fine below 20 ms, where the recommendation target lies.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe request counters and per-route latency histograms.

    Args:
        gauges: name -> (help text, callable returning the current value), read at every scrape.
    """

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]] | None = None) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self.gauges = gauges or {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and add its latency to the route's histogram."""
        key = (method, route)
        with self._lock:
            self._requests[(method, route, status)] += 1
            buckets = self._buckets.setdefault(key, [0] * len(BUCKETS))
            for b, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    buckets[b] += 1
            self._sums[key] += seconds
            self._counts[key] += 1

    def render(self) -> str:
        """The exposition text."""
        lines = ["# HELP coldstart_requests_total HTTP requests by method, route and status.",
                 "# TYPE coldstart_requests_total counter"]
        with self._lock:
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(f'coldstart_requests_total{{method="{_label(method)}",route="{_label(route)}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP coldstart_request_seconds Request latency in seconds by method and route.",
                      "# TYPE coldstart_request_seconds histogram"]
            for (method, route), buckets in sorted(self._buckets.items()):
                labels = f'method="{_label(method)}",route="{_label(route)}"'
                for edge, n in zip(BUCKETS, buckets):
                    lines.append(f'coldstart_request_seconds_bucket{{{labels},le="{edge}"}} {n}')
                lines.append(f'coldstart_request_seconds_bucket{{{labels},le="+Inf"}} {self._counts[(method, route)]}')
                lines.append(f"coldstart_request_seconds_sum{{{labels}}} {self._sums[(method, route)]:.6f}")
                lines.append(f"coldstart_request_seconds_count{{{labels}}} {self._counts[(method, route)]}")
        for name, (help_text, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {float(read()):g}"]
        return "\n".join(lines) + "\n"
