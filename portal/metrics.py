"""Prometheus metrics of one portal: calls, errors and latency per tool, upstream health."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Owns a private registry, so several portals in one process never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "dockyard_calls",
            "Requests through the choke point.",
            ["method", "target", "server", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dockyard_call_latency_seconds",
            "Latency of requests through the choke point, upstream time included.",
            ["method", "target", "server"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_up = Gauge(
            "dockyard_upstream_up", "1 while the upstream is connected.", ["server", "kind"], registry=self.registry
        )
        self.upstream_tools = Gauge(
            "dockyard_upstream_tools",
            "Tools the upstream contributes to the catalog.",
            ["server"],
            registry=self.registry,
        )

    def observe(self, *, method: str, target: str, server: str, status: str, seconds: float) -> None:
        """Count one request and its latency."""
        self.calls.labels(method, target, server, status).inc()
        self.latency.labels(method, target, server).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
